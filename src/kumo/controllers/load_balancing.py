"""Load balancers as one VNet sees them: which frontends map to which backends (load-balancing rules
and inbound NAT rules), and which health probes decide who is in rotation. Pure functions over
store records; the network controller allocates the transit addresses and runs the probes."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from kumo.drivers.network.spec import BalancedPort, PublicMapping
from kumo.store import Resource


@dataclass(frozen=True)
class ProbeTarget:
    key: tuple[str, str]  # (probe id, lower-case; backend IP)
    protocol: str
    address: str
    port: int
    path: str | None
    interval: float
    threshold: int  # consecutive failures that take a backend out of rotation


def load_balancer_keys(nics: Mapping[str, Resource]) -> set[str]:
    """Load balancers whose pools or NAT rules these NICs' ip configurations join."""
    keys = set()
    for nic in nics.values():
        for cfg in nic.body["properties"]["ipConfigurations"]:
            c = cfg["properties"]
            for r in (c.get("loadBalancerBackendAddressPools") or []) + (c.get("loadBalancerInboundNatRules") or []):
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
         transits: Mapping[str, ipaddress.IPv4Address], health: Mapping[tuple[str, str], bool | None]
         ) -> tuple[list[PublicMapping], list[BalancedPort], list[ProbeTarget]]:
    members: dict[str, list[tuple[str, ipaddress.IPv4Address]]] = {}  # pool id -> (ip config id, address)
    nat_users: dict[str, ipaddress.IPv4Address] = {}  # NAT rule id -> address
    for nic in nics.values():
        for cfg in nic.body["properties"]["ipConfigurations"]:
            c = cfg["properties"]
            address = ipaddress.IPv4Address(c["privateIPAddress"])
            for pool in c.get("loadBalancerBackendAddressPools") or []:
                members.setdefault(pool["id"].lower(), []).append((cfg["id"].lower(), address))
            for rule in c.get("loadBalancerInboundNatRules") or []:
                nat_users[rule["id"].lower()] = address
    for pool in members.values():
        pool.sort()
    mappings: list[PublicMapping] = []
    ports: list[BalancedPort] = []
    targets: list[ProbeTarget] = []
    for lb in lbs.values():
        props = lb.body["properties"]
        frontends: dict[str, ipaddress.IPv4Address] = {}
        for f in props.get("frontendIPConfigurations") or []:
            fp, fid = f["properties"], f["id"].lower()
            if fp.get("publicIPAddress"):
                pip = pips.get(fp["publicIPAddress"]["id"].lower())
                address = (pip.body["properties"].get("ipAddress") if pip else None)
                if address and fid in transits:
                    mappings.append(PublicMapping(ipaddress.IPv4Address(address), transits[fid], None))
                    frontends[fid] = transits[fid]
            elif fp["subnet"]["id"].lower().startswith(f"{vnet_key}/subnets/") and fp.get("privateIPAddress"):
                frontends[fid] = ipaddress.IPv4Address(fp["privateIPAddress"])
        probes = {p["id"].lower(): p["properties"] for p in props.get("probes") or []}
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
            for protocol in _protocols(r["protocol"]):
                ports.append(BalancedPort(frontend, protocol, r["frontendPort"], healthy, r["loadDistribution"]))
        for rule in props.get("inboundNatRules") or []:
            r = rule["properties"]
            frontend = frontends.get(r["frontendIPConfiguration"]["id"].lower())
            if frontend is None:
                continue
            if "frontendPortRangeStart" in r:  # one frontend port per pool member, in order
                pool = members.get(r["backendAddressPool"]["id"].lower(), [])
                span = r["frontendPortRangeEnd"] - r["frontendPortRangeStart"] + 1
                pairs = [(r["frontendPortRangeStart"] + i, ip) for i, (_, ip) in enumerate(pool[:span])]
            elif rule["id"].lower() in nat_users:
                pairs = [(r["frontendPort"], nat_users[rule["id"].lower()])]
            else:
                pairs = []
            for port, ip in pairs:
                for protocol in _protocols(r["protocol"]):
                    ports.append(BalancedPort(frontend, protocol, port, ((ip, r["backendPort"]),)))
    return mappings, ports, list(dict.fromkeys(targets))


def _protocols(protocol: str) -> tuple[str, ...]:
    return ("tcp", "udp") if protocol == "All" else (protocol.lower(),)


def reach(lb: Resource) -> tuple[set[str], set[str]]:
    """What a load balancer touches: the NICs of its members, and the VNets of its private frontends."""
    props = lb.body.get("properties") or {}
    members = [m for pool in props.get("backendAddressPools") or []
               for m in pool["properties"].get("backendIPConfigurations") or []]
    members += [r["properties"]["backendIPConfiguration"] for r in props.get("inboundNatRules") or []
                if r["properties"].get("backendIPConfiguration")]
    nics = {m["id"].lower().split("/ipconfigurations/")[0] for m in members}
    vnets = {f["properties"]["subnet"]["id"].lower().split("/subnets/")[0]
             for f in props.get("frontendIPConfigurations") or [] if f["properties"].get("subnet")}
    return nics, vnets
