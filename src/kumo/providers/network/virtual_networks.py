"""Microsoft.Network/virtualNetworks and their subnets. A VNet's inline `subnets` and its child
`…/subnets/{name}` resources are one set, kept in sync in each writer's transaction. On the host a
VNet is its own network namespace with a bridge per subnet (see kumo.controllers.network)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.providers.network.common import (InlineChildren, NetworkType, child_entry, ipv4_network, new_etag,
                                           props_of, ref, reference, set_backref)
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

SUBNET_TYPE = "Microsoft.Network/virtualNetworks/subnets"
NSG_TYPE = "Microsoft.Network/networkSecurityGroups"
SUBNETS = InlineChildren("subnets", SUBNET_TYPE)
# Delegations Azure knows, with the actions each grants (what `az network vnet subnet update
# --delegations` and ACI expect to read back).
DELEGATION_ACTIONS = {
    "microsoft.containerinstance/containergroups": ["Microsoft.Network/virtualNetworks/subnets/action"],
}
SUBNET_KEEP = ("serviceEndpoints", "privateEndpointNetworkPolicies", "privateLinkServiceNetworkPolicies",
               "defaultOutboundAccess", "sharingScope")


def subnet_prefix(props: dict[str, Any], owner: str) -> ipaddress.IPv4Network:
    raw = props.get("addressPrefix")
    if raw is None and props.get("addressPrefixes"):
        raw = props["addressPrefixes"][0]
    if raw is None:
        raise bad_request("InvalidRequestFormat", f"Subnet {owner} must have an addressPrefix.",
                          "properties.addressPrefix")
    net = ipv4_network(raw, "properties.addressPrefix", owner)
    if net.prefixlen > 29:
        raise bad_request("NetcfgInvalidSubnet", f"Subnet {owner} is not valid: the smallest supported subnet is "
                          f"a /29 (Azure reserves five addresses in each), not /{net.prefixlen}.",
                          "properties.addressPrefix")
    return net


def _delegations(subnet_id: str, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("InvalidRequestFormat", "'delegations' must be an array.", "properties.delegations")
    out = []
    for i, d in enumerate(raw):
        props = props_of(d) if isinstance(d, dict) else {}
        service = props.get("serviceName") or (d.get("serviceName") if isinstance(d, dict) else None)
        if not isinstance(service, str) or "/" not in service:
            raise bad_request("InvalidServiceNameOnDelegation",
                              f"Delegation {i} of subnet {subnet_id} needs a serviceName such as "
                              "'Microsoft.ContainerInstance/containerGroups'.", "properties.delegations")
        name = d.get("name") or str(i)
        out.append({"name": name, "id": f"{subnet_id}/delegations/{name}", "etag": new_etag(),
                    "type": f"{SUBNET_TYPE}/delegations",
                    "properties": {"provisioningState": "Succeeded", "serviceName": service,
                                   "actions": DELEGATION_ACTIONS.get(service.lower(), [])}})
    return out


def subnet_props(subnet_id: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A subnet's stored properties from a request (inline in a VNet or the child resource)."""
    props = props_of(raw)
    net = subnet_prefix(props, subnet_id)
    out: dict[str, Any] = {"addressPrefix": str(net)}
    nsg = reference(props.get("networkSecurityGroup"), "properties.networkSecurityGroup", expect_type=NSG_TYPE)
    if nsg is not None:
        out["networkSecurityGroup"] = ref(nsg)
    out["delegations"] = _delegations(subnet_id, props.get("delegations"))
    out["privateEndpointNetworkPolicies"] = "Disabled"
    out["privateLinkServiceNetworkPolicies"] = "Enabled"
    out.update({k: props[k] for k in SUBNET_KEEP if props.get(k) is not None})
    return out


def _check_fits(vnet_name: str, space: list[ipaddress.IPv4Network], subnets: list[tuple[str, ipaddress.IPv4Network]]
                ) -> None:
    for name, net in subnets:
        if not any(net.subnet_of(s) for s in space):
            raise bad_request("NetcfgSubnetRangeOutsideVnet",
                              f"Subnet '{name}' is not valid because its IP address range is outside the IP address "
                              f"range of virtual network '{vnet_name}'.")
    for i, (a_name, a) in enumerate(subnets):
        for b_name, b in subnets[i + 1:]:
            if a.overlaps(b):
                raise bad_request("NetcfgSubnetRangesOverlap",
                                  f"Subnet '{b_name}' is not valid because its IP address range overlaps with that "
                                  f"of an existing subnet '{a_name}' in virtual network '{vnet_name}'.")


async def _check_nsgs_exist(services: "Services", entries: list[dict[str, Any]]) -> None:
    async with services.store.read() as tx:
        for e in entries:
            nsg = e["properties"].get("networkSecurityGroup")
            if nsg and await tx.get_resource(nsg["id"].lower()) is None:
                raise bad_request("InvalidResourceReference",
                                  f"Resource {nsg['id']} referenced by resource {e['id']} was not found. Please make "
                                  "sure that the referenced resource exists, and that both resources are in the "
                                  "same region.")


async def _check_still_fits(tx: Tx, subnet_id: str, new_prefix: str) -> None:
    """A subnet in use may change its prefix only if every address it hands out stays inside."""
    net = ipaddress.IPv4Network(new_prefix)
    for value, owner in (await tx.allocated(subnet_id.lower())).items():
        if ipaddress.IPv4Address(value) not in net:
            raise bad_request("InUseSubnetCannotBeUpdated",
                              f"Subnet {subnet_id.rsplit('/', 1)[-1]} is in use by {owner} and its address prefix "
                              f"cannot change to {new_prefix}, which does not contain that address.")


async def _check_not_in_use(tx: Tx, subnet: Resource) -> None:
    users = sorted(set((await tx.allocated(subnet.key)).values()))
    if users:
        raise bad_request("InUseSubnetCannotBeDeleted",
                          f"Subnet {subnet.name} is in use by {users[0]} and cannot be deleted. In order to delete "
                          "the subnet, delete all the resources within the subnet. See aka.ms/deletesubnet.")


async def _sync_subnet_nsg(tx: Tx, subnet_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    old_nsg = ((old or {}).get("properties") or {}).get("networkSecurityGroup")
    new_nsg = ((new or {}).get("properties") or {}).get("networkSecurityGroup")
    if old_nsg and (not new_nsg or old_nsg["id"].lower() != new_nsg["id"].lower()):
        await set_backref(tx, old_nsg["id"].lower(), "subnets", subnet_id, False)
    if new_nsg:
        await set_backref(tx, new_nsg["id"].lower(), "subnets", subnet_id, True)


class VirtualNetworks(NetworkType):
    # 1. the ARM type
    type_path = ("virtualNetworks",)

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = props_of(body)
        space_raw = (props.get("addressSpace") or {}).get("addressPrefixes")
        if not isinstance(space_raw, list) or not space_raw:
            raise bad_request("InvalidRequestFormat", f"Virtual network {rid.name} needs "
                              "properties.addressSpace.addressPrefixes (for example [\"10.0.0.0/16\"]).",
                              "properties.addressSpace.addressPrefixes")
        space = [ipv4_network(p, "properties.addressSpace.addressPrefixes", str(rid)) for p in space_raw]
        for i, a in enumerate(space):
            for b in space[i + 1:]:
                if a.overlaps(b):
                    raise bad_request("VnetAddressSpacesOverlap", f"Address spaces {a} and {b} of virtual network "
                                      f"{rid.name} overlap.", "properties.addressSpace.addressPrefixes")
        raw_subnets = props.get("subnets") or []
        if not isinstance(raw_subnets, list):
            raise bad_request("InvalidRequestFormat", "'properties.subnets' must be an array.", "properties.subnets")
        entries, seen = [], set()
        for raw in raw_subnets:
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str) or not name:
                raise bad_request("InvalidRequestFormat", "Every subnet needs a name.", "properties.subnets")
            if name.lower() in seen:
                raise bad_request("DuplicateResourceName", f"Virtual network {rid.name} has two subnets named "
                                  f"{name}.", "properties.subnets")
            seen.add(name.lower())
            subnet_id = f"{rid}/subnets/{name}"
            entries.append(child_entry(str(rid), "subnets", SUBNET_TYPE, name, subnet_props(subnet_id, raw),
                                       new_etag()))
        _check_fits(rid.name, space, [(e["name"], ipaddress.IPv4Network(e["properties"]["addressPrefix"]))
                                      for e in entries])
        out: dict[str, Any] = {"addressSpace": {"addressPrefixes": [str(n) for n in space]}, "subnets": entries,
                               "virtualNetworkPeerings": [], "enableDdosProtection": False}
        if isinstance(props.get("dhcpOptions"), dict):
            out["dhcpOptions"] = props["dhcpOptions"]
        return {"properties": out}

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        await _check_nsgs_exist(services, body["properties"]["subnets"])

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        entries = resource.body["properties"]["subnets"]
        old_rows = {r.name.lower(): r for r in await SUBNETS.rows(tx, resource)} if existing else {}
        wanted = {e["name"].lower() for e in entries}
        for name, row in old_rows.items():
            if name not in wanted:
                await _check_not_in_use(tx, row)
                await _sync_subnet_nsg(tx, row.id, row.body, None)
        for e in entries:
            old = old_rows.get(e["name"].lower())
            if old is not None:  # back-references belong to the server, not to the request
                await _check_still_fits(tx, e["id"], e["properties"]["addressPrefix"])
                e["properties"]["ipConfigurations"] = (old.body.get("properties") or {}).get("ipConfigurations", [])
            await _sync_subnet_nsg(tx, e["id"], old.body if old else None, e)
        await SUBNETS.write_rows(tx, resource, entries)

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        for row in await SUBNETS.rows(tx, resource):
            await _check_not_in_use(tx, row)

    # 3. host effects: the VNet's namespace, bridges and tables
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_vnet(resource.key)

    async def removed(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_vnet(resource.key)  # the row is gone: the namespace goes too


class Subnets(NetworkType):
    type_path = ("virtualNetworks", "subnets")
    tracked = False
    guid = False

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        return {"properties": subnet_props(str(rid), body)}

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        await _check_nsgs_exist(services, [{"id": str(rid), **body}])

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        assert resource.parent_key is not None
        vnet = await tx.get_resource(resource.parent_key)
        if vnet is None:
            raise ArmError(404, "ParentResourceNotFound", f"The virtual network of subnet {resource.name} was "
                           "not found.")
        props = resource.body["properties"]
        vnet_props = vnet.body.get("properties") or {}
        space = [ipaddress.IPv4Network(p) for p in vnet_props["addressSpace"]["addressPrefixes"]]
        siblings = [(e["name"], ipaddress.IPv4Network(e["properties"]["addressPrefix"]))
                    for e in vnet_props.get("subnets") or [] if e["name"].lower() != resource.name.lower()]
        _check_fits(vnet.name, space, [*siblings, (resource.name, ipaddress.IPv4Network(props["addressPrefix"]))])
        if existing is not None:
            await _check_still_fits(tx, resource.id, props["addressPrefix"])
            props["ipConfigurations"] = (existing.body.get("properties") or {}).get("ipConfigurations", [])
        await _sync_subnet_nsg(tx, resource.id, existing.body if existing else None, resource.body)
        await SUBNETS.write_parent(tx, resource.parent_key, resource)

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        await _check_not_in_use(tx, resource)

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        await _sync_subnet_nsg(tx, resource.id, resource.body, None)
        if resource.parent_key:
            await SUBNETS.write_parent(tx, resource.parent_key, None, drop=resource.name)

    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_vnet(resource.parent_key or "")

    async def removed(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_vnet(resource.parent_key or "")

