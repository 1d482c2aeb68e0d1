"""Microsoft.Network/networkSecurityGroups and their securityRules (inline and as child resources),
with Azure's six default rules. The rules become nftables chains in each VNet that uses the NSG
(see kumo.controllers.network)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any


from kumo.arm.errors import bad_request
from kumo.arm.ids import ResourceId
from kumo.providers.network.common import (InlineChildren, NetworkType, canonical, child_entry, in_use_error,
                                           new_etag, props_of)
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

NSG_TYPE = "Microsoft.Network/networkSecurityGroups"
RULE_TYPE = f"{NSG_TYPE}/securityRules"
RULES = InlineChildren("securityRules", RULE_TYPE)
DEFAULT_RULE_ROWS = InlineChildren("defaultSecurityRules", f"{NSG_TYPE}/defaultSecurityRules")
PROTOCOLS = ("Tcp", "Udp", "Icmp", "Esp", "Ah", "*")
SERVICE_TAGS = ("VirtualNetwork", "Internet", "AzureLoadBalancer", "*")
TAG_ALIASES = {"virtual_network": "VirtualNetwork", "azure_loadbalancer": "AzureLoadBalancer"}

DEFAULT_RULES = (
    # name, direction, priority, access, source, destination, description (Azure's own)
    ("AllowVnetInBound", "Inbound", 65000, "Allow", "VirtualNetwork", "VirtualNetwork",
     "Allow inbound traffic from all VMs in VNET"),
    ("AllowAzureLoadBalancerInBound", "Inbound", 65001, "Allow", "AzureLoadBalancer", "*",
     "Allow inbound traffic from azure load balancer"),
    ("DenyAllInBound", "Inbound", 65500, "Deny", "*", "*", "Deny all inbound traffic"),
    ("AllowVnetOutBound", "Outbound", 65000, "Allow", "VirtualNetwork", "VirtualNetwork",
     "Allow outbound traffic from all VMs to all VMs in VNET"),
    ("AllowInternetOutBound", "Outbound", 65001, "Allow", "*", "Internet",
     "Allow outbound traffic from all VMs to Internet"),
    ("DenyAllOutBound", "Outbound", 65500, "Deny", "*", "*", "Deny all outbound traffic"),
)


def default_rules(nsg_id: str) -> list[dict[str, Any]]:
    out = []
    for name, direction, priority, access, src, dst, description in DEFAULT_RULES:
        out.append(child_entry(nsg_id, "defaultSecurityRules", f"{NSG_TYPE}/defaultSecurityRules", name, {
            "description": description, "protocol": "*", "sourcePortRange": "*", "destinationPortRange": "*",
            "sourceAddressPrefix": src, "destinationAddressPrefix": dst, "access": access, "priority": priority,
            "direction": direction, "sourcePortRanges": [], "destinationPortRanges": [],
            "sourceAddressPrefixes": [], "destinationAddressPrefixes": []}, new_etag()))
    return out


def _port(value: Any, rule: str) -> str:
    text = str(value).strip()
    if text == "*":
        return text
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        a, b = -1, -1
    if not (0 <= a <= b <= 65535):
        raise bad_request("SecurityRuleInvalidPortRange", f"Security rule {rule} has invalid Port range. Value "
                          f"provided: {text}. Value should be an integer OR integer range with '-' delimiter. Valid "
                          "range 0-65535.")
    return text


def _prefix(value: Any, rule: str) -> str:
    text = str(value).strip()
    for tag in SERVICE_TAGS:
        if text.lower() == tag.lower():
            return tag
    if text.lower() in TAG_ALIASES:
        return TAG_ALIASES[text.lower()]
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise bad_request("SecurityRuleInvalidAddressPrefix", f"Security rule {rule} has invalid Address prefix. "
                          f"Value provided: {text}.") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise bad_request("SecurityRuleInvalidAddressPrefix", f"Security rule {rule} has an IPv6 prefix {text}; "
                          "kumo supports IPv4.")
    return text


def _one_or_many(props: dict[str, Any], single: str, plural: str, check: Any, rule: str) -> tuple[str | None, list]:
    one, many = props.get(single), props.get(plural) or []
    if not isinstance(many, list):
        raise bad_request("InvalidRequestFormat", f"'{plural}' of security rule {rule} must be an array.")
    if one not in (None, "") and many:
        raise bad_request("SecurityRuleParameterContainsUnsupportedValue",
                          f"Security rule {rule} sets both {single} and {plural}; use one of them.")
    if one in (None, "") and not many:
        raise bad_request("SecurityRuleParameterContainsUnsupportedValue",
                          f"Security rule {rule} needs {single} or {plural}.")
    return (check(one, rule) if one not in (None, "") else None), [check(v, rule) for v in many]


def rule_props(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    props = props_of(raw)
    try:
        priority = int(props.get("priority"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        priority = -1
    if not 100 <= priority <= 4096:
        raise bad_request("SecurityRuleInvalidPriority", f"Security rule {name} has invalid Priority. Value "
                          f"provided: {props.get('priority')} Allowed values are from 100 to 4096.")
    out: dict[str, Any] = {
        "protocol": canonical(props.get("protocol"), PROTOCOLS, "protocol"),
        "access": canonical(props.get("access"), ("Allow", "Deny"), "access"),
        "direction": canonical(props.get("direction"), ("Inbound", "Outbound"), "direction"),
        "priority": priority,
    }
    for single, plural, check in (("sourcePortRange", "sourcePortRanges", _port),
                                  ("destinationPortRange", "destinationPortRanges", _port),
                                  ("sourceAddressPrefix", "sourceAddressPrefixes", _prefix),
                                  ("destinationAddressPrefix", "destinationAddressPrefixes", _prefix)):
        one, many = _one_or_many(props, single, plural, check, name)
        if one is not None:
            out[single] = one
        out[plural] = many
    if props.get("description"):
        out["description"] = str(props["description"])[:140]
    return out


def _check_conflicts(rules: list[dict[str, Any]]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for r in rules:
        key = (r["properties"]["direction"], r["properties"]["priority"])
        if key in seen:
            raise bad_request("SecurityRuleConflict", f"Security rule {r['name']} conflicts with rule {seen[key]}. "
                              "Rules cannot have the same Priority and Direction. To learn more, see aka.ms/nsgrules.")
        seen[key] = r["name"]


async def _resync_users(services: "Services", nsg: Resource) -> None:
    """Rules changed: every VNet with a NIC or subnet under this NSG re-renders its tables."""
    props = nsg.body.get("properties") or {}
    vnets = set()
    async with services.store.read() as tx:
        for user in (props.get("subnets") or []):
            vnets.add(user["id"].lower().split("/subnets/")[0])
        for user in (props.get("networkInterfaces") or []):
            nic = await tx.get_resource(user["id"].lower())
            vnets.update(services.network.vnets_of_nic(nic) if nic else ())
    for vnet in sorted(vnets):
        await services.network.sync_vnet(vnet)


class NetworkSecurityGroups(NetworkType):
    # 1. the ARM type
    type_path = ("networkSecurityGroups",)

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = props_of(body)
        raw_rules = props.get("securityRules") or []
        if not isinstance(raw_rules, list):
            raise bad_request("InvalidRequestFormat", "'properties.securityRules' must be an array.")
        rules, seen = [], set()
        for raw in raw_rules:
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str) or not name:
                raise bad_request("InvalidRequestFormat", "Every security rule needs a name.")
            if name.lower() in seen:
                raise bad_request("DuplicateResourceName", f"Network security group {rid.name} has two rules named "
                                  f"{name}.")
            seen.add(name.lower())
            rules.append(child_entry(str(rid), "securityRules", RULE_TYPE, name, rule_props(name, raw), new_etag()))
        _check_conflicts(rules)
        rules.sort(key=lambda r: r["name"].lower())
        return {"properties": {"securityRules": rules, "defaultSecurityRules": default_rules(str(rid))}}

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        old = (existing.body.get("properties") or {}) if existing else {}
        for field in ("networkInterfaces", "subnets"):  # back-references stay the server's
            if old.get(field):
                resource.body["properties"][field] = old[field]
        await RULES.write_rows(tx, resource, resource.body["properties"]["securityRules"])
        await DEFAULT_RULE_ROWS.write_rows(tx, resource, resource.body["properties"]["defaultSecurityRules"])

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        props = resource.body.get("properties") or {}
        users = (props.get("networkInterfaces") or []) + (props.get("subnets") or [])
        if users:
            raise in_use_error("InUseNetworkSecurityGroupCannotBeDeleted",
                               f"Network security group {resource.id}", users[0]["id"])

    # 3. host effects: the VNets that use it re-render their rules
    async def realise(self, services: "Services", resource: Resource) -> None:
        await _resync_users(services, resource)

class SecurityRules(NetworkType):
    type_path = ("networkSecurityGroups", "securityRules")
    tracked = False
    guid = False

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        return {"properties": rule_props(rid.name, body)}

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        assert resource.parent_key is not None
        nsg = await tx.get_resource(resource.parent_key)
        assert nsg is not None
        siblings = [r for r in (nsg.body.get("properties") or {}).get("securityRules") or []
                    if r["name"].lower() != resource.name.lower()]
        _check_conflicts([*siblings, resource.body])
        await RULES.write_parent(tx, resource.parent_key, resource)

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        if resource.parent_key:
            await RULES.write_parent(tx, resource.parent_key, None, drop=resource.name)

    async def realise(self, services: "Services", resource: Resource) -> None:
        await self._resync_parent(services, resource)

    async def removed(self, services: "Services", resource: Resource) -> None:
        await self._resync_parent(services, resource)

    @staticmethod
    async def _resync_parent(services: "Services", resource: Resource) -> None:
        async with services.store.read() as tx:
            nsg = await tx.get_resource(resource.parent_key or "")
        if nsg is not None:
            await _resync_users(services, nsg)


class DefaultSecurityRules(NetworkType):
    """`…/networkSecurityGroups/{nsg}/defaultSecurityRules[/{name}]`: Azure's six rules, read-only."""

    type_path = ("networkSecurityGroups", "defaultSecurityRules")
    tracked = False
    guid = False
    long_running = False
    read_only = True
