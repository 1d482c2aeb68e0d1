"""Generic resource listing: `/subscriptions/{s}/resources` and `…/resourceGroups/{rg}/resources`,
with `$filter` (resourceType, name, location, tags, substringof) and `$expand`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm import odata
from kumo.arm.lro import iso
from kumo.arm.paging import keyset_page
from kumo.providers.lifecycle import RESOURCE_GROUP_TYPE, require_resource_group
from kumo.store import Resource

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext

SUMMARY_KEYS = ("id", "name", "type", "location", "tags", "kind", "sku", "managedBy", "identity", "zones",
                "extendedLocation", "plan")


def summary(resource: Resource, expand: set[str]) -> dict[str, Any]:
    out = {k: resource.body[k] for k in SUMMARY_KEYS if k in resource.body}
    if "createdtime" in expand:
        out["createdTime"] = iso(resource.created_at)
    if "changedtime" in expand:
        out["changedTime"] = iso(resource.updated_at)
    if "provisioningstate" in expand:
        out["provisioningState"] = resource.provisioning_state
    return out


def fields(resource: Resource) -> Any:
    values = {"name": resource.name, "location": resource.location, "tags": resource.body.get("tags"),
              "resourcetype": resource.body.get("type"), "resourcegroup": resource.resource_group,
              "type": resource.body.get("type")}
    return values.get


async def list_generic(ctx: "RequestContext", subscription: str, resource_group: str | None) -> Response:
    store = ctx.services.store
    if resource_group is not None:
        async with store.read() as tx:
            await require_resource_group(tx, subscription, resource_group, for_write=False)
    flt = ctx.query("$filter")
    tree = odata.parse(flt) if flt else None
    expand = {e.strip().lower() for e in (ctx.query("$expand") or "").split(",") if e.strip()}

    async def fetch(after: str | None, n: int) -> list[Resource]:
        async with store.read() as tx:
            return await tx.list_resources(subscription.lower(), resource_group=resource_group,
                                           exclude_type=RESOURCE_GROUP_TYPE, top_level_only=True,
                                           after_key=after, limit=n)

    keep = (lambda r: odata.matches(tree, fields(r))) if tree else (lambda _r: True)
    return JSONResponse(await keyset_page(ctx, fetch, lambda r: r.key, lambda r: summary(r, expand), keep))
