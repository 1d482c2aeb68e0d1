"""Tables. Changes to them go through a new step in migrations.py, never by editing a shipped step."""

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

tenants = Table(
    "tenants", metadata,
    Column("id", String(36), primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("default_domain", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

subscriptions = Table(
    "subscriptions", metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("state", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)

principals = Table(
    "principals", metadata,
    Column("object_id", String(36), primary_key=True),
    Column("app_id", String(36), nullable=False, unique=True),
    Column("tenant_id", String(36), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("kind", String(32), nullable=False),  # ServicePrincipal | User
    Column("secret_hash", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

role_assignments = Table(
    "role_assignments", metadata,
    Column("id", String(36), primary_key=True),
    Column("principal_id", String(36), nullable=False, index=True),
    Column("scope", Text, nullable=False),  # /subscriptions/{id}
    Column("role", String(32), nullable=False),  # Owner | Contributor | Reader
    Column("created_at", Float, nullable=False),
)

provider_registrations = Table(
    "provider_registrations", metadata,
    Column("subscription_id", String(36), primary_key=True),
    Column("namespace", String(128), primary_key=True),  # lower-case
    Column("state", String(32), nullable=False),
)

resources = Table(
    "resources", metadata,
    Column("key", Text, primary_key=True),  # the id, lower-cased
    Column("id", Text, nullable=False),
    Column("subscription_id", String(36), nullable=False),
    Column("resource_group", Text, nullable=False),  # lower-case
    Column("type", Text, nullable=False),  # lower-case, e.g. microsoft.network/virtualnetworks
    Column("name", Text, nullable=False),
    Column("parent_key", Text),
    Column("location", Text),
    Column("body", Text, nullable=False),  # the ARM body as GET returns it (secrets removed)
    Column("provisioning_state", String(32), nullable=False),
    Column("desired_gen", BigInteger, nullable=False),
    Column("observed_gen", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_resources_scope", "subscription_id", "resource_group", "type"),
    Index("ix_resources_parent", "parent_key"),
)

operations = Table(
    "operations", metadata,
    Column("id", String(36), primary_key=True),
    Column("subscription_id", String(36), nullable=False),
    Column("namespace", Text, nullable=False),
    Column("location", Text, nullable=False),
    Column("kind", Text, nullable=False),  # the handler that carries it out, e.g. resourceGroups.delete
    Column("resource_key", Text),
    Column("params", Text, nullable=False),
    Column("status", String(32), nullable=False),  # InProgress | Succeeded | Failed | Canceled
    Column("percent_complete", Float, nullable=False),
    Column("error", Text),
    Column("error_status", Integer),
    Column("result", Text),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),
    Index("ix_operations_status", "status"),
)

events = Table(
    "events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("resource_key", Text, nullable=False, index=True),
    Column("time", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("message", Text, nullable=False),
)

allocations = Table(
    "allocations", metadata,
    # A numbered thing one resource holds: a private IP in a subnet (pool = the subnet's key), a public
    # IP from kumo's pool, a host transit address. Unique per pool, so two writers can never share one.
    Column("pool", Text, primary_key=True),
    Column("value", BigInteger, primary_key=True),
    Column("owner", Text, nullable=False, index=True),  # the holding resource's key
)
