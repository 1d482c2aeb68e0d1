"""The real network driver: network namespaces, veth/tap/bridge links and routes through iproute2,
filtering and NAT through nftables. Every call is idempotent: it reads what the host has, changes
only what differs from the spec, and finishes a half-done job after a crash."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from kumo.drivers.hostcmd import HostCommandError, missing, run
from kumo.drivers.network import nftables
from kumo.drivers.network.spec import (AZURE_PLATFORM_IP, GATEWAY_MAC, UPLINK, EndpointSpec, FlowMatch, HostSpec,
                                       Uplink, VNetSpec)

log = logging.getLogger("kumo.network")

NETNS_DIR = Path("/run/netns")
ENDPOINT_IF = "eth0"


class NetworkUnavailable(Exception):
    """The host cannot realise virtual networks; the message says what to install or change."""


def _proc_write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


async def set_host_sysctl(link: str, name: str, value: str) -> None:
    """A per-link setting on one of kumo's own links in the host namespace (never a global one)."""
    await asyncio.to_thread(_proc_write, f"/proc/sys/net/ipv4/conf/{link}/{name}", value)


class LinuxNetworkDriver:
    def __init__(self) -> None:
        self._applied_rules: dict[str, str] = {}  # netns -> ruleset text last loaded
        self._applied_stats: dict[str, str] = {}  # netns -> load balancer counters' ruleset last loaded
        self._configured: dict[str, EndpointSpec] = {}  # port -> endpoint spec last configured
        self._neighbours: dict[str, dict[tuple[str, str], str]] = {}  # netns -> permanent entries it holds
        self._uplinks: dict[str, Uplink] = {}  # netns -> uplink last configured
        self._host_applied: tuple[str, str] | None = None  # (routes, ruleset) last applied

    async def check(self) -> None:
        if os.geteuid() != 0:
            raise NetworkUnavailable("kumo needs root (CAP_NET_ADMIN) to create virtual networks: run `kumo up` as "
                                     "root")
        if gone := missing("ip", "nft"):
            raise NetworkUnavailable(f"{' and '.join(gone)} not found: install them with "
                                     "`apt-get install iproute2 nftables`")

    # -- reading the host -----------------------------------------------------------------------
    @staticmethod
    async def list_netns() -> set[str]:
        names = await asyncio.to_thread(lambda: [p.name for p in NETNS_DIR.iterdir()] if NETNS_DIR.exists() else [])
        return set(names)

    @staticmethod
    async def links(netns: str | None = None) -> dict[str, dict]:
        argv = ["ip", "-j", "-d"] + (["-n", netns] if netns else []) + ["addr", "show"]
        return {link["ifname"]: link for link in json.loads(await run(*argv) or "[]")}

    # -- VNet namespaces ------------------------------------------------------------------------
    async def ensure_vnet(self, spec: VNetSpec) -> None:
        ns = spec.netns
        present = await self.list_netns()
        fresh = ns not in present
        if fresh:
            await run("ip", "netns", "add", ns)
        links = await self.links(ns)
        batch = ["link set lo up"] if links.get("lo", {}).get("operstate") != "UNKNOWN" else []
        # the router owns Azure's platform address: health probes come from it, as on Azure
        lo_addresses = {a.get("local") for a in links.get("lo", {}).get("addr_info", [])}
        if AZURE_PLATFORM_IP not in lo_addresses:
            batch.append(f"addr add {AZURE_PLATFORM_IP}/32 dev lo")
        await self._ensure_uplink(spec, links, batch)
        new_bridges = []
        for subnet in spec.subnets:
            if subnet.bridge not in links:
                batch += [f"link add {subnet.bridge} address {GATEWAY_MAC} type bridge"]
                new_bridges.append(subnet.bridge)
            batch += _addresses(subnet.bridge, links.get(subnet.bridge), [str(subnet.gateway)])
            batch.append(f"link set {subnet.bridge} up")
        wanted_ports = {e.port for e in spec.endpoints}
        wanted_bridges = {s.bridge for s in spec.subnets}
        for name, link in links.items():  # links of subnets and endpoints that are gone
            kind = (link.get("linkinfo") or {}).get("info_kind")
            if (kind == "bridge" and name not in wanted_bridges) or \
                    (kind in ("veth", "tun") and name != UPLINK and name not in wanted_ports):
                batch.append(f"link del {name}")
                self._configured.pop(name, None)
        endpoint_batches: dict[str, list[str]] = {}
        new_namespaces: set[str] = set()
        for e in spec.endpoints:
            if e.kind == "netns" and e.netns not in present:  # (again): its veth must be made anew too
                await run("ip", "netns", "add", e.netns)
                present.add(e.netns)
                new_namespaces.add(e.netns)
                if e.port in links:
                    batch.append(f"link del {e.port}")
            if e.port not in links or e.netns in new_namespaces:
                if e.kind == "netns":
                    assert e.netns
                    batch.append(f"link add {e.port} type veth peer name {ENDPOINT_IF} netns {e.netns}")
                else:
                    batch.append(f"tuntap add dev {e.port} mode tap")
                self._configured.pop(e.port, None)
            batch += [f"link set {e.port} master {e.bridge}", f"link set {e.port} type bridge_slave isolated on",
                      f"link set {e.port} up"]
            if e.kind == "netns" and self._configured.get(e.port) != e:
                endpoint_batches[e.port] = await self._endpoint_commands(e, fresh=e.netns in new_namespaces)
        batch += await self._neighbour_commands(ns, spec)
        if batch:
            try:
                await run("ip", "-n", ns, "-batch", "-", input="\n".join(batch) + "\n")
            except HostCommandError:
                self._neighbours.pop(ns, None)  # not known what was applied: read it next time
                raise
        if fresh or new_bridges:
            await self._vnet_sysctls(ns, new_bridges if not fresh else [s.bridge for s in spec.subnets])
        for e in spec.endpoints:
            if e.port in endpoint_batches:
                await run("ip", "-n", e.netns or "", "-batch", "-", input="\n".join(endpoint_batches[e.port]) + "\n")
            self._configured[e.port] = e
        rules = nftables.vnet_ruleset(spec)
        if self._applied_rules.get(ns) != rules:
            await run("ip", "netns", "exec", ns, "nft", "-f", "-", input=rules)
            self._applied_rules[ns] = rules
        await self._apply_stats(spec)

    async def _apply_stats(self, spec: VNetSpec) -> None:
        """The load balancers' counters: declared and refilled when the ports change, stale ones (of a
        load balancer gone from the VNet) deleted; those that stay keep counting."""
        ns = spec.netns
        wanted = nftables.stats_ruleset(spec)
        if self._applied_stats.get(ns) == wanted:
            return
        stale = set(await self.read_counters(ns)) - nftables.counter_names(spec) if nftables.counted_ports(spec) \
            else set()
        await run("ip", "netns", "exec", ns, "nft", "-f", "-", input=nftables.stats_ruleset(spec, stale))
        self._applied_stats[ns] = wanted

    @staticmethod
    async def read_counters(netns: str) -> dict[str, tuple[int, int]]:
        """The load balancers' counters in a VNet namespace: name -> (packets, bytes); {} when it has none."""
        out = await run("ip", "netns", "exec", netns, "nft", "-j", "list", "counters", "table", "inet",
                        nftables.STATS_TABLE, check=False)
        try:
            items = json.loads(out or "{}").get("nftables", [])
        except ValueError:
            return {}
        return {c["counter"]["name"]: (int(c["counter"]["packets"]), int(c["counter"]["bytes"]))
                for c in items if "counter" in c}

    @staticmethod
    async def flush_flows(netns: str, flows: list[FlowMatch]) -> None:
        """Delete established flows from a VNet's conntrack table (conntrack-tools' `conntrack -D`): the
        next packet of such a flow is translated afresh, so it no longer reaches a backend that left."""
        if not flows:
            return
        if missing("conntrack"):
            log.warning("conntrack not found (apt-get install conntrack): %d load balancer flows not flushed",
                        len(flows))
            return
        for f in flows:
            argv = ["ip", "netns", "exec", netns, "conntrack", "-D", "-p", f.protocol, "--orig-dst", str(f.frontend),
                    "--dport", str(f.port)]
            if f.backend is not None:
                argv += ["--reply-src", str(f.backend[0]), "--reply-port-src", str(f.backend[1])]
            await run(*argv, check=False)  # exit status 1: there was no such flow

    async def _neighbour_commands(self, ns: str, spec: VNetSpec) -> list[str]:
        """The router knows every endpoint's MAC (permanent entries) instead of learning it by ARP: an
        address freed and given to a new endpoint reaches the new one at once, not when a cached
        entry for the old MAC expires. What this process set is remembered; otherwise it is read."""
        wanted = {(e.bridge, str(e.address.ip)): e.mac for e in spec.endpoints}
        have = self._neighbours.get(ns)
        if have is None:
            current = json.loads(await run("ip", "-n", ns, "-j", "neigh", "show", "nud", "permanent") or "[]")
            have = {(n["dev"], n["dst"]): (n.get("lladdr") or "").lower() for n in current if n.get("dev")}
        bridges = {s.bridge for s in spec.subnets}
        cmds = [f"neigh del {ip} dev {dev}" for dev, ip in have if dev in bridges and (dev, ip) not in wanted]
        cmds += [f"neigh replace {ip} lladdr {mac} dev {bridge} nud permanent"
                 for (bridge, ip), mac in wanted.items() if have.get((bridge, ip)) != mac]
        self._neighbours[ns] = wanted
        return cmds

    async def _ensure_uplink(self, spec: VNetSpec, links: dict[str, dict], batch: list[str]) -> None:
        up = spec.uplink
        if UPLINK in links and self._uplinks.get(spec.netns) == up:
            return  # configured by this process and still there
        host_links = await self.links()
        if UPLINK not in links:
            if up.host_link in host_links:  # its peer is gone: start over
                await run("ip", "link", "del", up.host_link)
            await run("ip", "link", "add", up.host_link, "type", "veth", "peer", "name", UPLINK, "netns", spec.netns)
            host_links = await self.links()
        host_batch = _addresses(up.host_link, host_links.get(up.host_link), [f"{up.host_address}/31"])
        host_batch.append(f"link set {up.host_link} up")
        await run("ip", "-batch", "-", input="\n".join(host_batch) + "\n")
        for name in ("forwarding", "route_localnet"):
            await set_host_sysctl(up.host_link, name, "1")
        batch += _addresses(UPLINK, links.get(UPLINK), [f"{up.vnet_address}/31"])
        batch += [f"link set {UPLINK} up", f"route replace default via {up.host_address} dev {UPLINK}"]
        self._uplinks[spec.netns] = up

    @staticmethod
    async def _endpoint_commands(e: EndpointSpec, fresh: bool = False) -> list[str]:
        assert e.netns
        current = None if fresh else (await LinuxNetworkDriver.links(e.netns)).get(ENDPOINT_IF)
        cmds = ["link set lo up", f"link set {ENDPOINT_IF} address {e.mac}"]
        cmds += _addresses(ENDPOINT_IF, current, [str(e.address)])
        return cmds + [f"link set {ENDPOINT_IF} up", f"route replace default via {e.gateway} dev {ENDPOINT_IF}"]

    @staticmethod
    async def _vnet_sysctls(ns: str, bridges: list[str]) -> None:
        settings = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                    "net.ipv4.conf.default.send_redirects=0", "net.ipv4.conf.all.route_localnet=1",
                    # the bridges only switch to the router: were br_netfilter to run the IP hooks on
                    # bridged frames, a DNAT back into the same subnet would be bridged between isolated
                    # ports (and dropped) instead of routed (-e: the keys exist only with br_netfilter)
                    "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0",
                    "net.bridge.bridge-nf-call-arptables=0"]
        for b in bridges:  # answer ARP for the whole subnet: isolated ports talk only through the router
            settings += [f"net.ipv4.conf.{b}.proxy_arp=1", f"net.ipv4.conf.{b}.proxy_arp_pvlan=1",
                         f"net.ipv4.conf.{b}.send_redirects=0",
                         f"net.ipv4.neigh.{b}.proxy_delay=0"]  # answer at once, not after up to 0.8 s
        await run("ip", "netns", "exec", ns, "sysctl", "-q", "-e", "-w", *settings)

    async def delete_netns(self, name: str) -> None:
        self._applied_rules.pop(name, None)
        self._applied_stats.pop(name, None)
        self._neighbours.pop(name, None)
        self._uplinks.pop(name, None)
        if name in await self.list_netns():
            try:
                await run("ip", "netns", "del", name)
            except HostCommandError:
                if name in await self.list_netns():
                    raise

    async def delete_host_link(self, name: str) -> None:
        await run("ip", "link", "del", name, check=False)

    # -- kumo's table and routes in the host namespace --------------------------------------------
    async def apply_host(self, spec: HostSpec) -> None:
        ruleset = nftables.host_ruleset(spec)
        routes_wanted = repr(sorted((str(m.transit), v.uplink.host_link) for v in spec.vnets for m in v.public))
        if self._host_applied == (routes_wanted, ruleset):
            return
        wanted = {}
        for v in spec.vnets:
            for m in v.public:
                wanted[str(m.transit)] = v.uplink
        for attempt in range(3):
            host_links = await self.links()
            routes = json.loads(await run("ip", "-j", "route", "show", "proto", "static") or "[]")
            batch = []
            for r in routes:
                dev = r.get("dev", "")
                if dev.startswith(spec.link_prefix) and r.get("dst") not in wanted:
                    batch.append(f"route del {r['dst']} dev {dev}")
            for transit, up in wanted.items():
                if up.host_link in host_links:
                    batch.append(f"route replace {transit}/32 via {up.vnet_address} dev {up.host_link} proto static")
            try:
                if batch:
                    await run("ip", "-batch", "-", input="\n".join(batch) + "\n")
                break
            except HostCommandError as e:
                # A VNet pass (not serialised with host passes) may delete its uplink, and the routes through
                # it, between the listing above and the batch: list again and redo the batch.
                if attempt == 2 or "Cannot find device" not in e.stderr:
                    raise
        await run("nft", "-f", "-", input=ruleset)
        self._host_applied = (routes_wanted, ruleset)

    async def remove_host_table(self, table: str) -> None:
        self._host_applied = None
        await run("nft", "delete", "table", "ip", table, check=False)


def _addresses(link: str, current: dict | None, wanted: list[str]) -> list[str]:
    """Commands that make `link`'s IPv4 addresses exactly `wanted` (CIDR strings)."""
    have = {f"{a['local']}/{a['prefixlen']}" for a in (current or {}).get("addr_info", []) if a.get("family") == "inet"}
    return [f"addr del {a} dev {link}" for a in sorted(have - set(wanted))] + \
           [f"addr add {a} dev {link}" for a in wanted if a not in have]
