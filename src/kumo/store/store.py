"""The store's one API. `Store.read()` and `Store.write()` open a transaction (`Tx`) on either
backend; every repository function lives on `Tx`, so a caller can group writes atomically
(desired state and the operation that realises it commit together)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import and_, delete, event, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kumo.aio import uninterrupted
from kumo.store import schema as s
from kumo.store.migrations import migrate
from kumo.store.records import Event, Operation, Principal, Resource, RoleAssignment, Subscription, Tenant


T = TypeVar("T")

# The advisory lock key PostgreSQL write transactions hold (any constant; only kumo uses its database).
WRITER_LOCK = 0x6B756D6F  # "kumo"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def database_url(url: str | None, sqlite_path: Path) -> str:
    """Turn the user's URL (`postgresql://…`) into the async driver's, or name the SQLite file."""
    if not url:
        return f"sqlite+aiosqlite:///{sqlite_path}"
    u = make_url(url)
    if u.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


def describe(url: str | None, sqlite_path: Path) -> str:
    """Which store a URL selects, for people (`kumo status`): never its password."""
    if not url:
        return f"sqlite {sqlite_path}"
    u = make_url(url)
    return f"postgresql {u.username + '@' if u.username else ''}{u.host or 'localhost'}:{u.port or 5432}/{u.database}"


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """A string both backends can bind: PostgreSQL's text holds no NUL and neither driver encodes a lone
    surrogate, so either (from a hostile path or header) becomes U+FFFD. No stored value holds one, so a
    lookup by such a name finds nothing, as it should, instead of failing the request."""
    if type(value) is not str or value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub("\ufffd", value)


def _storable_parameters(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                         executemany: bool) -> tuple[str, Any]:
    if executemany:
        return statement, [_storable_row(p) for p in parameters]
    return statement, _storable_row(parameters)


def _storable_row(parameters: Any) -> Any:
    if isinstance(parameters, dict):
        return {k: _storable(v) for k, v in parameters.items()}
    if isinstance(parameters, (list, tuple)):
        return type(parameters)(_storable(v) for v in parameters)
    return parameters


# A resource as kept in memory: its fields with an empty body, and the body as the JSON text the
# database holds. Serialised once per write; each reader gets its own parsed copy.
Snapshot = tuple[Resource, str]


def freeze(r: Resource, body_json: str) -> Snapshot:
    return replace(r, body={}), body_json


def thaw(snapshot: Snapshot) -> Resource:
    template, body_json = snapshot
    return replace(template, body=json.loads(body_json))


class ResourceCache:
    """Committed resource rows by key, so point reads (every ARM GET) need no database round trip.
    Only this process writes resource rows (one server per data dir), and it updates the cache
    after each commit, so the cache never holds a state the database does not."""

    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._rows: dict[str, Snapshot] = {}
        self.epoch = 0  # bumped by every commit that changed resources

    def get(self, key: str) -> Resource | None:
        hit = self._rows.get(key)
        return thaw(hit) if hit is not None else None

    def _put(self, snapshot: Snapshot) -> None:
        if len(self._rows) >= self.max_items:
            self._rows.pop(next(iter(self._rows)))  # evict the oldest entry
        self._rows[snapshot[0].key] = snapshot

    def fill(self, snapshot: Snapshot, epoch: int) -> None:
        """Cache a row read from the database, unless a commit since the read may have changed it."""
        if epoch == self.epoch:
            self._put(snapshot)

    def apply(self, changes: dict[str, Snapshot | None]) -> None:
        if changes:
            self.epoch += 1
        for key, snapshot in changes.items():
            if snapshot is None:
                self._rows.pop(key, None)
            else:
                self._put(snapshot)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.cache = ResourceCache()
        # One writer at a time, on both backends: providers read, decide and write in one transaction, and
        # the cache applies commits in order, both of which assume the writers do not overlap. SQLite allows
        # one writer anyway; PostgreSQL's READ COMMITTED would let two creates of one name both insert (a
        # duplicate key) or a later commit's cache update land before an earlier one's. Serialise this
        # process's write transactions here (rather than hold pool connections waiting on the database);
        # other processes wait on busy_timeout (SQLite) or the writers' advisory lock (PostgreSQL).
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str | None, sqlite_path: Path) -> "Store":
        dsn = database_url(url, sqlite_path)
        if dsn.startswith("sqlite"):
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(dsn, connect_args={"timeout": 30})

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine.sync_engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")
        else:
            # pre-ping: a PostgreSQL server restarted under a running kumo costs a reconnect, not failed requests
            engine = create_async_engine(dsn, pool_size=10, pool_pre_ping=True)
        event.listen(engine.sync_engine, "before_cursor_execute", _storable_parameters, retval=True)
        store = cls(engine)
        async with store.write() as tx:
            await (await tx.connection()).run_sync(migrate)
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator["Tx"]:
        tx = Tx(self, write=False)
        try:
            yield tx
        finally:
            await tx.end(commit=False)

    @asynccontextmanager
    async def write(self) -> AsyncIterator["Tx"]:
        async with self._write_lock:
            tx = Tx(self, write=True)
            try:
                yield tx
            except BaseException:
                await tx.end(commit=False)
                raise
            await tx.end(commit=True)


class Tx:
    """One transaction, opened lazily: a read answered from the cache touches no database.
    Methods are grouped by table."""

    def __init__(self, store: Store, *, write: bool) -> None:
        self.store = store
        self.write = write
        self.changes: dict[str, Snapshot | None] = {}  # resource writes, applied to the cache on commit
        self._conn: AsyncConnection | None = None

    # A task canceled mid-transaction (a deployment's cancel, kumo stopping) must leave its connection
    # usable: asyncpg cannot even roll back a connection a cancel cut off mid-statement, so on PostgreSQL
    # every exchange runs to its end and the cancel is raised after it. aiosqlite runs each statement
    # whole on its own thread, which a cancel cannot cut, so SQLite skips that (about 10% of a write).
    # The end of a transaction always runs whole: a commit is then always followed by its cache update.
    def _whole(self, work: Awaitable[T]) -> Awaitable[T]:
        return work if self.store.is_sqlite else uninterrupted(work)

    async def connection(self) -> AsyncConnection:
        if self._conn is None:
            await self._whole(self._open())
        assert self._conn is not None
        return self._conn

    async def _open(self) -> None:
        conn = await self.store.engine.connect()
        self._conn = conn  # at once: end() closes it whatever happens next
        if self.write:
            conn.sync_connection.info["write"] = True  # type: ignore[union-attr]
        await conn.begin()
        if self.write and not self.store.is_sqlite:
            # PostgreSQL's BEGIN IMMEDIATE: writers of every process take turns; released at commit/rollback
            await conn.execute(select(func.pg_advisory_xact_lock(WRITER_LOCK)))

    async def end(self, *, commit: bool) -> None:
        """Commit (then show the writes to the cache) or roll back, and give the connection back."""
        if self._conn is None and not commit:
            return  # a read answered from the cache opened nothing: no task to start for it
        await uninterrupted(self._end(commit))

    async def _end(self, commit: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if commit:
                    await conn.commit()
                else:
                    await conn.rollback()
            finally:
                conn.sync_connection.info.pop("write", None)  # type: ignore[union-attr]
                await conn.close()
        if commit:
            self.store.cache.apply(self.changes)

    async def execute(self, statement: Any) -> Any:
        return await self._whole((await self.connection()).execute(statement))

    # -- resources -------------------------------------------------------------------------
    @staticmethod
    def _resource(row: Any) -> Resource:
        return Resource(
            key=row.key, id=row.id, subscription_id=row.subscription_id, resource_group=row.resource_group,
            type=row.type, name=row.name, body=json.loads(row.body), provisioning_state=row.provisioning_state,
            location=row.location, parent_key=row.parent_key, desired_gen=row.desired_gen,
            observed_gen=row.observed_gen, created_at=row.created_at, updated_at=row.updated_at,
        )

    async def get_resource(self, key: str) -> Resource | None:
        if key in self.changes:
            pending = self.changes[key]
            return thaw(pending) if pending else None
        if (cached := self.store.cache.get(key)) is not None:
            return cached
        epoch = self.store.cache.epoch
        row = (await self.execute(select(s.resources).where(s.resources.c.key == key))).first()
        if row is None:
            return None
        resource = self._resource(row)
        if not self.write:
            self.store.cache.fill(freeze(resource, row.body), epoch)
        return resource

    async def put_resource(self, r: Resource) -> Resource:
        now = time.time()
        r.updated_at = now
        body_json = r.body_json()
        values = dict(
            id=r.id, subscription_id=r.subscription_id, resource_group=r.resource_group, type=r.type,
            name=r.name, parent_key=r.parent_key, location=r.location, body=body_json,
            provisioning_state=r.provisioning_state, desired_gen=r.desired_gen, observed_gen=r.observed_gen,
            updated_at=now,
        )
        res = await self.execute(update(s.resources).where(s.resources.c.key == r.key).values(**values))
        if res.rowcount == 0:
            r.created_at = r.created_at or now
            await self.execute(s.resources.insert().values(key=r.key, created_at=r.created_at, **values))
        self.changes[r.key] = freeze(r, body_json)
        return r

    async def delete_resource(self, key: str) -> bool:
        res = await self.execute(delete(s.resources).where(s.resources.c.key == key))
        self.changes[key] = None
        return res.rowcount > 0

    async def list_resources(
        self,
        subscription_id: str,
        *,
        resource_group: str | None = None,
        type: str | None = None,
        exclude_type: str | None = None,
        parent_key: str | None = None,
        top_level_only: bool = False,
        after_key: str | None = None,
        limit: int | None = None,
    ) -> list[Resource]:
        c = s.resources.c
        conds = [c.subscription_id == subscription_id]
        if resource_group is not None:
            conds.append(c.resource_group == resource_group.lower())
        if type is not None:
            conds.append(c.type == type.lower())
        if exclude_type is not None:
            conds.append(c.type != exclude_type.lower())
        if parent_key is not None:
            conds.append(c.parent_key == parent_key)
        if top_level_only:
            conds.append(c.parent_key.is_(None))
        if after_key is not None:
            conds.append(c.key > after_key)
        q = select(s.resources).where(and_(*conds)).order_by(c.key)
        if limit is not None:
            q = q.limit(limit)
        return [self._resource(r) for r in await self.execute(q)]

    async def resources_of_type(self, type: str) -> list[Resource]:
        """Every resource of one type, in all subscriptions (controllers rebuilding the host use it)."""
        q = select(s.resources).where(s.resources.c.type == type.lower()).order_by(s.resources.c.key)
        return [self._resource(r) for r in await self.execute(q)]

    async def resources_by_state(self, states: tuple[str, ...]) -> list[Resource]:
        q = select(s.resources).where(s.resources.c.provisioning_state.in_(states))
        return [self._resource(r) for r in await self.execute(q)]

    # -- operations ------------------------------------------------------------------------
    @staticmethod
    def _operation(row: Any) -> Operation:
        return Operation(
            id=row.id, subscription_id=row.subscription_id, namespace=row.namespace, location=row.location,
            kind=row.kind, resource_key=row.resource_key, params=json.loads(row.params), status=row.status,
            percent_complete=row.percent_complete, error=json.loads(row.error) if row.error else None,
            error_status=row.error_status, result=json.loads(row.result) if row.result else None,
            created_at=row.created_at, ended_at=row.ended_at,
        )

    async def add_operation(self, op: Operation) -> Operation:
        op.created_at = op.created_at or time.time()
        await self.execute(s.operations.insert().values(
            id=op.id, subscription_id=op.subscription_id, namespace=op.namespace, location=op.location,
            kind=op.kind, resource_key=op.resource_key, params=_dumps(op.params), status=op.status,
            percent_complete=op.percent_complete, created_at=op.created_at,
        ))
        return op

    async def get_operation(self, op_id: str) -> Operation | None:
        row = (await self.execute(select(s.operations).where(s.operations.c.id == op_id))).first()
        return self._operation(row) if row else None

    async def set_operation_progress(self, op_id: str, percent: float) -> None:
        await self.execute(update(s.operations).where(s.operations.c.id == op_id)
                                .values(percent_complete=percent))

    async def finish_operation(self, op_id: str, status: str, *, result: Any = None,
                               error: dict[str, Any] | None = None, error_status: int | None = None) -> None:
        await self.execute(update(s.operations).where(s.operations.c.id == op_id).values(
            status=status, percent_complete=100.0, ended_at=time.time(),
            result=_dumps(result) if result is not None else None,
            error=_dumps(error) if error else None, error_status=error_status,
        ))

    async def unfinished_operations(self) -> list[Operation]:
        q = select(s.operations).where(s.operations.c.status == "InProgress").order_by(s.operations.c.created_at)
        return [self._operation(r) for r in await self.execute(q)]

    async def operations_for(self, resource_key: str) -> list[Operation]:
        q = select(s.operations).where(s.operations.c.resource_key == resource_key).order_by(s.operations.c.created_at)
        return [self._operation(r) for r in await self.execute(q)]

    # -- events ----------------------------------------------------------------------------
    async def add_event(self, resource_key: str, kind: str, message: str) -> None:
        await self.execute(s.events.insert().values(resource_key=resource_key, time=time.time(),
                                                         kind=kind, message=message))

    async def events_for(self, resource_key: str) -> list[Event]:
        q = select(s.events).where(s.events.c.resource_key == resource_key).order_by(s.events.c.seq)
        return [Event(r.resource_key, r.time, r.kind, r.message) for r in await self.execute(q)]

    async def events_in(self, scope: str, start: float, end: float, *, before_seq: int | None = None,
                        limit: int | None = None) -> list[tuple[int, Event]]:
        """Events of `scope` (a lower-cased id: subscription, group or resource) and of everything under it,
        between two times, newest first, with their sequence numbers (the activity log pages by them)."""
        c = s.events.c
        under = scope.rstrip("/").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        conds = [or_(c.resource_key == scope, c.resource_key.like(under, escape="\\")), c.time >= start, c.time <= end]
        if before_seq is not None:
            conds.append(c.seq < before_seq)
        q = select(s.events).where(and_(*conds)).order_by(c.seq.desc())
        if limit is not None:
            q = q.limit(limit)
        return [(r.seq, Event(r.resource_key, r.time, r.kind, r.message)) for r in await self.execute(q)]

    # -- directory: tenants, subscriptions, principals, roles -------------------------------
    async def add_tenant(self, t: Tenant) -> Tenant:
        await self.execute(s.tenants.insert().values(id=t.id, display_name=t.display_name,
                                                          default_domain=t.default_domain, created_at=time.time()))
        return t

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = (await self.execute(select(s.tenants).where(s.tenants.c.id == tenant_id.lower()))).first()
        return Tenant(row.id, row.display_name, row.default_domain) if row else None

    async def list_tenants(self) -> list[Tenant]:
        rows = await self.execute(select(s.tenants).order_by(s.tenants.c.created_at))
        return [Tenant(r.id, r.display_name, r.default_domain) for r in rows]

    async def add_subscription(self, sub: Subscription) -> Subscription:
        await self.execute(s.subscriptions.insert().values(
            id=sub.id, tenant_id=sub.tenant_id, display_name=sub.display_name, state=sub.state,
            created_at=time.time()))
        return sub

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        row = (await self.execute(select(s.subscriptions).where(s.subscriptions.c.id == sub_id.lower()))).first()
        return Subscription(row.id, row.tenant_id, row.display_name, row.state) if row else None

    async def list_subscriptions(self) -> list[Subscription]:
        rows = await self.execute(select(s.subscriptions).order_by(s.subscriptions.c.created_at))
        return [Subscription(r.id, r.tenant_id, r.display_name, r.state) for r in rows]

    async def add_principal(self, p: Principal) -> Principal:
        await self.execute(s.principals.insert().values(
            object_id=p.object_id, app_id=p.app_id, tenant_id=p.tenant_id, display_name=p.display_name,
            kind=p.kind, secret_hash=p.secret_hash, created_at=time.time()))
        return p

    async def _principal_where(self, cond: Any) -> Principal | None:
        row = (await self.execute(select(s.principals).where(cond))).first()
        if not row:
            return None
        return Principal(row.object_id, row.app_id, row.tenant_id, row.display_name, row.kind, row.secret_hash)

    async def get_principal(self, object_id: str) -> Principal | None:
        return await self._principal_where(s.principals.c.object_id == object_id.lower())

    async def principal_by_app_id(self, app_id: str) -> Principal | None:
        return await self._principal_where(s.principals.c.app_id == app_id.lower())

    async def principal_by_name(self, name: str) -> Principal | None:
        return await self._principal_where(s.principals.c.display_name == name)

    async def add_role_assignment(self, ra: RoleAssignment) -> RoleAssignment:
        await self.execute(s.role_assignments.insert().values(
            id=ra.id, principal_id=ra.principal_id, scope=ra.scope.lower(), role=ra.role, created_at=time.time()))
        return ra

    async def role_assignments_of(self, principal_id: str) -> list[RoleAssignment]:
        q = select(s.role_assignments).where(s.role_assignments.c.principal_id == principal_id)
        return [RoleAssignment(r.id, r.principal_id, r.scope, r.role) for r in await self.execute(q)]

    # -- allocations: numbered things resources hold (IP addresses) ---------------------------
    async def allocated(self, pool: str) -> dict[int, str]:
        """value -> owner for one pool."""
        q = select(s.allocations).where(s.allocations.c.pool == pool)
        return {r.value: r.owner for r in await self.execute(q)}

    async def allocations_of(self, owner: str) -> list[tuple[str, int]]:
        q = select(s.allocations).where(s.allocations.c.owner == owner).order_by(s.allocations.c.pool)
        return [(r.pool, r.value) for r in await self.execute(q)]

    async def claim(self, pool: str, value: int, owner: str) -> bool:
        """Take `value` in `pool` for `owner`; False when another owner holds it."""
        t = s.allocations
        row = (await self.execute(select(t).where(and_(t.c.pool == pool, t.c.value == value)))).first()
        if row is not None:
            return row.owner == owner
        await self.execute(t.insert().values(pool=pool, value=value, owner=owner))
        return True

    async def release(self, owner: str, pool: str | None = None) -> None:
        """Drop what `owner` (a resource id) and its sub-resources (`owner/...`) hold."""
        t = s.allocations
        lower = owner.lower()
        cond = or_(func.lower(t.c.owner) == lower, func.lower(t.c.owner).startswith(lower + "/", autoescape=True))
        if pool is not None:
            cond = and_(cond, t.c.pool == pool)
        await self.execute(delete(t).where(cond))

    # -- resource provider registrations ----------------------------------------------------
    async def provider_states(self, subscription_id: str) -> dict[str, str]:
        q = select(s.provider_registrations).where(s.provider_registrations.c.subscription_id == subscription_id)
        return {r.namespace: r.state for r in await self.execute(q)}

    async def set_provider_state(self, subscription_id: str, namespace: str, state: str) -> None:
        t = s.provider_registrations
        key = and_(t.c.subscription_id == subscription_id, t.c.namespace == namespace.lower())
        res = await self.execute(update(t).where(key).values(state=state))
        if res.rowcount == 0:
            await self.execute(t.insert().values(subscription_id=subscription_id,
                                                      namespace=namespace.lower(), state=state))
