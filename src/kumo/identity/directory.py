"""The directory: tenants, subscriptions, principals and their roles, kept in the store.

On first start kumo makes a default tenant, subscription and service principal (Owner), and keeps the
principal's secret in the data dir (mode 0600) so `kumo az` and `kumo env` can log in with it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from kumo.identity.tls import _write_private
from kumo.store import Principal, RoleAssignment, Store, Subscription, Tenant

ROLES = ("Owner", "Contributor", "Reader")


@dataclass(frozen=True)
class DefaultIdentity:
    tenant_id: str
    subscription_id: str
    client_id: str
    client_secret: str
    object_id: str

    @classmethod
    def load(cls, path: Path) -> "DefaultIdentity":
        return cls(**json.loads(path.read_text()))


def new_id() -> str:
    return str(uuid.uuid4())


def new_secret() -> str:
    return secrets.token_urlsafe(30)


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_secret(secret: str, stored: str) -> bool:
    try:
        _, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    digest = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt_b64), n=2**14, r=8, p=1)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


async def verify_secret_async(secret: str, stored: str) -> bool:
    """scrypt is deliberately slow: keep it off the event loop."""
    return await asyncio.to_thread(verify_secret, secret, stored)


async def bootstrap(store: Store, credentials_path: Path) -> DefaultIdentity:
    """Make sure the default tenant, subscription and principal exist; idempotent."""
    if credentials_path.exists():
        ident = DefaultIdentity.load(credentials_path)
    else:
        ident = DefaultIdentity(tenant_id=new_id(), subscription_id=new_id(), client_id=new_id(),
                                client_secret=new_secret(), object_id=new_id())
    async with store.write() as tx:
        if await tx.get_tenant(ident.tenant_id) is None:
            await tx.add_tenant(Tenant(ident.tenant_id, "Default Directory", "kumo.local"))
        if await tx.get_subscription(ident.subscription_id) is None:
            await tx.add_subscription(Subscription(ident.subscription_id, ident.tenant_id, "kumo default"))
        if await tx.get_principal(ident.object_id) is None:
            secret_hash = await asyncio.to_thread(hash_secret, ident.client_secret)
            await tx.add_principal(Principal(ident.object_id, ident.client_id, ident.tenant_id,
                                             "kumo-default", "ServicePrincipal", secret_hash))
            await tx.add_role_assignment(RoleAssignment(new_id(), ident.object_id,
                                                        f"/subscriptions/{ident.subscription_id}", "Owner"))
    if not credentials_path.exists():
        _write_private(credentials_path, json.dumps(asdict(ident), indent=2).encode())
    return ident


async def create_tenant(store: Store, display_name: str) -> Tenant:
    tenant = Tenant(new_id(), display_name, f"{display_name.lower().replace(' ', '')}.kumo.local")
    async with store.write() as tx:
        await tx.add_tenant(tenant)
    return tenant


async def create_subscription(store: Store, display_name: str, tenant_id: str, owner_object_id: str) -> Subscription:
    """A new subscription in `tenant_id`; `owner_object_id` (the default principal) becomes its Owner."""
    async with store.write() as tx:
        if await tx.get_tenant(tenant_id) is None:
            raise ValueError(f"tenant {tenant_id} does not exist (see `kumo tenant create`)")
        sub = await tx.add_subscription(Subscription(new_id(), tenant_id.lower(), display_name))
        await tx.add_role_assignment(RoleAssignment(new_id(), owner_object_id, f"/subscriptions/{sub.id}", "Owner"))
    return sub


async def create_service_principal(store: Store, display_name: str, role: str, subscription_ids: list[str],
                                   tenant_id: str) -> tuple[Principal, str]:
    """A service principal with `role` on each subscription; returns it with its (only) secret."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    secret = new_secret()
    principal = Principal(new_id(), new_id(), tenant_id.lower(), display_name, "ServicePrincipal",
                          await asyncio.to_thread(hash_secret, secret))
    async with store.write() as tx:
        for sub_id in subscription_ids:
            if await tx.get_subscription(sub_id) is None:
                raise ValueError(f"subscription {sub_id} does not exist")
        await tx.add_principal(principal)
        for sub_id in subscription_ids:
            await tx.add_role_assignment(RoleAssignment(new_id(), principal.object_id,
                                                        f"/subscriptions/{sub_id.lower()}", role))
    return principal, secret
