"""Microsoft.Resources/resourceGroups: PUT (synchronous, as Azure), GET, HEAD, PATCH (tags),
DELETE (an LRO that deletes every resource in the group first), list with `$filter` on tags."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm import odata
from kumo.arm.errors import ArmError, bad_request, resource_group_not_found
from kumo.arm.ids import resource_group_id, resource_group_key
from kumo.arm.lro import OperationRun
from kumo.arm.paging import keyset_page
from kumo.providers.lifecycle import RESOURCE_GROUP_TYPE, begin_delete, check_tags, delete_tree
from kumo.providers.resources.locations import normalise_location
from kumo.store import Resource

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

TYPE = "Microsoft.Resources/resourceGroups"
API_VERSIONS = ("2025-04-01", "2024-11-01", "2024-03-01", "2023-07-01", "2022-09-01", "2021-04-01")
ALLOWED_CHAR = re.compile(r"[\w\-.()]", re.UNICODE)


def validate_name(name: str) -> None:
    bad = sorted({c for c in name if not ALLOWED_CHAR.fullmatch(c)})
    if bad or not name:
        raise bad_request("InvalidResourceGroup",
                          f"The provided resource group name '{name}' has these invalid characters: "
                          f"'{''.join(bad)}'. The name can only be a letter, digit, '-', '.', '(', ')' or '_'.")
    if len(name) > 90 or name.endswith("."):
        raise bad_request("InvalidResourceGroup",
                          f"The provided resource group name '{name[:100]}' is invalid: it must be 1-90 characters "
                          "long and must not end in a period.")


def view(resource: Resource) -> dict[str, Any]:
    return resource.body


async def put(ctx: "RequestContext", subscription: str, name: str) -> Response:
    validate_name(name)
    body = await ctx.object_body()
    if not body.get("location"):
        raise bad_request("LocationRequired", "The location property is required for this definition.", "location")
    location = normalise_location(str(body["location"]), TYPE)
    tags = check_tags(body.get("tags"))
    key = resource_group_key(subscription, name)
    store = ctx.services.store
    async with store.write() as tx:
        existing = await tx.get_resource(key)
        if existing is not None:
            if existing.provisioning_state == "Deleting":
                raise ArmError(409, "ResourceGroupBeingDeleted", f"The resource group '{existing.name}' is in "
                               "deprovisioning state and cannot perform this operation.")
            if existing.location != location:
                raise ArmError(409, "InvalidResourceGroupLocation",
                               f"Invalid resource group location '{location}'. The Resource group already exists "
                               f"in location '{existing.location}'.")
        rg_name = existing.name if existing else name  # the group keeps the casing it was created with
        rg_body = {"id": resource_group_id(subscription.lower(), rg_name), "name": rg_name, "type": TYPE,
                   "location": location, "tags": tags, "properties": {"provisioningState": "Succeeded"}}
        if body.get("managedBy"):
            rg_body["managedBy"] = str(body["managedBy"])
        resource = Resource(key=key, id=rg_body["id"], subscription_id=subscription.lower(),
                            resource_group=name.lower(), type=RESOURCE_GROUP_TYPE, name=rg_name, body=rg_body,
                            location=location, desired_gen=(existing.desired_gen + 1) if existing else 1,
                            observed_gen=(existing.desired_gen + 1) if existing else 1,
                            created_at=existing.created_at if existing else 0.0)
        await tx.put_resource(resource)
        await tx.add_event(key, "Updated" if existing else "Created", f"PUT by {ctx.caller.app_id}")
    return JSONResponse(view(resource), status_code=200 if existing else 201)


async def _get(ctx: "RequestContext", subscription: str, name: str) -> Resource:
    async with ctx.services.store.read() as tx:
        rg = await tx.get_resource(resource_group_key(subscription, name))
    if rg is None:
        raise resource_group_not_found(name)
    return rg


async def get(ctx: "RequestContext", subscription: str, name: str) -> Response:
    return JSONResponse(view(await _get(ctx, subscription, name)))


async def head(ctx: "RequestContext", subscription: str, name: str) -> Response:
    async with ctx.services.store.read() as tx:
        rg = await tx.get_resource(resource_group_key(subscription, name))
    return Response(status_code=204 if rg is not None else 404)


async def patch(ctx: "RequestContext", subscription: str, name: str) -> Response:
    body = await ctx.object_body()
    store = ctx.services.store
    async with store.write() as tx:
        rg = await tx.get_resource(resource_group_key(subscription, name))
        if rg is None:
            raise resource_group_not_found(name)
        if body.get("location") and normalise_location(str(body["location"]), TYPE) != rg.location:
            raise ArmError(409, "InvalidResourceGroupLocation",
                           f"Invalid resource group location '{body['location']}'. The Resource group already "
                           f"exists in location '{rg.location}'.")
        if "tags" in body:
            rg.body["tags"] = check_tags(body.get("tags"))
        if "managedBy" in body:
            rg.body["managedBy"] = body["managedBy"]
        await tx.put_resource(rg)
        await tx.add_event(rg.key, "Updated", f"PATCH by {ctx.caller.app_id}")
    return JSONResponse(view(rg))


async def delete(ctx: "RequestContext", subscription: str, name: str) -> Response:
    started = await begin_delete(ctx, resource_group_key(subscription, name), namespace="Microsoft.Resources",
                                 kind="resourceGroups.delete")
    if started is None:
        raise resource_group_not_found(name)
    return started


async def delete_operation(run: OperationRun) -> None:
    """Delete every resource of the group (children go with their parents), then the group."""
    services: "Services" = run.services
    key = run.op.resource_key
    assert key is not None
    async with services.store.read() as tx:
        rg = await tx.get_resource(key)
        if rg is None:
            return None
        members = await tx.list_resources(rg.subscription_id, resource_group=rg.resource_group,
                                          exclude_type=RESOURCE_GROUP_TYPE, top_level_only=True)
    for i, member in enumerate(members):
        await delete_tree(services, member)
        await run.progress(100.0 * (i + 1) / (len(members) + 1))
    async with services.store.write() as tx:
        await tx.delete_resource(key)
        await tx.add_event(key, "Deleted", f"resource group removed with {len(members)} resources")
    return None


def _fields(r: Resource) -> Any:
    return lambda name: {"name": r.name, "location": r.location, "tags": r.body.get("tags"),
                         "resourcetype": TYPE, "type": TYPE}.get(name)


async def list_groups(ctx: "RequestContext", subscription: str) -> Response:
    flt = ctx.query("$filter")
    tree = odata.parse(flt) if flt else None
    store = ctx.services.store

    async def fetch(after: str | None, n: int) -> list[Resource]:
        async with store.read() as tx:
            return await tx.list_resources(subscription.lower(), type=RESOURCE_GROUP_TYPE, after_key=after, limit=n)

    keep = (lambda r: odata.matches(tree, _fields(r))) if tree else (lambda _r: True)
    return JSONResponse(await keyset_page(ctx, fetch, lambda r: r.key, view, keep))


def register_operations(services: "Services") -> None:
    services.operations.register("resourceGroups.delete", delete_operation)
