"""Microsoft.ContainerInstance/containerGroups: containers that share one network namespace, pulled
from a registry and run by an OCI runtime (see controllers/containers.py). PUT answers at once and
the operation ends when every container has started (or the group failed); `instanceView` follows
what really happens: pulls, starts, exits, restarts and OOM kills."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request, not_found
from kumo.arm.ids import ResourceId
from kumo.providers.base import ResourceType
from kumo.providers.container_instance import schema
from kumo.providers.network.addresses import allocate_private
from kumo.providers.network.public_ips import allocate_address
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

TYPE_KEY = "microsoft.containerinstance/containergroups"
INTERNAL = "kumo"  # top-level body key for what only kumo sees (internal address, power state)
# Public groups live in a network of kumo's own (one per kumo), each behind its public IP.
CONTAINER_NET_POOL = "kumo:container-net"
CONTAINER_NET = ipaddress.IPv4Network("10.240.0.0/16")
DELEGATION = "microsoft.containerinstance/containergroups"


def internal(resource: Resource) -> dict[str, Any]:
    return resource.body.setdefault(INTERNAL, {})


class ContainerGroups(ResourceType):
    # 1. the ARM type
    namespace = "Microsoft.ContainerInstance"
    type_path = ("containerGroups",)
    api_versions = ("2024-11-01-preview", "2024-10-01-preview", "2024-05-01-preview", "2023-05-01",
                    "2022-10-01-preview", "2022-09-01", "2021-10-01", "2021-09-01", "2021-03-01", "2019-12-01",
                    "2018-10-01")
    name_pattern = schema.GROUP_NAME
    name_rule = ("A valid name consists of lower case alphanumeric characters or '-', starts and ends with an "
                 "alphanumeric character, and is 1-63 characters long.")

    def __init__(self, public_pool: ipaddress.IPv4Network, quota: int) -> None:
        self.public_pool = public_pool
        self.quota = quota  # container groups per subscription and location

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        location = str(body.get("location") or (existing.location if existing else "") or "").replace(" ", "").lower()
        previous = (existing.body.get("properties") or {}) if existing else None
        props = schema.normalise_group(rid.name, location, body, previous)
        out: dict[str, Any] = {"properties": props}
        for key in ("zones", "identity"):
            if body.get(key):
                out[key] = body[key]
        if existing is not None:
            out[INTERNAL] = dict(existing.body.get(INTERNAL) or {})
            out["properties"]["instanceView"] = (existing.body.get("properties") or {}).get("instanceView")
            for new, old in zip(props["containers"], previous["containers"] if previous else [], strict=False):
                if new["name"] == old["name"] and "instanceView" in old.get("properties", {}):
                    new["properties"]["instanceView"] = old["properties"]["instanceView"]
        return out

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        props = body["properties"]
        label = (props.get("ipAddress") or {}).get("dnsNameLabel")
        async with services.store.read() as tx:
            for s in props.get("subnetIds", []):
                subnet = await tx.get_resource(s["id"].lower())
                if subnet is None:
                    raise bad_request("InvalidResourceReference", f"The subnet {s['id']} was not found.",
                                      "properties.subnetIds")
                delegations = (subnet.body.get("properties") or {}).get("delegations") or []
                if not any((d.get("properties") or {}).get("serviceName", "").lower() == DELEGATION
                           for d in delegations):
                    raise bad_request("SubnetMissingRequiredDelegation", f"Subnet {s['id']} must be delegated to "
                                      "'Microsoft.ContainerInstance/containerGroups' to host container groups.",
                                      "properties.subnetIds")
            if label:
                fqdn = props["ipAddress"]["fqdn"]
                for other in await tx.resources_of_type(TYPE_KEY):
                    if other.key != rid.key and (other.body["properties"].get("ipAddress") or {}).get("fqdn") == fqdn:
                        raise bad_request("DnsNameLabelAlreadyInUse", f"The DNS name label '{label}' is already "
                                          f"used in this region ({fqdn}); pick another.",
                                          "properties.ipAddress.dnsNameLabel")

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        if existing is None:
            sub, loc = resource.subscription_id, resource.location
            count = sum(1 for g in await tx.resources_of_type(TYPE_KEY)
                        if g.subscription_id == sub and g.location == loc)
            if count >= self.quota:
                raise ArmError(409, "ContainerGroupQuotaReached",
                               f"Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota "
                               f"'ContainerGroups' exceeded in region '{loc}'. Limit: '{self.quota}', Usage: "
                               f"'{count}' Requested: '1'. (kumo: start kumo with --container-group-quota to "
                               "change it.)")
        props = resource.body["properties"]
        state = internal(resource)
        old_state = (existing.body.get(INTERNAL) or {}) if existing else {}
        await tx.release(resource.id)  # addresses are claimed again below: kept if still wanted
        subnets = props.get("subnetIds") or []
        if subnets:
            cfg = {"id": f"{resource.id}/ipConfigurations/default",
                   "properties": {"subnet": subnets[0], "privateIPAllocationMethod": "Dynamic"}}
            await allocate_private(tx, cfg, old_state.get("privateIP") if old_state.get("subnet") ==
                                   subnets[0]["id"].lower() else None)
            state.update(privateIP=cfg["properties"]["privateIPAddress"], subnet=subnets[0]["id"].lower())
            if "ipAddress" in props:
                props["ipAddress"]["ip"] = state["privateIP"]
            return
        state.pop("subnet", None)
        state["privateIP"] = await _claim_internal(tx, resource.id, old_state.get("privateIP"))
        if "ipAddress" in props:
            props["ipAddress"]["ip"] = await allocate_address(tx, self.public_pool, resource.id,
                                                              props["ipAddress"].get("ip"))

    # 3. GET shape: secrets are write-only, kumo's own bookkeeping is not shown
    def view(self, resource: Resource) -> dict[str, Any]:
        body = {k: v for k, v in resource.body.items() if k != INTERNAL}
        body["properties"] = schema.public_view(body.get("properties") or {})
        return body

    # 4. host effects
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.containers.ensure(resource)

    async def remove(self, services: "Services", resource: Resource) -> None:
        await services.containers.remove(resource)

    async def removed(self, services: "Services", resource: Resource) -> None:
        await services.containers.removed(resource)

    actions = {"start": "start", "stop": "stop", "restart": "restart", "containers": "container_action"}

    async def start(self, ctx: "RequestContext", resource: Resource) -> Response:
        return await ctx.services.containers.begin_start(ctx, resource)

    async def stop(self, ctx: "RequestContext", resource: Resource) -> Response:
        await ctx.services.containers.stop(resource.key)
        return Response(status_code=204)

    async def restart(self, ctx: "RequestContext", resource: Resource) -> Response:
        await ctx.services.containers.restart(resource.key)
        return Response(status_code=204)

    # POST/GET …/containers/{name}/{logs|exec|attach}
    async def container_action(self, ctx: "RequestContext", resource: Resource, name: str | None = None,
                               verb: str | None = None) -> Response:
        if name is None or verb is None:
            raise bad_request("InvalidAction", "Use …/containers/{name}/logs, /exec or /attach.")
        containers = {c["name"]: c for c in resource.body["properties"]["containers"]}
        if name not in containers:
            raise not_found("Microsoft.ContainerInstance/containerGroups/containers", f"{resource.name}/{name}",
                            resource.resource_group)
        controller = ctx.services.containers
        verb = verb.lower()
        if verb == "logs" and ctx.method == "GET":
            tail = ctx.query("tail")
            try:
                lines = int(tail) if tail not in (None, "") else None
            except ValueError:
                raise bad_request("InvalidRequestParameter", "'tail' must be an integer.", "tail") from None
            timestamps = (ctx.query("timestamps") or "").lower() == "true"
            return JSONResponse({"content": await controller.logs(resource, name, lines, timestamps)})
        if verb == "exec" and ctx.method == "POST":
            body = await ctx.object_body()
            command = body.get("command")
            if not isinstance(command, str) or not command.strip():
                raise bad_request("InvalidRequestContent", "'command' must be a non-empty string.", "command")
            size = body.get("terminalSize") or {}
            session = controller.new_session(resource, name, "exec", command, int(size.get("rows") or 24),
                                             int(size.get("cols") or 80))
            return JSONResponse(session.response(ctx.base_url))
        if verb == "attach" and ctx.method == "POST":
            session = controller.new_session(resource, name, "attach", "", 24, 80)
            return JSONResponse(session.response(ctx.base_url))
        raise bad_request("InvalidAction", f"The container action '{verb}' ({ctx.method}) is not supported.")


async def _claim_internal(tx: Tx, owner: str, previous: str | None) -> str:
    """An address in kumo's own container network for a group that is not in a VNet."""
    first, last = int(CONTAINER_NET.network_address) + 4, int(CONTAINER_NET.broadcast_address) - 1
    if previous and await tx.claim(CONTAINER_NET_POOL, int(ipaddress.IPv4Address(previous)), owner):
        return previous
    taken = await tx.allocated(CONTAINER_NET_POOL)
    for value in range(first, last + 1):
        if value not in taken and await tx.claim(CONTAINER_NET_POOL, value, owner):
            return str(ipaddress.IPv4Address(value))
    raise ArmError(409, "ContainerGroupQuotaReached", "kumo's container network has no free address left.")
