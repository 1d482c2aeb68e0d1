"""The generic resource lifecycle every resource type shares: PUT writes the desired state and an
operation in one transaction, the operation realises it through the type's drivers, DELETE tears
down children first. Nothing here knows any particular type."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request, not_found, resource_group_not_found
from kumo.arm.ids import ResourceId, resource_group_key
from kumo.arm.lro import OperationRun
from kumo.providers.base import ProviderRegistry, ResourceType
from kumo.providers.resources.locations import home_location, normalise_location
from kumo.store import Operation, Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

RESOURCE_GROUP_TYPE = "microsoft.resources/resourcegroups"
TERMINAL = ("Succeeded", "Failed", "Canceled")


def check_tags(tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise bad_request("InvalidRequestContent", "'tags' must be a JSON object of strings.", "tags")
    if len(tags) > 50:
        raise bad_request("InvalidTagCount", "The number of tags exceeds the maximum of 50.", "tags")
    out: dict[str, str] = {}
    for k, v in tags.items():
        if not k or len(k) > 512 or any(c in k for c in "<>%&\\?/"):
            raise bad_request("InvalidTagNameCharacters",
                              f"The tag name '{k[:64]}' is invalid: names are 1-512 characters without <>%&\\?/.",
                              "tags")
        if v is None:
            v = ""
        if not isinstance(v, (str, int, float, bool)) or len(str(v)) > 256:
            raise bad_request("InvalidTagValueLength", f"The value of tag '{k}' must be a string of at most "
                              "256 characters.", "tags")
        out[k] = str(v) if not isinstance(v, str) else v
    return out


async def require_resource_group(tx: Tx, subscription: str, name: str, *, for_write: bool) -> Resource:
    rg = await tx.get_resource(resource_group_key(subscription, name))
    if rg is None:
        raise resource_group_not_found(name)
    if for_write and rg.provisioning_state == "Deleting":
        raise ArmError(409, "ResourceGroupBeingDeleted",
                       f"The resource group '{rg.name}' is in deprovisioning state and cannot perform this operation.")
    return rg


def _scope_fields(rid: ResourceId, handler: ResourceType, owner: str | None) -> dict[str, Any]:
    parent = rid.parent
    return dict(subscription_id=rid.subscription.lower(), resource_group=(rid.resource_group or "").lower(),
                type=handler.key, name=rid.name, parent_key=owner or (parent.key if parent else None))


def with_state(body: dict[str, Any], state: str) -> dict[str, Any]:
    body = dict(body)
    body["properties"] = {**(body.get("properties") or {}), "provisioningState": state}
    return body


async def put(ctx: "RequestContext", rid: ResourceId, handler: ResourceType) -> Response:
    return await apply(ctx, rid, handler, await ctx.object_body())


async def apply(ctx: "RequestContext", rid: ResourceId, handler: ResourceType,
                request_body: dict[str, Any]) -> Response:
    """Make `request_body` the resource's desired state (PUT, and PATCH after merging)."""
    services = ctx.services
    resource, created, op = await apply_desired(services, rid, handler, request_body,
                                                f"{ctx.method} by {ctx.caller.app_id}")
    status = handler.created_status if created else 200
    if op is None:
        return JSONResponse(handler.view(resource), status_code=status)
    headers = services.operations.headers(op, ctx.base_url, ctx.api_version, location=False)
    return JSONResponse(handler.view(resource), status_code=status, headers=headers)


async def apply_desired(services: "Services", rid: ResourceId, handler: ResourceType, request_body: dict[str, Any],
                        why: str, *, owner: str | None = None) -> tuple[Resource, bool, Operation | None]:
    """The core of PUT, shared by the REST API and template deployments: validate, store the desired
    state with its operation, launch it. Returns the stored resource, whether it is new, and the
    operation realising it (None for synchronous types).

    `owner`: the key of a resource that owns this one although its id does not say so (a scale set's
    instances and their NICs): it must exist, the row is its child (deleted with it, hidden from
    top-level lists), and the row's type is the handler's rather than the one the id spells."""
    if not handler.name_pattern.match(rid.name):
        raise bad_request("InvalidResourceName", f"Resource name {rid.name} is invalid. {handler.name_rule}")
    async with services.store.read() as tx:
        await require_resource_group(tx, rid.subscription, rid.resource_group or "", for_write=True)
        parent = rid.parent
        if owner is not None:
            if await tx.get_resource(owner) is None:
                raise ArmError(404, "ParentResourceNotFound", f"The resource {owner} that owns {rid} was not found.")
        elif parent is not None and await tx.get_resource(parent.key) is None:
            raise not_found(parent.type, "/".join(parent.names), rid.resource_group)
        existing = await tx.get_resource(rid.key)
    if existing is not None and existing.provisioning_state == "Deleting":
        raise ArmError(409, "Conflict", f"The resource '{rid.name}' is being deleted and cannot be updated.")
    stored = handler.normalise(rid, request_body, existing)
    await handler.validate(services, rid, stored)
    envelope: dict[str, Any] = {"id": str(rid), "name": rid.name, "type": handler.type}
    location: str | None = None
    if handler.tracked:
        if not request_body.get("location") and existing is None:
            raise bad_request("LocationRequired", "The location property is required for this definition.",
                              "location")
        raw_loc = request_body.get("location") or (existing.location if existing else "")
        location = normalise_location(str(raw_loc), handler.type)
        if existing is not None and existing.location and existing.location != location:
            raise ArmError(409, "InvalidResourceLocation",
                           f"The resource '{rid.name}' already exists in location '{existing.location}' in "
                           f"resource group '{rid.resource_group}'. A resource with the same name cannot be "
                           f"created in location '{location}'.")
        envelope.update(location=location, tags=check_tags(request_body.get("tags")))
    body = {**envelope, **stored}
    state = ("Creating" if existing is None else "Updating") if handler.long_running else "Succeeded"
    resource = Resource(key=rid.key, id=str(rid), body=with_state(body, state), provisioning_state=state,
                        location=location, desired_gen=(existing.desired_gen + 1) if existing else 1,
                        observed_gen=existing.observed_gen if existing else 0,
                        created_at=existing.created_at if existing else 0.0, **_scope_fields(rid, handler, owner))
    if not handler.long_running:
        resource.observed_gen = resource.desired_gen
    op = None
    async with services.store.write() as tx:
        await handler.write_through(tx, resource, existing)
        await tx.put_resource(resource)
        await tx.add_event(rid.key, "Accepted" if existing is None else "Updated", why)
        if handler.long_running:
            op = services.operations.new(subscription_id=rid.subscription, namespace=handler.namespace,
                                         location=location or home_location(),
                                         kind="resource.reconcile", resource_key=rid.key,
                                         params={"generation": resource.desired_gen})
            await tx.add_operation(op)
    if op is not None:
        services.operations.launch(op)
    return resource, existing is None, op


async def get(ctx: "RequestContext", rid: ResourceId, handler: ResourceType) -> Response:
    async with ctx.services.store.read() as tx:
        resource = await tx.get_resource(rid.key)
        if resource is None:
            await require_resource_group(tx, rid.subscription, rid.resource_group or "", for_write=False)
            raise not_found(handler.type, "/".join(rid.names), rid.resource_group)
    expand = ctx.query("$expand")
    return JSONResponse(handler.expanded_view(resource, expand) if expand else handler.view(resource))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 merge: what ARM PATCH means for the properties it accepts."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


async def patch(ctx: "RequestContext", rid: ResourceId, handler: ResourceType) -> Response:
    """PATCH merges into the stored body and answers 200 (compute clients accept nothing else)."""
    body = await ctx.object_body()
    async with ctx.services.store.read() as tx:
        existing = await tx.get_resource(rid.key)
        if existing is None:
            await require_resource_group(tx, rid.subscription, rid.resource_group or "", for_write=True)
            raise not_found(handler.type, "/".join(rid.names), rid.resource_group)
    merged = merge_patch(existing.body, body)
    if "tags" in body and body["tags"] is not None:
        merged["tags"] = body["tags"]  # ARM replaces the whole tag set on PATCH
    response = await apply(ctx, rid, handler, merged)
    response.status_code = 200
    return response


async def delete(ctx: "RequestContext", rid: ResourceId, handler: ResourceType) -> Response:
    services = ctx.services
    async with services.store.read() as tx:
        await require_resource_group(tx, rid.subscription, rid.resource_group or "", for_write=False)
        resource = await tx.get_resource(rid.key)
    if resource is None:
        return Response(status_code=204)
    async with services.store.read() as tx:
        await handler.check_delete(tx, resource)
    if not handler.long_running:
        await delete_tree(services, resource)
        return Response(status_code=200)
    return await begin_delete(ctx, rid.key, namespace=handler.namespace, kind="resource.delete") \
        or Response(status_code=204)


async def begin_delete(ctx: "RequestContext", key: str, *, namespace: str, kind: str) -> Response | None:
    """Mark the resource Deleting and start the operation `kind` that removes it: 202 with the
    operation's URLs, or None when the resource is already gone."""
    services = ctx.services
    async with services.store.write() as tx:
        resource = await tx.get_resource(key)
        if resource is None:
            return None
        op = services.operations.new(subscription_id=resource.subscription_id, namespace=namespace,
                                     location=resource.location or home_location(), kind=kind, resource_key=key)
        resource.provisioning_state = "Deleting"
        resource.body = with_state(resource.body, "Deleting")
        await tx.put_resource(resource)
        await tx.add_event(key, "Deleting", f"DELETE by {ctx.caller.app_id}")
        await tx.add_operation(op)
    services.operations.launch(op)
    return Response(status_code=202, headers=services.operations.headers(op, ctx.base_url, ctx.api_version,
                                                                         location=True))


async def list_resources(ctx: "RequestContext", handler: ResourceType, subscription: str,
                         resource_group: str | None, parent: ResourceId | None) -> Response:
    from kumo.arm.paging import keyset_page

    store = ctx.services.store
    if resource_group is not None:
        async with store.read() as tx:
            await require_resource_group(tx, subscription, resource_group, for_write=False)
    if parent is not None:
        async with store.read() as tx:
            if await tx.get_resource(parent.key) is None:
                raise not_found(parent.type, "/".join(parent.names), resource_group)

    rows = await handler.list_rows(ctx.services, parent) if parent is not None else None

    async def fetch(after: str | None, n: int) -> list[Resource]:
        if rows is not None:
            return sorted((r for r in rows if after is None or r.key > after), key=lambda r: r.key)[:n]
        async with store.read() as tx:
            # a top-level list leaves out rows a resource owns (a scale set's instances and their NICs)
            return await tx.list_resources(subscription.lower(), resource_group=resource_group, type=handler.key,
                                           parent_key=parent.key if parent else None, top_level_only=parent is None,
                                           after_key=after, limit=n)

    # `$expand=instanceView`, or a VM list's `statusOnly=true` (each with its instance view)
    expand = ctx.query("$expand") or ("instanceView" if (ctx.query("statusOnly") or "").lower() == "true" else "")
    view = (lambda r: handler.expanded_view(r, expand)) if expand else handler.view
    return JSONResponse(await keyset_page(ctx, fetch, lambda r: r.key, view))


async def run_action(ctx: "RequestContext", rid: ResourceId, handler: ResourceType, action: str,
                     *part: str) -> Response:
    """`…/{resource}/{action}`, or with `part` (a part's name and verb) `…/{resource}/{action}/{name}/{verb}`."""
    method = handler.actions.get(action.lower())
    if method is None:
        raise bad_request("InvalidResourceType" if ctx.method == "GET" else "InvalidAction",
                          f"The resource type '{handler.type}' has no action or child type '{action}'.")
    async with ctx.services.store.read() as tx:
        resource = await tx.get_resource(rid.key)
        if resource is None:
            await require_resource_group(tx, rid.subscription, rid.resource_group or "", for_write=False)
            if action.lower() not in handler.unbound_actions:
                raise not_found(handler.type, "/".join(rid.names), rid.resource_group)
    if resource is None:  # an action that needs no resource yet, e.g. a deployment's validate
        return await getattr(handler, method)(ctx, rid)
    return await getattr(handler, method)(ctx, resource, *part)


def provider_action(providers: ProviderRegistry, namespace: str, action: str) -> tuple[ResourceType, str] | None:
    """The handler and method serving `POST …/providers/{namespace}/{action}`, if a type declares it."""
    ns = providers.namespace(namespace)
    for info in ns.types if ns else ():
        if info.handler is not None and (method := info.handler.provider_actions.get(action.lower())):
            return info.handler, method
    return None


# -- the operations behind PUT and DELETE -------------------------------------------------------

async def delete_tree(services: "Services", resource: Resource) -> None:
    """Remove a resource's children, then its host objects, then its row. Idempotent."""
    async with services.store.read() as tx:
        children = await tx.list_resources(resource.subscription_id, parent_key=resource.key)
    for child in children:
        await delete_tree(services, child)
    handler = services.providers.handler(resource.type)
    if handler is not None:
        await handler.remove(services, resource)
    async with services.store.write() as tx:
        # the row as it is now: a reconcile that ran until remove() took its turn may have added to it
        # (a VM's disk ids), and what goes with the resource must be read from that
        resource = await tx.get_resource(resource.key) or resource
        if handler is not None:
            await handler.unlink(tx, resource)
        await tx.release(resource.id)
        await tx.delete_resource(resource.key)
        await tx.add_event(resource.key, "Deleted", "resource removed")
    if handler is not None:
        await handler.removed(services, resource)


async def reconcile_operation(run: OperationRun) -> None:
    services = run.services
    key = run.op.resource_key
    assert key is not None
    async with services.store.read() as tx:
        resource = await tx.get_resource(key)
    if resource is None or resource.provisioning_state == "Deleting":
        raise ArmError(409, "Conflict", "The resource was deleted before it was provisioned.")
    if resource.desired_gen > int(run.op.params.get("generation", resource.desired_gen)):
        return None  # a newer PUT superseded this one; its own operation carries on
    handler = services.providers.handler(resource.type)
    assert handler is not None
    try:
        await handler.realise(services, resource)
    except ArmError as e:
        state = getattr(e, "state", "Failed")  # a canceled deployment ends Canceled, not Failed
        await _set_state(services, key, resource.desired_gen, state, f"{e.code}: {e.message}")
        raise
    except Exception as e:  # a bug or a host failure: the resource says Failed, never Creating forever
        await _set_state(services, key, resource.desired_gen, "Failed", f"InternalServerError: {e}")
        raise
    await _set_state(services, key, resource.desired_gen, "Succeeded", "provisioned")
    return None


async def _set_state(services: "Services", key: str, generation: int, state: str, message: str) -> None:
    async with services.store.write() as tx:
        current = await tx.get_resource(key)
        if current is None or current.desired_gen != generation:
            return
        current.provisioning_state = state
        current.body = with_state(current.body, state)
        if state == "Succeeded":
            current.observed_gen = generation
        await tx.put_resource(current)
        await tx.add_event(key, state, message)


async def delete_operation(run: OperationRun) -> None:
    key = run.op.resource_key
    assert key is not None
    async with run.services.store.read() as tx:
        resource = await tx.get_resource(key)
    if resource is None:
        return None
    try:
        await delete_tree(run.services, resource)
    except Exception as e:  # as on Azure, a delete that failed leaves the resource Failed, never Deleting forever
        message = f"{e.code}: {e.message}" if isinstance(e, ArmError) else f"InternalServerError: {e}"
        await _set_state(run.services, key, resource.desired_gen, "Failed", f"delete failed: {message}")
        raise
    return None


def register_operations(services: "Services") -> None:
    services.operations.register("resource.reconcile", reconcile_operation)
    services.operations.register("resource.delete", delete_operation)
