"""Load balancers as one VNet sees them: which frontends map to which backends (load-balancing rules,
inbound NAT rules, the NAT rules NAT pools derive for their members and range rules' per-member
ports), which health probes decide who is in rotation, and where pool members leave from (outbound
rules). Pure functions over store records; the network controller allocates the transit addresses,
runs the probes and reads the counters."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kumo.drivers.network.spec import BalancedPort, FlowMatch, OutboundSnat, PublicMapping
from kumo.store import Resource

MAX_SNAT_PORTS = 64000  # SNAT ports per frontend IP, as Azure counts them
FIRST_SNAT_PORT = 1024


@dataclass(frozen=True)
class ProbeTarget:
    key: tuple[str, str]  # (probe id, lower-case; backend IP)
    protocol: str
    address: str
    port: int
    path: str | None
    interval: float
    threshold: int  # consecutive failures that take a backend out of rotation


@dataclass(frozen=True)
class LoadBalancerStats:
    """A load balancer's measurements, over every VNet it serves. The counts are cumulative since its
    counters were made (with it, in each VNet): `byte_count`/`packet_count` every packet of the flows
    its frontend ports translated, both directions; `syn_count` the TCP SYNs that reached a frontend
    port. `probes_*` count (health probe, backend) pairs, `rules_*` load-balancing rules (per frontend
    port and VNet) with at least one backend in rotation."""

    byte_count: int = 0
    packet_count: int = 0
    syn_count: int = 0
    probes_up: int = 0
    probes_total: int = 0
    rules_up: int = 0
    rules_total: int = 0
    vnets: tuple[str, ...] = ()  # the VNets whose counters these are (none: the load balancer serves none)


@dataclass
class Plan:
    mappings: list[PublicMapping] = field(default_factory=list)  # public frontends to their transit address
    balanced: list[BalancedPort] = field(default_factory=list)
    probes: list[ProbeTarget] = field(default_factory=list)
    outbound: list[OutboundSnat] = field(default_factory=list)
    rules: dict[str, tuple[int, int]] = field(default_factory=dict)  # lb key -> (rules with a backend up, rules)


def counter_name(lb_key: str) -> str:
    """The name of a load balancer's counters in a VNet's nftables (`<name>_b`, `<name>_s`)."""
    return "l" + hashlib.sha1(lb_key.lower().encode()).hexdigest()[:10]


_DIGITS = re.compile(r"(\d+)")


def natural(text: str) -> tuple[Any, ...]:
    """A sort key that orders `vm/2` before `vm/10` (scale set instance ids)."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(text.lower()))


def default_outbound_ports(members: int) -> int:
    """Azure's SNAT ports per instance for allocatedOutboundPorts 0, by backend pool size."""
    for size, ports in ((50, 1024), (100, 512), (200, 256), (400, 128), (800, 64)):
        if members <= size:
            return ports
    return 32


def load_balancer_keys(nics: Mapping[str, Resource]) -> set[str]:
    """Load balancers whose pools, NAT rules or NAT pools these NICs' ip configurations join."""
    keys = set()
    for nic in nics.values():
        for cfg in nic.body["properties"]["ipConfigurations"]:
            c = cfg["properties"]
            for r in (c.get("loadBalancerBackendAddressPools") or []) + (c.get("loadBalancerInboundNatRules") or []) + \
                    (c.get("loadBalancerInboundNatPools") or []):
                keys.add(r["id"].lower().rsplit("/", 2)[0])
    return keys


def public_frontends(lbs: Mapping[str, Resource]) -> dict[str, str]:
    """frontend id (lower) -> its public IP's id (lower)."""
    out = {}
    for lb in lbs.values():
        for f in lb.body["properties"].get("frontendIPConfigurations") or []:
            pip = f["properties"].get("publicIPAddress")
            if pip:
                out[f["id"].lower()] = pip["id"].lower()
    return out


def plan(vnet_key: str, lbs: Mapping[str, Resource], nics: Mapping[str, Resource], pips: Mapping[str, Resource],
         transits: Mapping[str, ipaddress.IPv4Address], health: Mapping[tuple[str, str], bool | None]) -> Plan:
    out = Plan()
    addresses: dict[str, ipaddress.IPv4Address] = {}  # ip configuration id (lower) -> private IP, in this VNet
    members: dict[str, list[tuple[str, ipaddress.IPv4Address]]] = {}  # pool id -> (ip config id, address)
    own_public: set[str] = set()  # ip configurations with a public IP of their own
    for nic in nics.values():
        for cfg in nic.body["properties"]["ipConfigurations"]:
            c, cfg_id = cfg["properties"], cfg["id"].lower()
            address = ipaddress.IPv4Address(c["privateIPAddress"])
            addresses[cfg_id] = address
            if c.get("publicIPAddress"):
                own_public.add(cfg_id)
            for pool in c.get("loadBalancerBackendAddressPools") or []:
                members.setdefault(pool["id"].lower(), []).append((cfg_id, address))
    for pool in members.values():
        pool.sort(key=lambda m: natural(m[0]))
    targets: list[ProbeTarget] = []
    for lb_key, lb in lbs.items():
        props = lb.body["properties"]
        counter = counter_name(lb_key)
        basic = (lb.body.get("sku") or {}).get("name") == "Basic"
        frontends: dict[str, ipaddress.IPv4Address] = {}
        for f in props.get("frontendIPConfigurations") or []:
            fp, fid = f["properties"], f["id"].lower()
            if fp.get("publicIPAddress"):
                pip = pips.get(fp["publicIPAddress"]["id"].lower())
                address = (pip.body["properties"].get("ipAddress") if pip else None)
                if address and fid in transits:
                    out.mappings.append(PublicMapping(ipaddress.IPv4Address(address), transits[fid], None))
                    frontends[fid] = transits[fid]
            elif fp["subnet"]["id"].lower().startswith(f"{vnet_key}/subnets/") and fp.get("privateIPAddress"):
                frontends[fid] = ipaddress.IPv4Address(fp["privateIPAddress"])
        probes = {p["id"].lower(): p["properties"] for p in props.get("probes") or []}
        up = total = 0
        for rule in props.get("loadBalancingRules") or []:
            r = rule["properties"]
            frontend = frontends.get(r["frontendIPConfiguration"]["id"].lower())
            if frontend is None:
                continue
            pool = members.get(r["backendAddressPool"]["id"].lower(), [])
            probe_id = (r.get("probe") or {}).get("id", "").lower()
            probe = probes.get(probe_id)
            if probe is not None:
                targets += [ProbeTarget((probe_id, str(ip)), probe["protocol"], str(ip), probe["port"],
                                        probe.get("requestPath"), float(probe["intervalInSeconds"]),
                                        int(probe.get("probeThreshold") or probe["numberOfProbes"])) for _, ip in pool]
            healthy = tuple((ip, r["backendPort"]) for _, ip in pool
                            if probe is None or health.get((probe_id, str(ip))) is True)
            total, up = total + 1, up + bool(healthy)
            for protocol in _protocols(r["protocol"]):
                out.balanced.append(BalancedPort(frontend, protocol, r["frontendPort"], healthy, r["loadDistribution"],
                                                 members=tuple((ip, r["backendPort"]) for _, ip in pool),
                                                 counter=counter, expire_when_down=basic))
        out.rules[lb_key] = (up, total)
        ranged: dict[str, list[tuple[int, str]]] = {}  # range rule (lower) -> (frontend port, ip config id)
        for pool in props.get("backendAddressPools") or []:
            for a in pool["properties"].get("loadBalancerBackendAddresses") or []:
                cfg = ((a.get("properties") or {}).get("networkInterfaceIPConfiguration") or {}).get("id", "")
                for m in (a.get("properties") or {}).get("inboundNatRulesPortMapping") or []:
                    ranged.setdefault(m["inboundNatRuleName"].lower(), []).append((m["frontendPort"], cfg.lower()))
        for rule in props.get("inboundNatRules") or []:
            r = rule["properties"]
            frontend = frontends.get(r["frontendIPConfiguration"]["id"].lower())
            if frontend is None:
                continue
            if "frontendPortRangeStart" in r:  # each member's port, as the pool's backend addresses show it
                pairs = [(port, addresses[cfg]) for port, cfg in ranged.get(rule["name"].lower(), [])
                         if cfg in addresses]
            else:  # one NIC's, or a NAT pool member's (the rules a NAT pool derives)
                cfg = (r.get("backendIPConfiguration") or {}).get("id", "").lower()
                pairs = [(r["frontendPort"], addresses[cfg])] if cfg in addresses else []
            for port, ip in pairs:
                for protocol in _protocols(r["protocol"]):
                    backend = ((ip, r["backendPort"]),)
                    out.balanced.append(BalancedPort(frontend, protocol, port, backend, members=backend,
                                                     counter=counter))
        pool_sizes = {p["id"].lower(): len(p["properties"].get("backendIPConfigurations") or [])
                      for p in props.get("backendAddressPools") or []}
        for rule in props.get("outboundRules") or []:
            if "id" in rule:  # (a load balancer stored before kumo checked outbound rules kept them as given)
                out.outbound += _outbound(rule["properties"], frontends, members, pool_sizes, own_public)
    out.probes = list(dict.fromkeys(targets))
    return out


def _outbound(r: dict[str, Any], frontends: Mapping[str, ipaddress.IPv4Address],
              members: Mapping[str, list[tuple[str, ipaddress.IPv4Address]]], pool_sizes: Mapping[str, int],
              own_public: set[str]) -> list[OutboundSnat]:
    """An outbound rule: each pool member (in natural order of its ip configuration id) gets its own
    block of `allocatedOutboundPorts` source ports on the rule's first frontend, then the next one
    when a frontend's 64,000 are given out, as Azure spreads them. Members with a public IP of their
    own keep leaving from it (as on Azure), but hold their block all the same, so blocks stay put."""
    transits = [frontends[f["id"].lower()] for f in r["frontendIPConfigurations"] if f["id"].lower() in frontends]
    pool_id = r["backendAddressPool"]["id"].lower()
    pool = members.get(pool_id, [])
    if not transits or not pool:
        return []
    size = r["allocatedOutboundPorts"] or default_outbound_ports(pool_sizes.get(pool_id, len(pool)))
    per_frontend = MAX_SNAT_PORTS // size
    out = []
    for i, (cfg, ip) in enumerate(pool):
        index, block = divmod(i, per_frontend)
        if cfg in own_public or index >= len(transits):
            continue
        first = FIRST_SNAT_PORT + block * size
        out += [OutboundSnat(ip, transits[index], protocol, (first, first + size - 1))
                for protocol in _protocols(r["protocol"])]
    return out


def _protocols(protocol: str) -> tuple[str, ...]:
    return ("tcp", "udp") if protocol == "All" else (protocol.lower(),)


def flows_to_flush(old: list[BalancedPort], new: list[BalancedPort]) -> list[FlowMatch]:
    """The established flows a re-render ends: those to a member that left a frontend port (its NIC
    deleted, its ip configuration out of the pool, the rule or NAT mapping gone), and on a Basic load
    balancer every flow of a port that lost its last backend in rotation (Azure: "all probes down,
    all TCP flows expire"). A member its probe only marks down keeps its flows, as on Azure's
    Standard SKU."""
    def pairs(ports: list[BalancedPort]) -> set[tuple[str, ipaddress.IPv4Address, int, tuple[Any, int]]]:
        return {(b.protocol, b.frontend, b.port, m) for b in ports for m in (b.members or b.backends)}

    out = [FlowMatch(protocol, frontend, port, member)
           for protocol, frontend, port, member in sorted(pairs(old) - pairs(new), key=str)]
    now = {(b.protocol, b.frontend, b.port): b for b in new}
    for b in old:
        after = now.get((b.protocol, b.frontend, b.port))
        if b.backends and after is not None and after.expire_when_down and not after.backends and after.members:
            out.append(FlowMatch(b.protocol, b.frontend, b.port))
    return out


def reach(lb: Resource) -> tuple[set[str], set[str]]:
    """What a load balancer touches: the NICs of its members (pools, NAT rules and the rules NAT pools
    derive), and the VNets of its private frontends."""
    props = lb.body.get("properties") or {}
    members = [m for pool in props.get("backendAddressPools") or []
               for m in pool["properties"].get("backendIPConfigurations") or []]
    members += [r["properties"]["backendIPConfiguration"] for r in props.get("inboundNatRules") or []
                if r["properties"].get("backendIPConfiguration")]
    nics = {m["id"].lower().split("/ipconfigurations/")[0] for m in members}
    vnets = {f["properties"]["subnet"]["id"].lower().split("/subnets/")[0]
             for f in props.get("frontendIPConfigurations") or [] if f["properties"].get("subnet")}
    return nics, vnets
