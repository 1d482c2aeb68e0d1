"""`/providers` and `/subscriptions/{id}/providers[/{namespace}[/register|unregister]]`: the resource
types kumo really serves, from the provider registry, with each subscription's registration state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError
from kumo.arm.paging import static_page
from kumo.providers.base import Namespace
from kumo.providers.resources.locations import known_locations

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext

# Namespaces are registered by default, as Azure registers a namespace on first use.
DEFAULT_STATE = "Registered"


def namespace_body(ns: Namespace, subscription_id: str | None, state: str | None) -> dict[str, Any]:
    locations = [display for display in known_locations().values()]
    body: dict[str, Any] = {
        "id": f"/subscriptions/{subscription_id}/providers/{ns.name}" if subscription_id else f"/providers/{ns.name}",
        "namespace": ns.name,
        "resourceTypes": [{"resourceType": t.resource_type, "locations": locations,
                           "apiVersions": list(t.api_versions), "capabilities": "None"} for t in ns.types],
    }
    if state is not None:
        body["registrationState"] = state
        body["registrationPolicy"] = "RegistrationRequired"
    return body


def _namespace(ctx: "RequestContext", name: str) -> Namespace:
    ns = ctx.services.providers.namespace(name)
    if ns is None:
        raise ArmError(404, "InvalidResourceNamespace", f"The resource namespace '{name}' is invalid.")
    return ns


async def list_tenant_level(ctx: "RequestContext") -> Response:
    items = [namespace_body(ns, None, None) for ns in ctx.services.providers.namespaces.values()]
    return JSONResponse(static_page(ctx, items, key=lambda b: b["namespace"].lower()))


async def get_tenant_level(ctx: "RequestContext", name: str) -> Response:
    return JSONResponse(namespace_body(_namespace(ctx, name), None, None))


async def list_for_subscription(ctx: "RequestContext", subscription_id: str) -> Response:
    sub = await ctx.services.auth.authorize(ctx.caller, subscription_id, "Microsoft.Resources/providers/read",
                                            write=False)
    async with ctx.services.store.read() as tx:
        states = await tx.provider_states(sub.id)
    items = [namespace_body(ns, sub.id, states.get(key, DEFAULT_STATE))
             for key, ns in ctx.services.providers.namespaces.items()]
    return JSONResponse(static_page(ctx, items, key=lambda b: b["namespace"].lower()))


async def get_for_subscription(ctx: "RequestContext", subscription_id: str, name: str) -> Response:
    sub = await ctx.services.auth.authorize(ctx.caller, subscription_id, "Microsoft.Resources/providers/read",
                                            write=False)
    ns = _namespace(ctx, name)
    async with ctx.services.store.read() as tx:
        state = (await tx.provider_states(sub.id)).get(ns.name.lower(), DEFAULT_STATE)
    return JSONResponse(namespace_body(ns, sub.id, state))


async def set_registration(ctx: "RequestContext", subscription_id: str, name: str, register: bool) -> Response:
    sub = await ctx.services.auth.authorize(ctx.caller, subscription_id, f"{name}/register/action", write=True)
    ns = _namespace(ctx, name)
    state = "Registered" if register else "Unregistered"
    async with ctx.services.store.write() as tx:
        await tx.set_provider_state(sub.id, ns.name, state)
    return JSONResponse(namespace_body(ns, sub.id, state))


async def require_registered(ctx: "RequestContext", subscription_id: str, namespace: str) -> None:
    """Writes to an unregistered namespace fail as in Azure."""
    async with ctx.services.store.read() as tx:
        state = (await tx.provider_states(subscription_id.lower())).get(namespace.lower(), DEFAULT_STATE)
    if state != "Registered":
        raise ArmError(409, "MissingSubscriptionRegistration",
                       f"The subscription is not registered to use namespace '{namespace}'. Register it with "
                       f"`az provider register --namespace {namespace}`.")
