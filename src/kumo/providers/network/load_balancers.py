"""Microsoft.Network/loadBalancers and their inboundNatRules (inline and as child resources): frontends
(a public IP, or a private IP in a subnet), backend pools that NIC ip configurations join, health
probes, load-balancing rules and inbound NAT rules (one port to one NIC, or a port range over a
pool as `az vmss create` makes them). In the VNet's namespace they become nftables DNAT maps over
the backends kumo's prober finds healthy (see kumo.controllers.network)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import bad_request
from kumo.arm.ids import ResourceId
from kumo.providers.network.addresses import allocate_private, link_public_ip
from kumo.providers.network.common import (InlineChildren, NetworkType, canonical, child_entry, in_use_error,
                                           ipv4_address, new_etag, props_of, ref, reference)
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

LB_TYPE = "Microsoft.Network/loadBalancers"
NAT_RULE_TYPE = f"{LB_TYPE}/inboundNatRules"
NAT_RULES = InlineChildren("inboundNatRules", NAT_RULE_TYPE)
POOLS = InlineChildren("backendAddressPools", f"{LB_TYPE}/backendAddressPools")
# the other parts Azure serves as read-only child resources, mirrored from the load balancer's body
READ_ONLY_PARTS = {c: InlineChildren(c, f"{LB_TYPE}/{c}")
                   for c in ("frontendIPConfigurations", "probes", "loadBalancingRules")}
SUBNET_TYPE = "Microsoft.Network/virtualNetworks/subnets"
PIP_TYPE = "Microsoft.Network/publicIPAddresses"
COLLECTIONS = ("frontendIPConfigurations", "backendAddressPools", "probes", "loadBalancingRules",
               "inboundNatRules", "inboundNatPools", "outboundRules")


def _int(value: Any, field: str, low: int, high: int, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise bad_request("InvalidRequestFormat", f"'{field}' is required.", field)
        return default
    try:
        number = int(value)  # az's templates send some ports as strings
    except (TypeError, ValueError):
        number = low - 1
    if not low <= number <= high:
        raise bad_request("InvalidRequestFormat", f"'{field}' must be an integer from {low} to {high}, not {value}.",
                          field)
    return number


def _own(lb_id: str, collection: str, value: Any, field: str, names: dict[str, set[str]],
         required: bool = True) -> dict[str, str] | None:
    """A reference to one of the load balancer's own sub-resources, checked to exist."""
    rid = reference(value, field)
    if rid is None:
        if required:
            raise bad_request("InvalidRequestFormat", f"'{field}' is required.", field)
        return None
    text = str(rid)
    prefix = f"{lb_id}/{collection}/".lower()
    if not text.lower().startswith(prefix) or text.rsplit("/", 1)[-1].lower() not in names[collection]:
        raise bad_request("InvalidResourceReference", f"Resource {text} referenced by resource {lb_id} was not "
                          f"found: it must be one of the load balancer's own {collection}.", field)
    return ref(f"{lb_id}/{collection}/{text.rsplit('/', 1)[-1]}")


def frontend_props(lb_id: str, raw: dict[str, Any]) -> dict[str, Any]:
    props = props_of(raw)
    pip = reference(props.get("publicIPAddress"), "publicIPAddress", expect_type=PIP_TYPE)
    subnet = reference(props.get("subnet"), "subnet", expect_type=SUBNET_TYPE)
    if (pip is None) == (subnet is None):
        raise bad_request("InvalidRequestFormat", f"Frontend IP configuration {raw.get('name')} of {lb_id} needs "
                          "either a publicIPAddress or a subnet.", "properties.frontendIPConfigurations")
    if pip is not None:
        return {"publicIPAddress": ref(pip), "privateIPAllocationMethod": "Dynamic"}
    out: dict[str, Any] = {"subnet": ref(subnet), "privateIPAddressVersion": "IPv4",  # type: ignore[arg-type]
                           "privateIPAllocationMethod": canonical(props.get("privateIPAllocationMethod"),
                                                                  ("Dynamic", "Static"), "privateIPAllocationMethod",
                                                                  "Static" if props.get("privateIPAddress") else
                                                                  "Dynamic")}
    if out["privateIPAllocationMethod"] == "Static":
        out["privateIPAddress"] = str(ipv4_address(props.get("privateIPAddress"), "privateIPAddress"))
    return out


def probe_props(raw: dict[str, Any]) -> dict[str, Any]:
    props = props_of(raw)
    protocol = canonical(props.get("protocol"), ("Tcp", "Http", "Https"), "probes.protocol")
    out: dict[str, Any] = {"protocol": protocol, "port": _int(props.get("port"), "probes.port", 1, 65535),
                           # Azure's minimum interval is 5 s; kumo also takes shorter ones so tests and demos react
                           # in seconds (a documented kumo extension)
                           "intervalInSeconds": _int(props.get("intervalInSeconds"), "probes.intervalInSeconds", 1,
                                                     2147483647, 15),
                           "numberOfProbes": _int(props.get("numberOfProbes"), "probes.numberOfProbes", 1, 100, 2),
                           "probeThreshold": _int(props.get("probeThreshold"), "probes.probeThreshold", 1, 100, 1)}
    if protocol != "Tcp":
        path = props.get("requestPath")
        if not isinstance(path, str) or not path.startswith("/"):
            raise bad_request("InvalidRequestFormat", f"Probe {raw.get('name')} uses {protocol} and needs a "
                              "requestPath starting with '/'.", "probes.requestPath")
        out["requestPath"] = path
    return out


def _entries(lb_id: str, props: dict[str, Any], collection: str) -> list[dict[str, Any]]:
    raw = props.get(collection) or []
    if not isinstance(raw, list):
        raise bad_request("InvalidRequestFormat", f"'properties.{collection}' must be an array.")
    seen: set[str] = set()
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise bad_request("InvalidRequestFormat", f"Every entry of '{collection}' needs a name.")
        if name.lower() in seen:
            raise bad_request("DuplicateResourceName", f"Load balancer {lb_id} has two {collection} named {name}.")
        seen.add(name.lower())
    return raw


def nat_rule_props(lb_id: str, raw: dict[str, Any], names: dict[str, set[str]]) -> dict[str, Any]:
    props = props_of(raw)
    out: dict[str, Any] = {
        "frontendIPConfiguration": _own(lb_id, "frontendIPConfigurations", props.get("frontendIPConfiguration"),
                                        "inboundNatRules.frontendIPConfiguration", names),
        "protocol": canonical(props.get("protocol"), ("Tcp", "Udp", "All"), "inboundNatRules.protocol"),
        "backendPort": _int(props.get("backendPort"), "inboundNatRules.backendPort", 1, 65535),
        "idleTimeoutInMinutes": _int(props.get("idleTimeoutInMinutes"), "idleTimeoutInMinutes", 4, 100, 4),
        "enableFloatingIP": bool(props.get("enableFloatingIP", False)),
        "enableTcpReset": bool(props.get("enableTcpReset", False)),
    }
    if props.get("frontendPortRangeStart") is not None:  # a range over a pool: one port per member
        start = _int(props.get("frontendPortRangeStart"), "frontendPortRangeStart", 1, 65534)
        end = _int(props.get("frontendPortRangeEnd"), "frontendPortRangeEnd", start, 65534)
        out.update(frontendPortRangeStart=start, frontendPortRangeEnd=end,
                   backendAddressPool=_own(lb_id, "backendAddressPools", props.get("backendAddressPool"),
                                           "inboundNatRules.backendAddressPool", names))
    else:
        out["frontendPort"] = _int(props.get("frontendPort"), "inboundNatRules.frontendPort", 1, 65534)
    return out


def _ports_of(props: dict[str, Any]) -> range:
    if "frontendPortRangeStart" in props:
        return range(props["frontendPortRangeStart"], props["frontendPortRangeEnd"] + 1)
    return range(props["frontendPort"], props["frontendPort"] + 1)


def check_port_conflicts(rules: list[tuple[str, dict[str, Any]]]) -> None:
    """Two rules may not listen on the same frontend, protocol and port."""
    taken: dict[tuple[str, str, int], str] = {}
    for name, props in rules:
        protocols = ("Tcp", "Udp") if props["protocol"] == "All" else (props["protocol"],)
        for protocol in protocols:
            for port in _ports_of(props):
                key = (props["frontendIPConfiguration"]["id"].lower(), protocol, port)
                if key in taken and port != 0:
                    raise bad_request("RulesUseSameFrontendIpAndPort",
                                      f"Rules {taken[key]} and {name} of the load balancer use the same frontend IP "
                                      f"configuration, protocol {protocol} and port {port}.")
                taken[key] = name


class LoadBalancers(NetworkType):
    # 1. the ARM type
    type_path = ("loadBalancers",)

    def __init__(self, public_pool: ipaddress.IPv4Network) -> None:
        self.public_pool = public_pool

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        lb_id = str(rid)
        props = props_of(body)
        sku_raw = body.get("sku") or {}
        sku = {"name": canonical(sku_raw.get("name"), ("Basic", "Standard", "Gateway"), "sku.name", "Standard"),
               "tier": canonical(sku_raw.get("tier"), ("Regional", "Global"), "sku.tier", "Regional")}
        raw = {c: _entries(lb_id, props, c) for c in COLLECTIONS}
        names = {c: {e["name"].lower() for e in raw[c]} for c in COLLECTIONS}

        def entry(collection: str, item: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
            return child_entry(lb_id, collection, f"{LB_TYPE}/{collection}", item["name"], out, new_etag())

        frontends = [entry("frontendIPConfigurations", f, frontend_props(lb_id, f))
                     for f in raw["frontendIPConfigurations"]]
        pools = [entry("backendAddressPools", p, {}) for p in raw["backendAddressPools"]]
        probes = [entry("probes", p, probe_props(p)) for p in raw["probes"]]
        rules = []
        for r in raw["loadBalancingRules"]:
            p = props_of(r)
            protocol = canonical(p.get("protocol"), ("Tcp", "Udp", "All"), "loadBalancingRules.protocol")
            frontend_port = _int(p.get("frontendPort"), "loadBalancingRules.frontendPort", 1, 65534)  # no HA ports
            pool = p.get("backendAddressPool") or ((p.get("backendAddressPools") or [None])[0])
            rules.append(entry("loadBalancingRules", r, {
                "frontendIPConfiguration": _own(lb_id, "frontendIPConfigurations", p.get("frontendIPConfiguration"),
                                                "loadBalancingRules.frontendIPConfiguration", names),
                "backendAddressPool": _own(lb_id, "backendAddressPools", pool,
                                           "loadBalancingRules.backendAddressPool", names),
                "probe": _own(lb_id, "probes", p.get("probe"), "loadBalancingRules.probe", names, required=False),
                "protocol": protocol, "frontendPort": frontend_port,
                "backendPort": _int(p.get("backendPort"), "loadBalancingRules.backendPort", 1, 65535, frontend_port),
                "loadDistribution": canonical(p.get("loadDistribution"), ("Default", "SourceIP", "SourceIPProtocol"),
                                              "loadBalancingRules.loadDistribution", "Default"),
                "idleTimeoutInMinutes": _int(p.get("idleTimeoutInMinutes"), "idleTimeoutInMinutes", 4, 100, 4),
                "enableFloatingIP": bool(p.get("enableFloatingIP", False)),
                "enableTcpReset": bool(p.get("enableTcpReset", False)),
                "disableOutboundSnat": bool(p.get("disableOutboundSnat", False))}))
            if rules[-1]["properties"]["probe"] is None:
                rules[-1]["properties"].pop("probe")
        nat_rules = [entry("inboundNatRules", r, nat_rule_props(lb_id, r, names)) for r in raw["inboundNatRules"]]
        check_port_conflicts([(r["name"], r["properties"]) for r in rules + nat_rules])
        _backrefs(frontends, pools, probes, rules, nat_rules)
        out = {"frontendIPConfigurations": frontends, "backendAddressPools": pools, "probes": probes,
               "loadBalancingRules": rules, "inboundNatRules": nat_rules,
               # accepted and kept as given: kumo's VNets already give instances outbound SNAT
               "inboundNatPools": raw["inboundNatPools"], "outboundRules": raw["outboundRules"]}
        return {"sku": sku, "properties": out}

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        props = resource.body["properties"]
        old = (existing.body.get("properties") or {}) if existing else {}
        _keep_server_refs(props, old)
        await tx.release(resource.id)  # private frontend addresses, re-claimed where they were
        old_frontends = {f["name"].lower(): f for f in old.get("frontendIPConfigurations") or []}
        for f in props["frontendIPConfigurations"]:
            before = old_frontends.pop(f["name"].lower(), None)
            fp = f["properties"]
            if "subnet" in fp:
                previous = (before or {}).get("properties", {}).get("privateIPAddress")
                await allocate_private(tx, f, previous)
            await link_public_ip(tx, self.public_pool, f, _pip_of(before), _pip_of(f))
        for gone in old_frontends.values():
            await link_public_ip(tx, self.public_pool, gone, _pip_of(gone), None)
        for children in (NAT_RULES, POOLS, *READ_ONLY_PARTS.values()):
            await children.write_rows(tx, resource, props[children.collection])

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        for pool in (resource.body.get("properties") or {}).get("backendAddressPools") or []:
            users = pool["properties"].get("backendIPConfigurations") or []
            if users:
                raise in_use_error("InUseLoadBalancerCannotBeDeleted", f"Load balancer {resource.id}", users[0]["id"])

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        for f in (resource.body.get("properties") or {}).get("frontendIPConfigurations") or []:
            await link_public_ip(tx, self.public_pool, f, _pip_of(f), None)

    # 3. host effects: the VNets of its backends re-render their DNAT maps
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_load_balancer(resource)

    async def removed(self, services: "Services", resource: Resource) -> None:
        await services.network.sync_load_balancer(resource)


class InboundNatRules(NetworkType):
    """`loadBalancers/{lb}/inboundNatRules/{name}`: the same rules as the inline list (az's vmss template
    declares one as a top-level child resource)."""

    type_path = ("loadBalancers", "inboundNatRules")
    tracked = False
    guid = False

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        return {"properties": props_of(body)}  # checked against the load balancer in write_through

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        assert resource.parent_key is not None
        lb = await tx.get_resource(resource.parent_key)
        assert lb is not None
        lb_props = lb.body["properties"]
        names = {c: {e["name"].lower() for e in lb_props.get(c) or []} for c in COLLECTIONS}
        props = nat_rule_props(lb.id, {"name": resource.name, "properties": resource.body["properties"]}, names)
        old = (existing.body.get("properties") or {}) if existing else {}
        if old.get("backendIPConfiguration"):
            props["backendIPConfiguration"] = old["backendIPConfiguration"]
        siblings = [(r["name"], r["properties"]) for r in lb_props.get("loadBalancingRules") or []] + \
                   [(r["name"], r["properties"]) for r in lb_props.get("inboundNatRules") or []
                    if r["name"].lower() != resource.name.lower()]
        check_port_conflicts([*siblings, (resource.name, props)])
        resource.body["properties"] = {**props, "provisioningState": resource.body["properties"].get(
            "provisioningState", "Succeeded")}
        await NAT_RULES.write_parent(tx, resource.parent_key, resource)

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        user = (resource.body.get("properties") or {}).get("backendIPConfiguration")
        if user:
            raise in_use_error("InUseInboundNatRuleCannotBeDeleted", f"Inbound NAT rule {resource.id}", user["id"])

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        if resource.parent_key:
            await NAT_RULES.write_parent(tx, resource.parent_key, None, drop=resource.name)

    async def realise(self, services: "Services", resource: Resource) -> None:
        await _sync_parent(services, resource)

    async def removed(self, services: "Services", resource: Resource) -> None:
        await _sync_parent(services, resource)


async def _sync_parent(services: "Services", resource: Resource) -> None:
    async with services.store.read() as tx:
        lb = await tx.get_resource(resource.parent_key or "")
    if lb is not None:
        await services.network.sync_load_balancer(lb)


def _backrefs(frontends: list[dict[str, Any]], pools: list[dict[str, Any]], probes: list[dict[str, Any]],
              rules: list[dict[str, Any]], nat_rules: list[dict[str, Any]]) -> None:
    """What Azure shows on each sub-resource: the rules that use it."""
    by_id = {e["id"].lower(): e for e in frontends + pools + probes}
    for r in rules:
        for field in ("frontendIPConfiguration", "backendAddressPool", "probe"):
            target = r["properties"].get(field)
            if target:
                by_id[target["id"].lower()]["properties"].setdefault("loadBalancingRules", []).append(ref(r["id"]))
    for r in nat_rules:
        target = by_id[r["properties"]["frontendIPConfiguration"]["id"].lower()]
        target["properties"].setdefault("inboundNatRules", []).append(ref(r["id"]))


def _keep_server_refs(props: dict[str, Any], old: dict[str, Any]) -> None:
    """NICs own the pool and NAT rule memberships; a PUT of the load balancer keeps them."""
    for collection, field in (("backendAddressPools", "backendIPConfigurations"),
                              ("inboundNatRules", "backendIPConfiguration")):
        before = {e["name"].lower(): e["properties"].get(field) for e in old.get(collection) or []}
        for e in props[collection]:
            if before.get(e["name"].lower()):
                e["properties"][field] = before[e["name"].lower()]


def _pip_of(frontend: dict[str, Any] | None) -> str | None:
    return (((frontend or {}).get("properties") or {}).get("publicIPAddress") or {}).get("id")


class _LoadBalancerPart(NetworkType):
    """A read-only view of one of a load balancer's parts (GET and list), as Azure serves them."""

    tracked = False
    guid = False
    long_running = False
    read_only = True


class BackendAddressPools(_LoadBalancerPart):
    type_path = ("loadBalancers", "backendAddressPools")


class FrontendIPConfigurations(_LoadBalancerPart):
    type_path = ("loadBalancers", "frontendIPConfigurations")


class Probes(_LoadBalancerPart):
    type_path = ("loadBalancers", "probes")


class LoadBalancingRules(_LoadBalancerPart):
    type_path = ("loadBalancers", "loadBalancingRules")


LOAD_BALANCER_PARTS = (BackendAddressPools, FrontendIPConfigurations, Probes, LoadBalancingRules)
