"""Routing of ARM paths, case-insensitive on every segment, to the handlers that serve them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from kumo.arm import ids
from kumo.arm.context import RequestContext
from kumo.arm.errors import ArmError, bad_request
from kumo.providers import lifecycle
from kumo.providers.base import ResourceType
from kumo.providers.resources import generic, provider_listing, resource_groups, subscriptions
from kumo.providers.resources.provider_listing import require_registered

READ_METHODS = ("GET", "HEAD")
OPERATION_SEGMENTS = ("operations", "operationstatuses", "operationresults")


def method_not_allowed(ctx: RequestContext) -> ArmError:
    return ArmError(405, "MethodNotAllowed",
                    f"The requested resource does not support http method '{ctx.method}'.")


def no_route(ctx: RequestContext) -> ArmError:
    return ArmError(404, "NotFound", f"No HTTP resource was found that matches the request URI "
                    f"'{ctx.base_url}{ctx.request.url.path}'.")


async def dispatch(ctx: RequestContext) -> Response:
    path = ctx.request.url.path
    m = ctx.method
    if ids.split_path(path.lower()) == ["tenants"]:
        return await _only(ctx, "GET", subscriptions.list_tenants(ctx))
    p = ids.parse(path)
    if p is None:
        raise no_route(ctx)
    if p.subscription is None:
        if p.tail == () and p.namespace is None:
            return await _only(ctx, "GET", subscriptions.list_subscriptions(ctx))
        if p.tail == ("providers",):
            return await _only(ctx, "GET", provider_listing.list_tenant_level(ctx))
        if p.namespace is not None and not p.rest:
            return await _only(ctx, "GET", provider_listing.get_tenant_level(ctx, p.namespace))
        raise no_route(ctx)
    sub = p.subscription
    if (ext := ids.extension(p)) is not None:
        return await _extension(ctx, ext)
    if p.namespace is None and p.resource_group is None:
        return await _subscription_level(ctx, sub, p.tail)
    if p.namespace is None:
        return await _resource_group_level(ctx, sub, p.resource_group or "", p.tail)
    if p.resource_group is None:
        return await _subscription_provider_level(ctx, sub, p.namespace, p.rest)
    await ctx.services.auth.authorize(ctx.caller, sub, f"{p.namespace}/{'read' if m in READ_METHODS else 'write'}",
                                      write=m not in READ_METHODS)
    return await _resource(ctx, sub, p.resource_group, p.namespace, p.rest)


async def _only(ctx: RequestContext, method: str, handler) -> Response:  # type: ignore[no-untyped-def]
    if ctx.method != method and not (method == "GET" and ctx.method == "HEAD"):
        handler.close()
        raise method_not_allowed(ctx)
    return await handler


async def _subscription_level(ctx: RequestContext, sub: str, tail: tuple[str, ...]) -> Response:
    if tail == ():
        return await _only(ctx, "GET", subscriptions.get_subscription(ctx, sub))
    if tail == ("locations",):
        return await _only(ctx, "GET", subscriptions.list_locations(ctx, sub))
    if tail == ("providers",):
        return await _only(ctx, "GET", provider_listing.list_for_subscription(ctx, sub))
    await ctx.services.auth.authorize(ctx.caller, sub, "Microsoft.Resources/subscriptions/resourceGroups/read",
                                      write=ctx.method not in READ_METHODS)
    if tail == ("resourcegroups",):
        return await _only(ctx, "GET", resource_groups.list_groups(ctx, sub))
    if tail == ("resources",):
        return await _only(ctx, "GET", generic.list_generic(ctx, sub, None))
    raise no_route(ctx)


async def _resource_group_level(ctx: RequestContext, sub: str, rg: str, tail: tuple[str, ...]) -> Response:
    m = ctx.method
    action = "Microsoft.Resources/subscriptions/resourceGroups/" + (
        "read" if m in READ_METHODS else "delete" if m == "DELETE" else "write")
    await ctx.services.auth.authorize(ctx.caller, sub, action, write=m not in READ_METHODS,
                                      scope=f"/subscriptions/{sub}/resourceGroups/{rg}")
    if tail == ("resources",):
        return await _only(ctx, "GET", generic.list_generic(ctx, sub, rg))
    if tail:
        raise no_route(ctx)
    return await _by_method(ctx, RESOURCE_GROUP_METHODS, sub, rg)


async def _subscription_provider_level(ctx: RequestContext, sub: str, namespace: str,
                                       rest: tuple[str, ...]) -> Response:
    lower = tuple(r.lower() for r in rest)
    if not rest:
        return await _only(ctx, "GET", provider_listing.get_for_subscription(ctx, sub, namespace))
    if lower in (("register",), ("unregister",)):
        return await _only(ctx, "POST", provider_listing.set_registration(ctx, sub, namespace, lower[0] == "register"))
    if len(rest) == 4 and lower[0] == "locations" and lower[2] in OPERATION_SEGMENTS:
        return await _only(ctx, "GET", _operation(ctx, sub, rest[3], result=lower[2] == "operationresults"))
    if len(rest) == 1 and (action := lifecycle.provider_action(ctx.services.providers, namespace, rest[0])):
        if ctx.method != "POST":
            raise method_not_allowed(ctx)
        await ctx.services.auth.authorize(ctx.caller, sub, f"{namespace}/{rest[0]}/action", write=False)
        return await getattr(action[0], action[1])(ctx, sub)
    if read := ctx.services.providers.provider_read(namespace, rest):  # e.g. …/locations/{loc}/vmSizes
        if ctx.method not in READ_METHODS:
            raise method_not_allowed(ctx)
        await ctx.services.auth.authorize(ctx.caller, sub, read[0], write=False)
        return await read[1](ctx, sub)
    handler = ctx.services.providers.handler(f"{namespace}/{rest[0]}")
    if len(rest) == 1 and handler is not None:
        await ctx.services.auth.authorize(ctx.caller, sub, f"{handler.type}/read", write=False)
        return await _only(ctx, "GET", lifecycle.list_resources(ctx, handler, sub, None, None))
    raise _unknown_type(ctx, namespace, rest[0])


async def _operation(ctx: RequestContext, sub: str, op_id: str, *, result: bool) -> Response:
    await ctx.services.auth.authorize(ctx.caller, sub, "Microsoft.Resources/operations/read", write=False)
    async with ctx.services.store.read() as tx:
        op = await tx.get_operation(op_id)
    if op is None or op.subscription_id.lower() != sub.lower():
        raise ArmError(404, "OperationNotFound", f"The operation '{op_id}' could not be found.")
    ops = ctx.services.operations
    if result:
        return ops.result_response(op, ctx.base_url, ctx.api_version)
    return ops.status_response(op, ctx.base_url, ctx.api_version)


async def _extension(ctx: RequestContext, ext: ids.Extension) -> Response:
    """`{resource id}/providers/{namespace}/…`: the handler `services.extensions` holds for that namespace,
    once the caller's role on the resource's subscription allows the read or write."""
    handler = ctx.services.extensions.get(ext.namespace.lower())
    if handler is None or not ext.rest:
        raise _unknown_type(ctx, ext.namespace, ext.rest[0] if ext.rest else "")
    m = ctx.method
    await ctx.services.auth.authorize(ctx.caller, ext.scope.subscription,
                                      f"{ext.namespace}/{ext.rest[0]}/{'read' if m in READ_METHODS else 'write'}",
                                      write=m not in READ_METHODS, scope=str(ext.scope))
    return await handler(ctx, ext)


def _unknown_type(ctx: RequestContext, namespace: str, type_name: str) -> ArmError:
    if ctx.services.providers.namespace(namespace) is None:
        return bad_request("InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid.")
    return bad_request("InvalidResourceType", f"The resource type '{type_name}' could not be found in the "
                       f"namespace '{namespace}' for api version '{ctx.api_version}'.")


def _resolve(ctx: RequestContext, namespace: str, rest: tuple[str, ...]) -> tuple[ResourceType, int]:
    """The handler for the deepest type named in `rest`, and how many type segments it used."""
    types = list(rest[0::2])
    for depth in range(len(types), 0, -1):
        handler = ctx.services.providers.handler("/".join((namespace, *types[:depth])))
        if handler is not None:
            return handler, depth
    raise _unknown_type(ctx, namespace, types[0])


async def _resource(ctx: RequestContext, sub: str, rg: str, namespace: str, rest: tuple[str, ...]) -> Response:
    if not rest:
        raise _unknown_type(ctx, namespace, "")
    handler, depth = _resolve(ctx, namespace, rest)
    m = ctx.method
    if m not in READ_METHODS:
        await require_registered(ctx, sub, handler.namespace)
    used = depth * 2  # segments covered by type/name pairs of the resolved type
    if len(rest) == used - 1:  # ends at the type: a collection
        parent = None
        if depth > 1:
            parent = ids.ResourceId(sub, rg, namespace, tuple(rest[0:used - 2:2]), tuple(rest[1:used - 2:2]))
        return await _only(ctx, "GET", lifecycle.list_resources(ctx, handler, sub, rg, parent))
    rid = ids.ResourceId(sub, rg, namespace, tuple(rest[0:used:2]), tuple(rest[1:used:2]))
    extra = rest[used:]
    if len(extra) == 1:  # an action (POST) or a read-only sub-view (GET), e.g. /instanceView
        return await lifecycle.run_action(ctx, rid, handler, extra[0])
    if len(extra) == 3 and extra[0].lower() in handler.actions:  # a part's action: …/containers/{c}/logs
        return await lifecycle.run_action(ctx, rid, handler, extra[0], extra[1], extra[2])
    if extra:
        raise _unknown_type(ctx, namespace, "/".join((*rid.types, extra[0])))
    if handler.read_only and ctx.method not in READ_METHODS:
        raise method_not_allowed(ctx)
    return await _by_method(ctx, RESOURCE_METHODS, rid, handler)


async def _by_method(ctx: RequestContext, table: dict[str, Callable[..., Awaitable[Response]]],
                     *args: Any) -> Response:
    handler = table.get(ctx.method)
    if handler is None:
        raise method_not_allowed(ctx)
    return await handler(ctx, *args)


RESOURCE_GROUP_METHODS: dict[str, Callable[..., Awaitable[Response]]] = {
    "PUT": resource_groups.put, "GET": resource_groups.get, "HEAD": resource_groups.head,
    "PATCH": resource_groups.patch, "DELETE": resource_groups.delete,
}
RESOURCE_METHODS: dict[str, Callable[..., Awaitable[Response]]] = {
    "PUT": lifecycle.put, "GET": lifecycle.get, "HEAD": lifecycle.get,
    "PATCH": lifecycle.patch, "DELETE": lifecycle.delete,
}
