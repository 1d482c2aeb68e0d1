"""Microsoft.Network/networkInterfaces: IP configurations in subnets (dynamic or static private IPs,
Azure's rule that the first four addresses and the last are reserved), a public IP, an NSG and a
MAC address. On the host a NIC becomes an endpoint on its subnet's bridge once something attaches
to it: a VM's tap, a container group's namespace, or (kumo's own extension, for learning and tests)
a namespace of the user's via the `attachHostEndpoint` action."""

from __future__ import annotations

import ipaddress
import secrets
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.providers.network.common import (NetworkType, canonical, child_entry, ipv4_address, new_etag, props_of,
                                           ref, reference, set_backref)
from kumo.providers.network.addresses import allocate_private, link_public_ip
from kumo.providers.network.load_balancers import NAT_RULES, POOLS, sync_members
from kumo.providers.network.virtual_networks import SUBNET_TYPE, SUBNETS
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

IPCONFIG_TYPE = "Microsoft.Network/networkInterfaces/ipConfigurations"
POOL_TYPE = "Microsoft.Network/loadBalancers/backendAddressPools"
NAT_TYPE = "Microsoft.Network/loadBalancers/inboundNatRules"
NAT_POOL_TYPE = "Microsoft.Network/loadBalancers/inboundNatPools"
PIP_TYPE = "Microsoft.Network/publicIPAddresses"
NSG_TYPE = "Microsoft.Network/networkSecurityGroups"


def new_mac() -> str:
    """Azure's format and Microsoft's OUI, as Azure shows NIC MACs: 00-0D-3A-xx-xx-xx."""
    return "-".join(["00", "0D", "3A", *(f"{b:02X}" for b in secrets.token_bytes(3))])


def _ipconfig(nic_id: str, raw: Any, index: int) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise bad_request("InvalidRequestFormat", f"IP configuration {index} needs a name.",
                          "properties.ipConfigurations")
    props = props_of(raw)
    subnet = reference(props.get("subnet"), "subnet", expect_type=SUBNET_TYPE)
    if subnet is None:
        raise bad_request("InvalidRequestFormat", f"IP configuration {raw['name']} of {nic_id} needs a subnet.",
                          "properties.ipConfigurations.subnet")
    out: dict[str, Any] = {"privateIPAddressVersion": "IPv4", "subnet": ref(subnet)}
    address = props.get("privateIPAddress")
    method = canonical(props.get("privateIPAllocationMethod"), ("Dynamic", "Static"), "privateIPAllocationMethod",
                       "Dynamic")
    if method == "Static":
        if not address:
            raise bad_request("InvalidRequestFormat",
                              f"IP configuration {raw['name']} is Static but has no privateIPAddress.",
                              "properties.ipConfigurations.privateIPAddress")
        out["privateIPAddress"] = str(ipv4_address(address, "privateIPAddress"))
    out["privateIPAllocationMethod"] = method
    pip = reference(props.get("publicIPAddress"), "publicIPAddress", expect_type=PIP_TYPE)
    if pip is not None:
        out["publicIPAddress"] = ref(pip)
    if props.get("primary") is not None:
        out["primary"] = str(props["primary"]).lower() == "true"
    for field, expect in (("loadBalancerBackendAddressPools", POOL_TYPE), ("loadBalancerInboundNatRules", NAT_TYPE),
                          ("loadBalancerInboundNatPools", NAT_POOL_TYPE)):
        refs = props.get(field) or []
        if not isinstance(refs, list):
            raise bad_request("InvalidRequestFormat", f"'{field}' must be an array.", field)
        if refs:
            out[field] = [ref(reference(r, field, expect_type=expect)) for r in refs]  # type: ignore[arg-type]
    return child_entry(nic_id, "ipConfigurations", IPCONFIG_TYPE, raw["name"], out, new_etag())


def _configs(resource: Resource | None) -> dict[str, dict[str, Any]]:
    if resource is None:
        return {}
    return {c["name"].lower(): c for c in (resource.body.get("properties") or {}).get("ipConfigurations") or []}


def _ref_id(cfg: dict[str, Any] | None, field: str) -> str | None:
    value = (cfg or {}).get("properties", {}).get(field)
    return value["id"] if value else None


def _ref_ids(cfg: dict[str, Any] | None, field: str) -> dict[str, str]:
    return {r["id"].lower(): r["id"] for r in ((cfg or {}).get("properties") or {}).get(field) or []}


async def _link_load_balancers(tx: Tx, cfg_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    """Keep a load balancer's pools (`backendIPConfigurations`), NAT rules (`backendIPConfiguration`) and
    NAT pools (the rules they derive per member) in step with the ip configurations that join them,
    and the members' frontend ports with them."""
    touched: dict[str, dict[str, dict[str, bool]]] = {}  # load balancer key -> NAT pool joins and leaves
    field = "loadBalancerBackendAddressPools"
    before, after = _ref_ids(old, field), _ref_ids(new, field)
    for key in before.keys() ^ after.keys():
        await _pool_member(tx, after.get(key) or before[key], cfg_id, key in after,
                           primary=bool((new or {}).get("properties", {}).get("primary", True)))
        touched.setdefault(key.rsplit("/", 2)[0], {})
    field = "loadBalancerInboundNatPools"
    before, after = _ref_ids(old, field), _ref_ids(new, field)
    for key in before.keys() ^ after.keys():
        lb_key, _, name = key.rsplit("/", 2)
        touched.setdefault(lb_key, {}).setdefault(name, {})[cfg_id] = key in after
    field = "loadBalancerInboundNatRules"
    before, after = _ref_ids(old, field), _ref_ids(new, field)
    for key in before.keys() ^ after.keys():
        rule = await tx.get_resource(key)
        if rule is None:
            if key in after:
                raise bad_request("InvalidResourceReference", f"Resource {after[key]} referenced by resource "
                                  f"{cfg_id} was not found.")
            continue
        user = rule.body["properties"].get("backendIPConfiguration")
        if key in after and user and user["id"].lower() != cfg_id.lower():
            raise bad_request("InboundNatRuleInUse", f"Inbound NAT rule {rule.id} is already used by {user['id']}.")
        await set_backref(tx, key, "backendIPConfiguration", cfg_id, key in after, single=True, inline=NAT_RULES)
    for lb_key, changes in sorted(touched.items()):
        await sync_members(tx, lb_key, changes)


async def _pool_member(tx: Tx, pool_id: str, cfg_id: str, present: bool, primary: bool = True) -> None:
    pool = await tx.get_resource(pool_id.lower())
    if present and pool is None:
        raise bad_request("InvalidResourceReference", f"Resource {pool_id} referenced by resource {cfg_id} was not "
                          "found.")
    if present and not primary and pool and pool.body.get("properties", {}).get("outboundRules"):
        raise bad_request("OutboundRuleCannotBeUsedWithBackendAddressPoolThatIsReferencedBySecondaryIpConfigs",
                          f"Backend address pool {pool_id} is used by outbound rule "
                          f"{pool.body['properties']['outboundRules'][0]['id']} and cannot take the secondary ip "
                          f"configuration {cfg_id}.")
    await set_backref(tx, pool_id.lower(), "backendIPConfigurations", cfg_id, present, inline=POOLS)


async def _link_nsg(tx: Tx, nic_id: str, old: str | None, new: str | None) -> None:
    if old and (not new or old.lower() != new.lower()):
        await set_backref(tx, old.lower(), "networkInterfaces", nic_id, False)
    if new:
        if await tx.get_resource(new.lower()) is None:
            raise bad_request("InvalidResourceReference", f"Resource {new} referenced by resource {nic_id} was not "
                              "found.")
        await set_backref(tx, new.lower(), "networkInterfaces", nic_id, True)


class NetworkInterfaces(NetworkType):
    # 1. the ARM type
    type_path = ("networkInterfaces",)
    actions = {"attachhostendpoint": "attach_host_endpoint", "detachhostendpoint": "detach_host_endpoint"}

    def __init__(self, public_pool: ipaddress.IPv4Network) -> None:
        self.public_pool = public_pool

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = props_of(body)
        raw = props.get("ipConfigurations")
        if not isinstance(raw, list) or not raw:
            raise bad_request("InvalidRequestFormat", f"Network interface {rid.name} needs at least one IP "
                              "configuration.", "properties.ipConfigurations")
        configs = [_ipconfig(str(rid), c, i) for i, c in enumerate(raw)]
        names = [c["name"].lower() for c in configs]
        if len(set(names)) != len(names):
            raise bad_request("DuplicateResourceName", f"Network interface {rid.name} has two IP configurations with "
                              "the same name.", "properties.ipConfigurations")
        primaries = [c for c in configs if c["properties"].get("primary")]
        if len(primaries) > 1:
            raise bad_request("OnlyOnePrimaryIpConfigurationAllowed",
                              f"Network interface {rid.name} has more than one primary IP configuration.")
        for i, c in enumerate(configs):
            c["properties"]["primary"] = c is primaries[0] if primaries else i == 0
        vnets = {c["properties"]["subnet"]["id"].lower().split("/subnets/")[0] for c in configs}
        if len(vnets) > 1:
            raise bad_request("IpConfigurationsOnSameNicCannotUseDifferentVnets",
                              f"IP configurations of network interface {rid.name} reference subnets of different "
                              "virtual networks; all must be in one virtual network.")
        nsg = reference(props.get("networkSecurityGroup"), "properties.networkSecurityGroup", expect_type=NSG_TYPE)
        old = (existing.body.get("properties") or {}) if existing else {}
        out: dict[str, Any] = {
            "ipConfigurations": configs,
            "dnsSettings": {"dnsServers": list((props.get("dnsSettings") or {}).get("dnsServers") or []),
                            "appliedDnsServers": []},
            "macAddress": old.get("macAddress") or new_mac(),
            "enableAcceleratedNetworking": bool(props.get("enableAcceleratedNetworking", False)),
            "enableIPForwarding": bool(props.get("enableIPForwarding", False)),
            "primary": True, "nicType": "Standard", "hostedWorkloads": [], "tapConfigurations": [],
        }
        if nsg is not None:
            out["networkSecurityGroup"] = ref(nsg)
        return {"properties": out}

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        props = resource.body["properties"]
        old_props = (existing.body.get("properties") or {}) if existing else {}
        if old_props.get("virtualMachine"):
            props["virtualMachine"] = old_props["virtualMachine"]
        old_cfgs, new_cfgs = _configs(existing), {c["name"].lower(): c for c in props["ipConfigurations"]}
        await tx.release(resource.id)  # re-claimed below, keeping each address where the rules allow
        for name, cfg in new_cfgs.items():
            old = old_cfgs.get(name)
            same_subnet = old is not None and _ref_id(old, "subnet").lower() == _ref_id(cfg, "subnet").lower()
            await allocate_private(tx, cfg, old["properties"].get("privateIPAddress") if same_subnet and old else None)
        for name in old_cfgs.keys() | new_cfgs.keys():
            old, new = old_cfgs.get(name), new_cfgs.get(name)
            cfg_id = (new or old)["id"]  # type: ignore[index]
            old_subnet, new_subnet = _ref_id(old, "subnet"), _ref_id(new, "subnet")
            if old_subnet and (not new_subnet or old_subnet.lower() != new_subnet.lower()):
                await set_backref(tx, old_subnet.lower(), "ipConfigurations", cfg_id, False, inline=SUBNETS)
            if new_subnet:
                await set_backref(tx, new_subnet.lower(), "ipConfigurations", cfg_id, True, inline=SUBNETS)
            await link_public_ip(tx, self.public_pool, new or old, _ref_id(old, "publicIPAddress"),  # type: ignore[arg-type]
                                  _ref_id(new, "publicIPAddress"))
            await _link_load_balancers(tx, cfg_id, old, new)
        await _link_nsg(tx, resource.id, _ref_id({"properties": old_props}, "networkSecurityGroup"),
                        _ref_id({"properties": props}, "networkSecurityGroup"))

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        vm = (resource.body.get("properties") or {}).get("virtualMachine")
        if vm:
            raise bad_request("NicInUse", f"Network Interface {resource.id} is used by existing resource {vm['id']}. "
                              "In order to delete the network interface, it must be dissociated from the resource.")

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        for cfg in _configs(resource).values():
            await _link_load_balancers(tx, cfg["id"], cfg, None)
            if subnet := _ref_id(cfg, "subnet"):
                await set_backref(tx, subnet.lower(), "ipConfigurations", cfg["id"], False, inline=SUBNETS)
            await link_public_ip(tx, self.public_pool, cfg, _ref_id(cfg, "publicIPAddress"), None)
        await _link_nsg(tx, resource.id, _ref_id(resource.body, "networkSecurityGroup"), None)

    # 3. host effects: the endpoint (if attached) follows the NIC's subnet, addresses and rules
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_vnet_of_nic(resource.key)

    async def removed(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_vnet_of_nic(resource.key)

    # 4. actions (kumo's own): plug a network namespace of the host into the NIC's subnet
    async def attach_host_endpoint(self, ctx: "RequestContext", resource: Resource) -> Response:
        if ctx.method != "POST":
            raise ArmError(405, "MethodNotAllowed", "attachHostEndpoint is a POST action.")
        if resource.provisioning_state not in ("Succeeded", "Updating"):
            raise ArmError(409, "NicNotReady", f"Network interface {resource.name} is {resource.provisioning_state}; "
                           "attach once it has Succeeded.")
        body = await ctx.json_body(required=False) or {}
        kind = body.get("kind", "netns") if isinstance(body, dict) else None
        if kind == "netns":
            return JSONResponse(await ctx.services.network.attach_netns(resource.key))
        if kind == "tap":  # for a QEMU of your own: run it in the returned vnetNamespace with this tap
            return JSONResponse(await ctx.services.network.attach_tap(resource.key))
        raise bad_request("InvalidRequestContent", "'kind' must be 'netns' (a namespace with eth0) or 'tap'.", "kind")

    async def detach_host_endpoint(self, ctx: "RequestContext", resource: Resource) -> Response:
        if ctx.method != "POST":
            raise ArmError(405, "MethodNotAllowed", "detachHostEndpoint is a POST action.")
        await ctx.services.network.detach(resource.key)
        return Response(status_code=204)
