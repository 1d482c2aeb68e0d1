"""Subscriptions, tenants and locations as the caller is allowed to see them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.paging import static_page
from kumo.providers.resources.locations import known_locations, location_body
from kumo.store import Subscription

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext


def subscription_body(sub: Subscription) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{sub.id}", "authorizationSource": "RoleBased", "managedByTenants": [],
        "subscriptionId": sub.id, "tenantId": sub.tenant_id, "displayName": sub.display_name, "state": sub.state,
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01",
                                 "spendingLimit": "Off"},
    }


async def list_subscriptions(ctx: "RequestContext") -> Response:
    async with ctx.services.store.read() as tx:
        subs = await tx.list_subscriptions()
    visible = [subscription_body(s) for s in subs
               if s.id in ctx.caller.roles and s.tenant_id == ctx.caller.tenant_id.lower()]
    page = static_page(ctx, visible, key=lambda b: b["subscriptionId"])
    page["count"] = {"type": "Total", "value": len(visible)}
    return JSONResponse(page)


async def get_subscription(ctx: "RequestContext", subscription_id: str) -> Response:
    sub = await ctx.services.auth.authorize(ctx.caller, subscription_id, "Microsoft.Resources/subscriptions/read",
                                            write=False)
    return JSONResponse(subscription_body(sub))


async def list_tenants(ctx: "RequestContext") -> Response:
    async with ctx.services.store.read() as tx:
        tenants = await tx.list_tenants()
        subs = await tx.list_subscriptions()
    mine = {s.tenant_id for s in subs if s.id in ctx.caller.roles} | {ctx.caller.tenant_id.lower()}
    items = [{"id": f"/tenants/{t.id}", "tenantId": t.id, "tenantCategory": "Home", "displayName": t.display_name,
              "defaultDomain": t.default_domain, "domains": [t.default_domain], "tenantType": "AAD"}
             for t in tenants if t.id in mine]
    return JSONResponse(static_page(ctx, items, key=lambda b: b["tenantId"]))


async def list_locations(ctx: "RequestContext", subscription_id: str) -> Response:
    await ctx.services.auth.authorize(ctx.caller, subscription_id, "Microsoft.Resources/subscriptions/locations/read",
                                      write=False)
    items = [location_body(subscription_id.lower(), name, display) for name, display in known_locations().items()]
    return JSONResponse({"value": items})
