"""Microsoft.Network/loadBalancers and their inboundNatRules (inline and as child resources): frontends
(a public IP, or a private IP in a subnet), backend pools that NIC ip configurations join, health
probes, load-balancing rules, inbound NAT rules (one port to one NIC, or a port range over a
pool as `az vmss create` makes them), inbound NAT pools (a port range that NIC ip configurations
join, as Uniform scale sets' models do) and outbound rules. In the VNet's namespace they become
nftables DNAT maps over the backends kumo's prober finds healthy, and SNAT for outbound rules (see
kumo.controllers.network).

Port ranges: every member of a NAT pool or of a range rule's pool holds one frontend port, kept in
the load balancer's body where Azure shows it (a NAT pool's members as the NAT rules it derives,
`{pool}.{n}` on port start + n; a range rule's in its pool's `loadBalancerBackendAddresses`). A
member keeps its port while it stays; a new Uniform scale set instance N takes start + N (as Azure
gives it) when free, another member the lowest free port, several at once in the natural order of
their ip configuration ids. The data path reads the same records, so what the API shows is what the
host does."""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.controllers.load_balancing import MAX_SNAT_PORTS, default_outbound_ports, natural
from kumo.providers.network.addresses import allocate_private, link_public_ip
from kumo.providers.network.common import (InlineChildren, NetworkType, canonical, child_entry, in_use_error,
                                           ipv4_address, new_etag, props_of, ref, reference)
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

LB_TYPE = "Microsoft.Network/loadBalancers"
NAT_RULE_TYPE = f"{LB_TYPE}/inboundNatRules"
NAT_RULES = InlineChildren("inboundNatRules", NAT_RULE_TYPE)
POOLS = InlineChildren("backendAddressPools", f"{LB_TYPE}/backendAddressPools")
# the other parts Azure serves as read-only child resources, mirrored from the load balancer's body
READ_ONLY_PARTS = {c: InlineChildren(c, f"{LB_TYPE}/{c}")
                   for c in ("frontendIPConfigurations", "probes", "loadBalancingRules", "outboundRules")}
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
    ranged = any(props.get(f) not in (None, "") for f in ("frontendPortRangeStart", "frontendPortRangeEnd"))
    port = props.get("frontendPort")
    if ranged and port not in (None, "", 0, "0"):  # a GET's frontendPort 0 of a range rule may come back
        raise bad_request("UnsupportedSetOfInboundNatRulePropertiesWhenFrontendPortIsSpecified",
                          f"If FrontendPort {port} is set, properties FrontendPortRangeStart, FrontendPortRangeEnd "
                          "should be null.", "inboundNatRules.frontendPort")
    if props.get("backendAddressPool") is not None and not ranged:
        raise bad_request("MissedInboundNatRuleV2Properties", "For inbound Nat rule V2 properties "
                          "FrontendPortRangeStart, FrontendPortRangeEnd should not be null.",
                          "inboundNatRules.frontendPortRangeStart")
    if ranged:  # a range over a pool (Azure's "NAT rule V2"): one port per member
        start = _int(props.get("frontendPortRangeStart"), "frontendPortRangeStart", 1, 65534)
        out.update(frontendPortRangeStart=start,
                   frontendPortRangeEnd=_int(props.get("frontendPortRangeEnd"), "frontendPortRangeEnd", start, 65535))
        pool = _own(lb_id, "backendAddressPools", props.get("backendAddressPool"),
                    "inboundNatRules.backendAddressPool", names, required=False)
        if pool is not None:
            out["backendAddressPool"] = pool
    else:
        out["frontendPort"] = _int(port, "inboundNatRules.frontendPort", 1, 65534)
    return out


def nat_pool_props(lb_id: str, raw: dict[str, Any], names: dict[str, set[str]]) -> dict[str, Any]:
    props = props_of(raw)
    start = _int(props.get("frontendPortRangeStart"), "inboundNatPools.frontendPortRangeStart", 1, 65534)
    return {
        "frontendIPConfiguration": _own(lb_id, "frontendIPConfigurations", props.get("frontendIPConfiguration"),
                                        "inboundNatPools.frontendIPConfiguration", names),
        "protocol": canonical(props.get("protocol"), ("Tcp", "Udp", "All"), "inboundNatPools.protocol"),
        "frontendPortRangeStart": start,
        "frontendPortRangeEnd": _int(props.get("frontendPortRangeEnd"), "inboundNatPools.frontendPortRangeEnd", start,
                                     65535),
        "backendPort": _int(props.get("backendPort"), "inboundNatPools.backendPort", 1, 65535),
        "idleTimeoutInMinutes": _int(props.get("idleTimeoutInMinutes"), "idleTimeoutInMinutes", 4, 100, 4),
        "enableFloatingIP": bool(props.get("enableFloatingIP", False)),
        "enableTcpReset": bool(props.get("enableTcpReset", False)),
    }


def outbound_props(lb_id: str, raw: dict[str, Any], names: dict[str, set[str]],
                   public_frontends: set[str]) -> dict[str, Any]:
    props = props_of(raw)
    refs = props.get("frontendIPConfigurations")
    if not isinstance(refs, list) or not refs:
        raise bad_request("InvalidRequestFormat", f"Outbound rule {raw['name']} needs at least one frontend IP "
                          "configuration.", "outboundRules.frontendIPConfigurations")
    frontends = list({f["id"].lower(): f for f in (
        _own(lb_id, "frontendIPConfigurations", r, "outboundRules.frontendIPConfigurations", names)
        for r in refs) if f}.values())
    for f in frontends:
        if f["id"].lower() not in public_frontends:
            raise bad_request("OutboundRuleCannotUsePrivateFrontendIPConfiguration",
                              f"Outbound rule {lb_id}/outboundRules/{raw['name']} references frontend IP configuration "
                              f"{f['id']}, which has no public IP address; outbound rules translate to public IPs.",
                              "outboundRules.frontendIPConfigurations")
    ports = _int(props.get("allocatedOutboundPorts"), "outboundRules.allocatedOutboundPorts", 0, 2**31 - 1, 0)
    if ports % 8:
        raise bad_request("SpecifiedAllocatedOutboundPortsForOutboundRuleIsNotAMultipleOfEight",
                          f"Specified allocated outbound ports {ports} for outbound rule "
                          f"{lb_id}/outboundRules/{raw['name']} is not a multiple of 8.",
                          "outboundRules.allocatedOutboundPorts")
    if ports > MAX_SNAT_PORTS:
        raise bad_request("SpecifiedAllocatedOutboundPortsForOutboundRuleExceedsTotalNumberOfAllowedPortsPerRule",
                          f"Specified allocated outbound ports {ports} for outbound rule "
                          f"{lb_id}/outboundRules/{raw['name']} exceeds the {MAX_SNAT_PORTS} ports allowed per "
                          "rule.", "outboundRules.allocatedOutboundPorts")
    return {"allocatedOutboundPorts": ports, "frontendIPConfigurations": frontends,
            "backendAddressPool": _own(lb_id, "backendAddressPools", props.get("backendAddressPool"),
                                       "outboundRules.backendAddressPool", names),
            "protocol": canonical(props.get("protocol"), ("Tcp", "Udp", "All"), "outboundRules.protocol"),
            "enableTcpReset": bool(props.get("enableTcpReset", False)),
            "idleTimeoutInMinutes": _int(props.get("idleTimeoutInMinutes"), "outboundRules.idleTimeoutInMinutes", 4,
                                         120, 4)}


def outbound_ports(rule: dict[str, Any], members: int) -> int:
    return rule["allocatedOutboundPorts"] or default_outbound_ports(members)


def _protocols_overlap(a: str, b: str) -> bool:
    return a == b or "All" in (a, b)


def check_outbound(lb_id: str, sku: str, rules: list[dict[str, Any]], outbound: list[dict[str, Any]]) -> None:
    """Azure's rules for outbound rules on the load balancer as a whole."""
    if outbound and sku == "Basic":
        raise bad_request("OutboundRuleCannotBeUsedWithLoadBalancerSku", f"Outbound rules of load balancer {lb_id} "
                          "need the Standard SKU; Basic load balancers do not support them.")
    users: dict[str, list[dict[str, Any]]] = {}
    for o in outbound:
        for f in o["properties"]["frontendIPConfigurations"]:
            users.setdefault(f["id"].lower(), []).append(o)
    for frontend, rules_of in users.items():
        for i, a in enumerate(rules_of):
            for b in rules_of[i + 1:]:
                if _protocols_overlap(a["properties"]["protocol"], b["properties"]["protocol"]):
                    raise bad_request(
                        "MoreThanOneOutboundRuleUsingSameFrontendIPConfigurationAndProtocolIsNotSupported",
                        "It is not supported to have more than a single outbound rule using frontendIPConfiguration "
                        f"{_frontend_id(a, frontend)} with same or overlapping protocol. This frontendIPConfiguration "
                        f"is used by the following outbound rules: {a['id']},{b['id']}")
    for r in rules:
        p = r["properties"]
        frontend = p["frontendIPConfiguration"]["id"]
        if frontend.lower() in users and not p.get("disableOutboundSnat"):
            raise bad_request(
                "LoadBalancingRuleMustDisableSNATSinceSameFrontendIPConfigurationIsReferencedByOutboundRule",
                f"Load Balancing Rules {r['id']} must have disableOutboundSNAT set to true when same "
                f"FrontendIPConfiguration {frontend} is referenced by Outbound Rules "
                f"{','.join(o['id'] for o in users[frontend.lower()])}.")


def _frontend_id(rule: dict[str, Any], key: str) -> str:
    return next(f["id"] for f in rule["properties"]["frontendIPConfigurations"] if f["id"].lower() == key)


def check_outbound_capacity(props: dict[str, Any]) -> None:
    """Every member of an outbound rule's pool gets its ports from the rule's frontend IPs."""
    pools = {p["id"].lower(): p for p in props.get("backendAddressPools") or []}
    for o in _outbound_rules(props):
        p = o["properties"]
        pool = pools.get(p["backendAddressPool"]["id"].lower())
        members = len((pool or {}).get("properties", {}).get("backendIPConfigurations") or [])
        wanted = members * outbound_ports(p, members)
        available = MAX_SNAT_PORTS * len(p["frontendIPConfigurations"])
        if wanted > available:
            raise bad_request("SpecifiedAllocatedOutboundPortsForOutboundRuleExceedsTotalNumberOfAvailablePorts",
                              f"Specified Allocated Outbound Ports {p['allocatedOutboundPorts']} for Outbound Rule "
                              f"{o['id']} exceeds total number of available ports {available} for its {members} "
                              "backend instances. Reduce allocated ports or increase number of IP addresses for "
                              "outbound rule.")


def _ports_of(props: dict[str, Any]) -> range:
    if "frontendPortRangeStart" in props:
        return range(props["frontendPortRangeStart"], props["frontendPortRangeEnd"] + 1)
    return range(props["frontendPort"], props["frontendPort"] + 1)


def check_port_conflicts(rules: list[tuple[str, dict[str, Any]]]) -> None:
    """Two rules (load-balancing rules, NAT rules and NAT pools) may not listen on the same frontend,
    protocol and port."""
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


# -- frontend ports of NAT pools and range rules: one per member, kept where Azure shows them --------

def derived_nat_pool(name: str, nat_pools: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The NAT pool (by lower-case name) that NAT rule `name` (`{pool}.{n}`) stands for a member of."""
    base, dot, index = name.rpartition(".")
    return nat_pools.get(base.lower()) if dot and index.isdigit() else None


def _nat_pools(props: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # ("id": a load balancer stored before kumo checked NAT pools kept them as given)
    return {p["name"].lower(): p for p in props.get("inboundNatPools") or [] if "id" in p}


def _outbound_rules(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in props.get("outboundRules") or [] if "id" in o]


def address_name(cfg_id: str) -> str:
    """A member's name in `loadBalancerBackendAddresses`: the names in its ip configuration's id."""
    parts = cfg_id.split("/")
    lowered = [p.lower() for p in parts]
    return "_".join(parts[lowered.index("providers") + 3::2]) if "providers" in lowered else cfg_id


def _previous_ports(props: dict[str, Any]) -> tuple[dict[tuple[str, str, str], int], dict[str, dict[str, str]]]:
    """From stored properties: ("pool"|"rule", name, ip configuration id), lower case -> frontend port,
    and each NAT pool's members (lower-case name -> {lower-case id: id})."""
    nat_pools = _nat_pools(props)
    ports: dict[tuple[str, str, str], int] = {}
    members: dict[str, dict[str, str]] = {}
    for r in props.get("inboundNatRules") or []:
        pool = derived_nat_pool(r["name"], nat_pools)
        cfg = (r["properties"].get("backendIPConfiguration") or {}).get("id")
        if pool is not None and cfg:
            ports[("pool", pool["name"].lower(), cfg.lower())] = r["properties"]["frontendPort"]
            members.setdefault(pool["name"].lower(), {})[cfg.lower()] = cfg
    for pool in props.get("backendAddressPools") or []:
        for a in pool["properties"].get("loadBalancerBackendAddresses") or []:
            cfg = ((a.get("properties") or {}).get("networkInterfaceIPConfiguration") or {}).get("id")
            for m in (a.get("properties") or {}).get("inboundNatRulesPortMapping") or [] if cfg else []:
                ports[("rule", m["inboundNatRuleName"].lower(), cfg.lower())] = m["frontendPort"]
    return ports, members


_INSTANCE = re.compile(r"/virtualmachinescalesets/[^/]+/virtualmachines/(\d+)/", re.IGNORECASE)


def _allot(what: str, start: int, end: int, members: list[str], before: dict[str, int]) -> dict[str, int]:
    """A frontend port for each member (ip configuration id): the one it had if still free and in the
    range; else, for a Uniform scale set's instance N, start + N as Azure gives it when free; else the
    lowest free one, members taken in natural order."""
    ordered = sorted(members, key=natural)
    out: dict[str, int] = {}
    taken: set[int] = set()
    for cfg in ordered:
        port = before.get(cfg.lower())
        if port is not None and start <= port <= end and port not in taken:
            out[cfg] = port
            taken.add(port)
    for cfg in ordered:
        instance = _INSTANCE.search(cfg)
        port = start + int(instance.group(1)) if instance else None
        if cfg not in out and port is not None and port <= end and port not in taken:
            out[cfg] = port
            taken.add(port)
    free = (p for p in range(start, end + 1) if p not in taken)
    for cfg in ordered:
        if cfg not in out:
            port = next(free, None)
            if port is None:
                raise bad_request("FrontendPortRangeExhausted", f"{what} has {len(ordered)} members but only "
                                  f"{end - start + 1} frontend ports ({start}-{end}); widen the port range.")
            out[cfg] = port
    return out


def assign_ports(lb_id: str, props: dict[str, Any], previous: dict[str, Any],
                 changes: dict[str, dict[str, bool]] | None = None) -> None:
    """Give each member of a NAT pool and of a range rule's pool its frontend port, keeping those of
    `previous` (the stored properties) and applying `changes` (NAT pool name, lower case ->
    {ip configuration id: joins}). A NAT pool's members become its derived NAT rules; a range rule's
    go to its pool's `loadBalancerBackendAddresses`."""
    ports, members = _previous_ports(previous)
    for pool_name, cfgs in (changes or {}).items():
        for cfg_id, present in cfgs.items():
            if present:
                members.setdefault(pool_name, {})[cfg_id.lower()] = cfg_id
            else:
                members.get(pool_name, {}).pop(cfg_id.lower(), None)
    nat_pools = _nat_pools(props)
    for name, cfgs in members.items():
        if cfgs and name not in nat_pools:
            raise in_use_error("InUseInboundNatPoolCannotBeDeleted", f"Inbound NAT pool {lb_id}/inboundNatPools/{name}",
                               next(iter(cfgs.values())))
    old_rules = {r["name"].lower(): r for r in previous.get("inboundNatRules") or []}
    user = [r for r in props.get("inboundNatRules") or [] if derived_nat_pool(r["name"], nat_pools) is None]
    derived = []
    for key, pool in nat_pools.items():
        pp = pool["properties"]
        start = pp["frontendPortRangeStart"]
        cfgs = list(members.get(key, {}).values())
        before = {c: port for (kind, name, c), port in ports.items() if kind == "pool" and name == key}
        alloc = _allot(f"Inbound NAT pool {pool['id']}", start, pp["frontendPortRangeEnd"], cfgs, before)
        for cfg, port in sorted(alloc.items(), key=lambda item: item[1]):
            name = f"{pool['name']}.{port - start}"
            entry = child_entry(lb_id, "inboundNatRules", NAT_RULE_TYPE, name, {
                "frontendIPConfiguration": pp["frontendIPConfiguration"], "frontendPort": port,
                "backendPort": pp["backendPort"], "protocol": pp["protocol"],
                "idleTimeoutInMinutes": pp["idleTimeoutInMinutes"], "enableFloatingIP": pp["enableFloatingIP"],
                "enableTcpReset": pp["enableTcpReset"], "backendIPConfiguration": ref(cfg)}, new_etag())
            old = old_rules.get(name.lower())
            if old is not None and old.get("properties") == entry["properties"]:
                entry["etag"] = old.get("etag", entry["etag"])
            derived.append(entry)
    props["inboundNatRules"] = user + derived
    ranged: dict[str, list[dict[str, Any]]] = {}
    for r in user:
        rp = r["properties"]
        if "frontendPortRangeStart" in rp and rp.get("backendAddressPool"):
            ranged.setdefault(rp["backendAddressPool"]["id"].lower(), []).append(r)
    for pool in props.get("backendAddressPools") or []:
        cfgs = [m["id"] for m in pool["properties"].get("backendIPConfigurations") or []]
        mappings: dict[str, list[dict[str, Any]]] = {c.lower(): [] for c in cfgs}
        for r in ranged.get(pool["id"].lower(), []):
            rp, key = r["properties"], r["name"].lower()
            before = {c: port for (kind, name, c), port in ports.items() if kind == "rule" and name == key}
            for cfg, port in _allot(f"Inbound NAT rule {r['id']}", rp["frontendPortRangeStart"],
                                    rp["frontendPortRangeEnd"], cfgs, before).items():
                mappings[cfg.lower()].append({"inboundNatRuleName": r["name"], "frontendPort": port,
                                              "backendPort": rp["backendPort"]})
        pool["properties"]["loadBalancerBackendAddresses"] = [
            {"name": address_name(c), "properties": {"networkInterfaceIPConfiguration": ref(c),
                                                     "inboundNatRulesPortMapping": mappings[c.lower()]}}
            for c in sorted(cfgs, key=natural)]


# what Azure shows on each sub-resource: the rules that use it
BACKREFS = {"frontendIPConfigurations": ("loadBalancingRules", "inboundNatRules", "inboundNatPools", "outboundRules"),
            "backendAddressPools": ("loadBalancingRules", "inboundNatRules", "outboundRule", "outboundRules"),
            "probes": ("loadBalancingRules",)}


def _backrefs(props: dict[str, Any]) -> None:
    by_id: dict[str, dict[str, Any]] = {}
    for collection, fields in BACKREFS.items():
        for e in props.get(collection) or []:
            for f in fields:
                e["properties"].pop(f, None)
            by_id[e["id"].lower()] = e

    def add(target: dict[str, str] | None, field: str, rid: str) -> None:
        if target and (e := by_id.get(target["id"].lower())) is not None:
            e["properties"].setdefault(field, []).append(ref(rid))

    for r in props.get("loadBalancingRules") or []:
        for field in ("frontendIPConfiguration", "backendAddressPool", "probe"):
            add(r["properties"].get(field), "loadBalancingRules", r["id"])
    for r in props.get("inboundNatRules") or []:
        add(r["properties"].get("frontendIPConfiguration"), "inboundNatRules", r["id"])
        add(r["properties"].get("backendAddressPool"), "inboundNatRules", r["id"])
    for p in _nat_pools(props).values():
        add(p["properties"].get("frontendIPConfiguration"), "inboundNatPools", p["id"])
    for o in _outbound_rules(props):
        for f in o["properties"]["frontendIPConfigurations"]:
            add(f, "outboundRules", o["id"])
        add(o["properties"]["backendAddressPool"], "outboundRules", o["id"])
        pool = by_id.get(o["properties"]["backendAddressPool"]["id"].lower())
        if pool is not None:
            pool["properties"].setdefault("outboundRule", ref(o["id"]))


def _keep_server_refs(props: dict[str, Any], old: dict[str, Any]) -> None:
    """NICs own the pool and NAT rule memberships; a PUT of the load balancer keeps them."""
    for collection, field in (("backendAddressPools", "backendIPConfigurations"),
                              ("inboundNatRules", "backendIPConfiguration")):
        before = {e["name"].lower(): e["properties"].get(field) for e in old.get(collection) or []}
        for e in props[collection]:
            if before.get(e["name"].lower()):
                e["properties"][field] = before[e["name"].lower()]


def _settle(lb_id: str, props: dict[str, Any], previous: dict[str, Any],
            changes: dict[str, dict[str, bool]] | None = None) -> None:
    """Members' ports, back-references and outbound capacity, after any change of the load balancer
    or of its members."""
    assign_ports(lb_id, props, previous, changes)
    _backrefs(props)
    check_outbound_capacity(props)


async def _write_children(tx: Tx, lb: Resource, skip: str | None = None) -> None:
    """The child rows (NAT rules, pools and the read-only parts) as the load balancer's body lists
    them; unchanged rows, and `skip` (a child that its own request writes), are left alone."""
    props = lb.body["properties"]
    for children in (NAT_RULES, POOLS, *READ_ONLY_PARTS.values()):
        wanted = {e["name"].lower(): e for e in props.get(children.collection) or []}
        for row in await children.rows(tx, lb):
            entry = wanted.get(row.name.lower())
            if row.key == skip:
                wanted.pop(row.name.lower(), None)
            elif entry is None:
                await tx.delete_resource(row.key)
            elif row.body == entry:
                wanted.pop(row.name.lower())
        for entry in wanted.values():
            key = children.child_key(lb, entry["name"])
            if key == skip:
                continue
            old = await tx.get_resource(key)
            gen = (old.desired_gen + 1) if old else 1
            await tx.put_resource(Resource(
                key=key, id=entry["id"], subscription_id=lb.subscription_id, resource_group=lb.resource_group,
                type=children.child_type.lower(), name=entry["name"], body=entry, provisioning_state="Succeeded",
                parent_key=lb.key, desired_gen=gen, observed_gen=gen, created_at=old.created_at if old else 0.0))


async def sync_members(tx: Tx, lb_key: str, nat_pool_changes: dict[str, dict[str, bool]] | None = None,
                       skip: str | None = None) -> None:
    """After members joined or left (a NIC's PUT or DELETE: `nat_pool_changes` holds its NAT pool
    joins), or a NAT rule child changed: the load balancer's ports and back-references, in the same
    transaction."""
    changes = nat_pool_changes or {}
    lb = await tx.get_resource(lb_key)
    if lb is None:
        if any(present for cfgs in changes.values() for present in cfgs.values()):
            raise bad_request("InvalidResourceReference", f"Load balancer {lb_key} referenced by an ip configuration "
                              "was not found.")
        return
    props = lb.body.setdefault("properties", {})
    nat_pools = _nat_pools(props)
    for name, cfgs in changes.items():
        for cfg_id, present in cfgs.items():
            if present and name not in nat_pools:
                raise bad_request("InvalidResourceReference", f"Resource {lb.id}/inboundNatPools/{name} referenced "
                                  f"by resource {cfg_id} was not found.")
    before = copy.deepcopy(props)
    _settle(lb.id, props, before, changes)
    if props != before:
        lb.body["etag"] = new_etag()
        await tx.put_resource(lb)
        await _write_children(tx, lb, skip)


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
        public = {f["id"].lower() for f in frontends if "publicIPAddress" in f["properties"]}
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
            # newer api-versions show the pool in both forms, and `az network lb rule update` PUTs back the plural
            rules[-1]["properties"]["backendAddressPools"] = [rules[-1]["properties"]["backendAddressPool"]]
        nat_pools = [entry("inboundNatPools", p, nat_pool_props(lb_id, p, names)) for p in raw["inboundNatPools"]]
        pools_by_name = {p["name"].lower(): p for p in nat_pools}
        # a NAT pool's member rules (`{pool}.{n}`, as a GET shows them) follow its members: not taken from requests
        nat_rules = [entry("inboundNatRules", r, nat_rule_props(lb_id, r, names)) for r in raw["inboundNatRules"]
                     if derived_nat_pool(r["name"], pools_by_name) is None]
        outbound = [entry("outboundRules", o, outbound_props(lb_id, o, names, public)) for o in raw["outboundRules"]]
        check_port_conflicts([(r["name"], r["properties"]) for r in rules + nat_rules + nat_pools])
        check_outbound(lb_id, sku["name"], rules, outbound)
        out = {"frontendIPConfigurations": frontends, "backendAddressPools": pools, "probes": probes,
               "loadBalancingRules": rules, "inboundNatRules": nat_rules, "inboundNatPools": nat_pools,
               "outboundRules": outbound}
        _backrefs(out)
        return {"sku": sku, "properties": out}

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        props = resource.body["properties"]
        old = (existing.body.get("properties") or {}) if existing else {}
        _keep_server_refs(props, old)
        _settle(resource.id, props, old)
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
        await _write_children(tx, resource)

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        props = resource.body.get("properties") or {}
        for pool in props.get("backendAddressPools") or []:
            users = pool["properties"].get("backendIPConfigurations") or []
            if users:
                raise in_use_error("InUseLoadBalancerCannotBeDeleted", f"Load balancer {resource.id}", users[0]["id"])
        _, members = _previous_ports(props)
        for cfgs in members.values():
            if cfgs:
                raise in_use_error("InUseLoadBalancerCannotBeDeleted", f"Load balancer {resource.id}",
                                   next(iter(cfgs.values())))

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
    declares one as a top-level child resource), and the rules a NAT pool derives for its members
    (read here, changed only through the pool)."""

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
        nat_pools = _nat_pools(lb_props)
        if (pool := derived_nat_pool(resource.name, nat_pools)) is not None:
            raise bad_request("InvalidRequestFormat", f"Inbound NAT rule {resource.name} stands for a member of "
                              f"inbound NAT pool {pool['id']}; change the pool or its members instead.")
        names = {c: {e["name"].lower() for e in lb_props.get(c) or []} for c in COLLECTIONS}
        props = nat_rule_props(lb.id, {"name": resource.name, "properties": resource.body["properties"]}, names)
        old = (existing.body.get("properties") or {}) if existing else {}
        if old.get("backendIPConfiguration"):
            props["backendIPConfiguration"] = old["backendIPConfiguration"]
        siblings = [(r["name"], r["properties"]) for r in lb_props.get("loadBalancingRules") or []]
        siblings += [(r["name"], r["properties"]) for r in lb_props.get("inboundNatRules") or []
                     if r["name"].lower() != resource.name.lower() and derived_nat_pool(r["name"], nat_pools) is None]
        siblings += [(p["name"], p["properties"]) for p in nat_pools.values()]
        check_port_conflicts([*siblings, (resource.name, props)])
        resource.body["properties"] = {**props, "provisioningState": resource.body["properties"].get(
            "provisioningState", "Succeeded")}
        await NAT_RULES.write_parent(tx, resource.parent_key, resource)
        await sync_members(tx, resource.parent_key, skip=resource.key)  # a range rule's ports for its pool

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        user = (resource.body.get("properties") or {}).get("backendIPConfiguration")
        if user:
            raise in_use_error("InUseInboundNatRuleCannotBeDeleted", f"Inbound NAT rule {resource.id}", user["id"])

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        if resource.parent_key:
            await NAT_RULES.write_parent(tx, resource.parent_key, None, drop=resource.name)
            await sync_members(tx, resource.parent_key, skip=resource.key)

    async def realise(self, services: "Services", resource: Resource) -> None:
        await _sync_parent(services, resource)

    async def removed(self, services: "Services", resource: Resource) -> None:
        await _sync_parent(services, resource)


async def _sync_parent(services: "Services", resource: Resource) -> None:
    async with services.store.read() as tx:
        lb = await tx.get_resource(resource.parent_key or "")
    if lb is not None:
        await services.network.sync_load_balancer(lb)


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
    actions = {"queryinboundnatruleportmapping": "query_port_mapping"}

    async def query_port_mapping(self, ctx: "RequestContext", resource: Resource) -> Response:
        """`POST …/backendAddressPools/{pool}/queryInboundNatRulePortMapping` (`az network lb
        list-mapping`): the frontend ports a member (by ip configuration or private IP) holds through
        range NAT rules, the same ones the data path maps."""
        if ctx.method != "POST":
            raise ArmError(405, "MethodNotAllowed", "queryInboundNatRulePortMapping is a POST action.")
        body = await ctx.json_body(required=False) or {}
        if not isinstance(body, dict):
            raise bad_request("InvalidRequestFormat", "The request body must be a JSON object.")
        address = body.get("ipAddress")
        cfg = (body.get("ipConfiguration") or {}).get("id") if isinstance(body.get("ipConfiguration"), dict) else None
        if not address and not cfg:
            raise bad_request("InvalidRequestFormat", "Either 'ipAddress' or 'ipConfiguration' of a backend address "
                              "of the pool is required.", "ipConfiguration")
        members = resource.body["properties"].get("loadBalancerBackendAddresses") or []
        found = None
        async with ctx.services.store.read() as tx:
            lb = await tx.get_resource(resource.parent_key or "")
            for m in members:
                cfg_id = m["properties"]["networkInterfaceIPConfiguration"]["id"]
                if cfg and cfg_id.lower() == cfg.lower():
                    found = m
                elif address and not cfg and await _address_of(tx, cfg_id) == str(address).strip():
                    found = m
                if found is not None:
                    break
        if found is None:
            raise ArmError(404, "BackendAddressNotFound", f"No backend address {cfg or address} was found in backend "
                           f"address pool {resource.id}.")
        protocols = {r["name"].lower(): r["properties"]["protocol"]
                     for r in ((lb.body.get("properties") or {}).get("inboundNatRules") or [] if lb else [])}
        return JSONResponse({"inboundNatRulePortMappings": [
            {"inboundNatRuleName": m["inboundNatRuleName"], "protocol": protocols.get(m["inboundNatRuleName"].lower()),
             "frontendPort": m["frontendPort"], "backendPort": m["backendPort"]}
            for m in found["properties"].get("inboundNatRulesPortMapping") or []]})


async def _address_of(tx: Tx, cfg_id: str) -> str | None:
    nic = await tx.get_resource(cfg_id.lower().split("/ipconfigurations/")[0])
    for c in ((nic.body.get("properties") or {}).get("ipConfigurations") or []) if nic else []:
        if c["id"].lower() == cfg_id.lower():
            return c["properties"].get("privateIPAddress")
    return None


class FrontendIPConfigurations(_LoadBalancerPart):
    type_path = ("loadBalancers", "frontendIPConfigurations")


class Probes(_LoadBalancerPart):
    type_path = ("loadBalancers", "probes")


class LoadBalancingRules(_LoadBalancerPart):
    type_path = ("loadBalancers", "loadBalancingRules")


class OutboundRules(_LoadBalancerPart):
    type_path = ("loadBalancers", "outboundRules")


LOAD_BALANCER_PARTS = (BackendAddressPools, FrontendIPConfigurations, Probes, LoadBalancingRules, OutboundRules)
