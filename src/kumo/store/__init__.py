"""The store: one API over SQLite (default) and PostgreSQL (`KUMO_DATABASE_URL`)."""

from kumo.store.records import Event, Operation, Principal, Resource, RoleAssignment, Subscription, Tenant
from kumo.store.store import Store, Tx

__all__ = ["Event", "Operation", "Principal", "Resource", "RoleAssignment", "Store", "Subscription", "Tenant", "Tx"]
