"""Versioned schema migrations: each step runs once, in order, recorded in schema_migrations."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, inspect, select

from kumo.store import schema

Step = Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    tables = [schema.tenants, schema.subscriptions, schema.principals, schema.role_assignments,
              schema.provider_registrations, schema.resources, schema.operations, schema.events]
    schema.metadata.create_all(conn, tables=tables)


def _allocations(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.allocations])


STEPS: list[tuple[int, Step]] = [
    (1, _initial),
    (2, _allocations),
]


def migrate(conn: Connection) -> int:
    """Bring the schema up to date; returns the version now in force."""
    schema.metadata.create_all(conn, tables=[schema.schema_migrations])
    done = {row[0] for row in conn.execute(select(schema.schema_migrations.c.version))}
    for version, step in STEPS:
        if version in done:
            continue
        step(conn)
        conn.execute(schema.schema_migrations.insert().values(version=version, applied_at=time.time()))
    inspect(conn)  # refresh reflection caches for callers
    return STEPS[-1][0]
