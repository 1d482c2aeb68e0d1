"""The network controller: reads VNets, subnets, NICs, public IPs and NSGs from the store and has the
network driver make the host match, one VNet at a time (level-triggered: each pass renders the whole
VNet, so a missed or repeated trigger does no harm).

Host object names are derived from resource keys (a hash) and from this kumo's *site*, a number
that keeps two kumos on one host apart (each claims one under /run/kumo/sites). At start the
controller deletes every object of its site that no resource explains any more."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kumo.arm.errors import ArmError
from kumo.controllers import load_balancing
from kumo.drivers.hostcmd import HostCommandError
from kumo.drivers.network import probes
from kumo.drivers.network.linux import LinuxNetworkDriver, NetworkUnavailable
from kumo.drivers.network.spec import (AZURE_PLATFORM_IP, AddressMatch, EndpointSpec, GroupSpec, GuardSpec,
                                       HostSpec, PublicMapping, RuleSpec, SubnetSpec, Uplink, VNetSpec)
from kumo.store import Resource, Store

if TYPE_CHECKING:
    from kumo.store import Tx

log = logging.getLogger("kumo.network")

VNET = "microsoft.network/virtualnetworks"
SITES_DIR = Path("/run/kumo/sites")
TRANSIT = ipaddress.IPv4Network("169.254.0.0/16")  # link-local: never a VNet's address space in Azure
SITE_BLOCK = 4096  # transit addresses per site: 1024 VNet uplinks (/31 each) and 2048 public IPs
SITES = [n for n in range(16) if n != 10]  # block 10 holds 169.254.169.254 (Azure's metadata address)
TRANSIT_POOL = "host-transit"


def short_hash(key: str) -> str:
    return hashlib.sha1(key.lower().encode()).hexdigest()[:10]


# kumo's own network for instances that are in no VNet of the user's (public container groups): each
# sits alone behind its public IP, and instances of this network cannot reach one another directly.
INSTANCE_NET_KEY = "kumo:instance-net"
INSTANCE_NET = ipaddress.IPv4Network("10.240.0.0/16")


@dataclass(frozen=True)
class Instance:
    """Something that holds an address directly rather than through a NIC (a container group): its
    own namespace on a subnet bridge, in a VNet (`subnet_key`) or in kumo's instance network (None)."""

    key: str
    vnet_key: str
    subnet_key: str | None
    address: ipaddress.IPv4Address
    public: ipaddress.IPv4Address | None = None
    ports: tuple[tuple[str, int], ...] = ()  # what the public IP exposes (protocol, port)


InstanceSource = Callable[["Tx"], Awaitable[list[Instance]]]


@dataclass
class _Passes:
    """Coalesces sync requests: a request is served by any pass that started after it was made."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    requested: int = 0
    done: int = 0

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        self.requested += 1
        mine = self.requested
        async with self.lock:
            if self.done >= mine:
                return  # a pass that started after this request already did the work
            started = self.requested
            await work()
            self.done = started


class NetworkController:
    def __init__(self, store: Store, data_dir: Path, public_pool: ipaddress.IPv4Network,
                 driver: LinuxNetworkDriver | None = None) -> None:
        self.store = store
        self.data_dir = data_dir
        self.public_pool = public_pool
        self.driver = driver or LinuxNetworkDriver()
        self.site: int | None = None
        self.unavailable: str | None = None
        self._site_fd: int | None = None
        self._passes: dict[str, _Passes] = {}
        self._host_passes = _Passes()
        self._specs: dict[str, VNetSpec] = {}  # vnet key -> spec last applied
        self._attached: dict[str, Literal["netns", "tap"]] = {}  # nic key -> endpoint kind
        self._nic_vnet: dict[str, str] = {}  # nic key -> vnet key of its endpoint or guard
        self._lb_vnets: dict[str, set[str]] = {}  # load balancer key -> VNets its rules are rendered in
        self._probes: dict[str, list[load_balancing.ProbeTarget]] = {}  # vnet key -> health probes to run
        self._lb_rules: dict[str, dict[str, tuple[int, int]]] = {}  # vnet key -> lb key -> (rules up, rules)
        self._health: dict[tuple[str, str], bool | None] = {}  # (probe id, backend IP) -> in rotation
        self._failures: dict[tuple[str, str], int] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._prober: asyncio.Task[None] | None = None
        self.instance_sources: list[InstanceSource] = []  # container groups register theirs

    # -- names (every host object traces back to its resource through these) ---------------------
    @property
    def prefix(self) -> str:
        return f"kumo{self.site}-"

    def vnet_netns(self, vnet_key: str) -> str:
        return f"{self.prefix}v{short_hash(vnet_key)}"

    def endpoint_netns(self, nic_key: str) -> str:
        return f"{self.prefix}e{short_hash(nic_key)}"

    @property
    def host_link_prefix(self) -> str:
        return f"k{self.site}h"

    def host_link(self, vnet_key: str) -> str:
        return f"{self.host_link_prefix}{short_hash(vnet_key)}"

    @property
    def host_table(self) -> str:
        return f"kumo_site{self.site}"

    # -- start: claim a site, clean orphans, rebuild every VNet ------------------------------------
    async def start(self) -> None:
        try:
            await self.driver.check()
            await asyncio.to_thread(self._claim_site)
        except NetworkUnavailable as e:
            self.unavailable = str(e)
            log.warning("virtual networks unavailable: %s", e)
            return
        async with self.store.read() as tx:
            vnets = await tx.resources_of_type(VNET)
            nics = await tx.resources_of_type("microsoft.network/networkinterfaces")
            instances = await self._instances(tx)
        vnet_ns = {self.vnet_netns(v.key): v.key for v in vnets}
        vnet_ns[self.vnet_netns(INSTANCE_NET_KEY)] = INSTANCE_NET_KEY
        nic_ns = {self.endpoint_netns(n.key): n.key for n in nics}
        vnet_ns.update({self.endpoint_netns(i.key): i.vnet_key for i in instances})
        for name in sorted(await self.driver.list_netns()):
            if not name.startswith(self.prefix):
                continue
            if name in nic_ns:
                self._attached[nic_ns[name]] = "netns"
            elif name not in vnet_ns:
                log.info("removing orphaned namespace %s", name)
                await self.driver.delete_netns(name)
        known_links = {self.host_link(v.key) for v in vnets} | {self.host_link(INSTANCE_NET_KEY)}
        for link in await self.driver.links():
            if link.startswith(self.host_link_prefix) and link not in known_links:
                await self.driver.delete_host_link(link)
        taps = {f"t{short_hash(n.key)}": n.key for n in nics}
        present = await self.driver.list_netns()
        for v in vnets:
            if self.vnet_netns(v.key) in present:
                for link in await self.driver.links(self.vnet_netns(v.key)):
                    if link in taps:
                        self._attached[taps[link]] = "tap"
        for key in [v.key for v in vnets] + [INSTANCE_NET_KEY]:
            try:
                await self.sync_vnet(key)
            except ArmError as e:
                log.error("could not rebuild virtual network %s: %s", key, e.message)
        await self.sync_host()
        self._prober = asyncio.get_running_loop().create_task(self._probe_forever(), name="lb-prober")

    def _claim_site(self) -> None:
        """Take a site number (the one this data dir had before, if free) and refuse a public IP
        pool that overlaps the pool of another running kumo."""
        SITES_DIR.mkdir(parents=True, exist_ok=True)
        remembered = self.data_dir / "network-site"
        preferred = int(remembered.read_text()) if remembered.exists() else None
        # a site whose last owner is a stopped kumo with its data dir still there stays that kumo's (its
        # containers keep running while it is down): taken only when no other site is free
        reserved = [n for n in SITES if n != preferred and self._reserved_by_another(n)]
        order = ([preferred] if preferred in SITES else []) + \
            [n for n in SITES if n != preferred and n not in reserved] + reserved
        for n in order:
            fd = os.open(SITES_DIR / f"{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                self._check_pool(n)
            except NetworkUnavailable:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "data_dir": str(self.data_dir),
                                     "public_pool": str(self.public_pool)}).encode())
            self.site, self._site_fd = n, fd
            remembered.write_text(str(n))
            return
        raise NetworkUnavailable(f"all {len(SITES)} network sites are taken by other running kumos; stop one")

    def _reserved_by_another(self, site: int) -> bool:
        try:
            owner = json.loads((SITES_DIR / f"{site}.lock").read_text() or "{}").get("data_dir")
            if not owner or Path(owner) == self.data_dir:
                return False
            return (Path(owner) / "network-site").read_text().strip() == str(site)
        except (OSError, ValueError):
            return False

    def _check_pool(self, mine: int) -> None:
        for other in SITES:
            path = SITES_DIR / f"{other}.lock"
            if other == mine or not path.exists():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    continue  # nobody holds it: a stale file
                except BlockingIOError:
                    pass
                info = json.loads(path.read_text() or "{}")
            finally:
                os.close(fd)
            if info.get("public_pool") and ipaddress.IPv4Network(info["public_pool"]).overlaps(self.public_pool):
                raise NetworkUnavailable(f"public IP pool {self.public_pool} overlaps {info['public_pool']} of the "
                                         f"kumo with data dir {info.get('data_dir')}; start kumo with another "
                                         "--public-ip-pool")

    def _require(self) -> None:
        if self.unavailable:
            raise ArmError(400, "NetworkBackendUnavailable", f"kumo cannot create virtual networks on this host: "
                           f"{self.unavailable}")

    # -- syncing ---------------------------------------------------------------------------------
    async def sync_vnet(self, vnet_key: str, host: bool = True) -> None:
        """Make the VNet's namespace match the store, then (with `host`) kumo's host table."""
        if not vnet_key:
            return
        self._require()
        try:
            await self._passes.setdefault(vnet_key, _Passes()).run(lambda: self._sync_once(vnet_key))
        except HostCommandError as e:
            raise ArmError(500, "NetworkSetupFailed", f"kumo could not set up the virtual network on the host: "
                           f"{e}") from e
        if host:
            await self.sync_host()

    async def sync_vnet_of_nic(self, nic_key: str) -> None:
        async with self.store.read() as tx:
            nic = await tx.get_resource(nic_key)
        vnets = set(self.vnets_of_nic(nic)) if nic else set()
        if nic_key in self._nic_vnet:
            vnets.add(self._nic_vnet[nic_key])
        for vnet in sorted(vnets):
            await self.sync_vnet(vnet)
        if nic is None:  # deleted: its endpoint namespace goes too
            self._attached.pop(nic_key, None)
            self._nic_vnet.pop(nic_key, None)
            if not self.unavailable:
                await self.driver.delete_netns(self.endpoint_netns(nic_key))

    async def _instances(self, tx: "Tx", vnet_key: str | None = None) -> list[Instance]:
        found = [i for source in self.instance_sources for i in await source(tx)]
        return [i for i in found if vnet_key is None or i.vnet_key == vnet_key]

    async def sync_instance(self, key: str, vnet_key: str) -> str:
        """Bring an instance's endpoint up to date (made, moved or removed with its VNet's next pass);
        returns the namespace its processes join. The host table (its public IP) is the caller's to
        bring up with `sync_host`, which may run while the instance starts."""
        await self.sync_vnet(vnet_key, host=False)
        return self.endpoint_netns(key)

    async def remove_instance(self, key: str, vnet_key: str) -> None:
        """After the instance left the store (or stopped): its endpoint and namespace go."""
        if self.unavailable:
            return
        await self.sync_vnet(vnet_key)
        await self.driver.delete_netns(self.endpoint_netns(key))

    async def sync_load_balancer(self, lb: Resource) -> None:
        """Re-render every VNet a load balancer reaches now or was rendered in before."""
        nic_keys, vnets = load_balancing.reach(lb)
        async with self.store.read() as tx:
            for key in nic_keys:
                if (nic := await tx.get_resource(key)) is not None:
                    vnets.update(self.vnets_of_nic(nic))
        for vnet in sorted(vnets | self._lb_vnets.get(lb.key, set())):
            await self.sync_vnet(vnet)

    @staticmethod
    def vnets_of_nic(nic: Resource) -> list[str]:
        cfgs = (nic.body.get("properties") or {}).get("ipConfigurations") or []
        return sorted({c["properties"]["subnet"]["id"].lower().split("/subnets/")[0] for c in cfgs})

    async def sync_host(self) -> None:
        if self.unavailable or self.site is None:
            return
        await self._host_passes.run(self._sync_host_once)

    async def _sync_host_once(self) -> None:
        if self._specs:
            await self.driver.apply_host(HostSpec(table=self.host_table, link_prefix=self.host_link_prefix,
                                                  vnets=list(self._specs.values())))
        else:  # no VNet left: nothing of kumo's stays in the host namespace
            await self.driver.remove_host_table(self.host_table)

    async def _sync_once(self, vnet_key: str) -> None:
        async with self.store.read() as tx:
            if vnet_key == INSTANCE_NET_KEY:
                instances = await self._instances(tx, vnet_key)
                vnet = None if not instances else Resource(
                    key=vnet_key, id=vnet_key, subscription_id="", resource_group="", type="", name="kumo",
                    body={"properties": {"addressSpace": {"addressPrefixes": [str(INSTANCE_NET)]}}},
                    provisioning_state="Succeeded")
            else:
                vnet = await tx.get_resource(vnet_key)
        if vnet is None or vnet.provisioning_state == "Deleting":
            await self._teardown(vnet_key)
            return
        spec = await self._build(vnet)
        await self.driver.ensure_vnet(spec)
        before = self._specs.get(vnet_key)
        self._specs[vnet_key] = spec
        if before is not None:  # the new DNAT rules are in: flows to backends that left are ended now
            await self.driver.flush_flows(spec.netns, load_balancing.flows_to_flush(before.balanced, spec.balanced))

    async def _teardown(self, vnet_key: str) -> None:
        spec = self._specs.pop(vnet_key, None)
        self._probes.pop(vnet_key, None)
        self._lb_rules.pop(vnet_key, None)
        for nic, vnet in list(self._nic_vnet.items()):
            if vnet == vnet_key:
                self._nic_vnet.pop(nic)
                if self._attached.pop(nic, None) == "netns":
                    await self.driver.delete_netns(self.endpoint_netns(nic))
        await self.driver.delete_netns(self.vnet_netns(vnet_key))
        await self.driver.delete_host_link(spec.uplink.host_link if spec else self.host_link(vnet_key))
        async with self.store.write() as tx:
            await tx.release(f"kumo:transit:{vnet_key}")

    # -- building a VNet's spec from the store ------------------------------------------------------
    async def _transit(self, tx: "Tx", owner: str, first: int, last: int) -> int:
        taken = await tx.allocated(TRANSIT_POOL)
        for value, holder in taken.items():
            if holder == owner:
                return value
        for value in range(first, last + 1):
            if value not in taken and await tx.claim(TRANSIT_POOL, value, owner):
                return value
        raise ArmError(409, "NetworkCapacityExceeded", "kumo has no host transit addresses left (1024 virtual "
                       "networks and 2048 mapped public IPs per kumo).")

    def _transit_address(self, offset: int) -> ipaddress.IPv4Address:
        assert self.site is not None
        return TRANSIT.network_address + self.site * SITE_BLOCK + offset

    async def _build(self, vnet: Resource) -> VNetSpec:
        props = vnet.body.get("properties") or {}
        space = tuple(props["addressSpace"]["addressPrefixes"])
        async with self.store.read() as tx:
            instances = await self._instances(tx, vnet.key)
            if vnet.key == INSTANCE_NET_KEY:
                subnets = [Resource(key=INSTANCE_NET_KEY + "/subnet", id="", subscription_id="", resource_group="",
                                    type="", name="default", provisioning_state="Succeeded",
                                    body={"properties": {"addressPrefix": str(INSTANCE_NET)}})]
            else:
                subnets = await tx.list_resources(vnet.subscription_id, parent_key=vnet.key)
            nics: dict[str, Resource] = {}
            for s in subnets:
                for cfg in (s.body.get("properties") or {}).get("ipConfigurations") or []:
                    nic_key = cfg["id"].lower().split("/ipconfigurations/")[0]
                    if nic_key not in nics and (nic := await tx.get_resource(nic_key)) is not None:
                        if nic.provisioning_state != "Deleting":
                            nics[nic_key] = nic
            nsgs: dict[str, Resource] = {}
            for r in [*subnets, *nics.values()]:
                ref = (r.body.get("properties") or {}).get("networkSecurityGroup")
                if ref and ref["id"].lower() not in nsgs and (nsg := await tx.get_resource(ref["id"].lower())):
                    nsgs[ref["id"].lower()] = nsg
            pips: dict[str, Resource] = {}
            for nic in nics.values():
                for cfg in nic.body["properties"]["ipConfigurations"]:
                    pip_ref = cfg["properties"].get("publicIPAddress")
                    if pip_ref and (pip := await tx.get_resource(pip_ref["id"].lower())) is not None \
                            and pip.body["properties"].get("ipAddress"):  # a deallocated VM's Dynamic IP has none
                        pips[cfg["properties"]["privateIPAddress"]] = pip
            lbs = {k: lb for k in load_balancing.load_balancer_keys(nics)
                   if (lb := await tx.get_resource(k)) is not None and lb.provisioning_state != "Deleting"}
            frontend_pips = load_balancing.public_frontends(lbs)
            lb_pips = {k: pip for k in frontend_pips.values() if (pip := await tx.get_resource(k)) is not None}
        async with self.store.write() as tx:
            uplink_index = await self._transit(tx, f"kumo:transit:{vnet.key}", 0, SITE_BLOCK // 4 - 1)
            public_slots = SITE_BLOCK // 2, SITE_BLOCK - 1
            transits = {ip: await self._transit(tx, f"kumo:transit:{vnet.key}/{pip.key}", *public_slots)
                        for ip, pip in pips.items()}
            lb_transits = {fid: await self._transit(tx, f"kumo:transit:{vnet.key}/{fid}", *public_slots)
                           for fid in frontend_pips}
            instance_transits = {i.key: await self._transit(tx, f"kumo:transit:{vnet.key}/{i.key}", *public_slots)
                                 for i in instances if i.public is not None}
            # mappings that no longer exist give their transit address back
            in_use = {*transits.values(), *lb_transits.values(), *instance_transits.values()}
            for value, owner in (await tx.allocated(TRANSIT_POOL)).items():
                if owner.startswith(f"kumo:transit:{vnet.key}/") and value not in in_use:
                    await tx.release(owner)
        spec = VNetSpec(netns=self.vnet_netns(vnet.key), address_space=space, uplink=Uplink(
            host_link=self.host_link(vnet.key), host_address=self._transit_address(2 * uplink_index),
            vnet_address=self._transit_address(2 * uplink_index + 1)))
        bridges: dict[str, tuple[str, ipaddress.IPv4Network]] = {}
        for s in subnets:
            net = ipaddress.IPv4Network(s.body["properties"]["addressPrefix"])
            bridges[s.key] = (f"b{short_hash(s.key)}", net)
            gateway = ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")
            spec.subnets.append(SubnetSpec(bridge=bridges[s.key][0], gateway=gateway))
        for nsg_key, nsg in sorted(nsgs.items()):
            spec.groups.append(_group(f"g{short_hash(nsg_key)}", nsg, space))
        subnet_nsg = {s.key: (s.body["properties"].get("networkSecurityGroup") or {}).get("id", "").lower()
                      for s in subnets}
        for nic_key, nic in sorted(nics.items()):
            self._nic_vnet[nic_key] = vnet.key
            nic_props = nic.body["properties"]
            nic_nsg = (nic_props.get("networkSecurityGroup") or {}).get("id", "").lower()
            for cfg in nic_props["ipConfigurations"]:
                c = cfg["properties"]
                subnet_key = c["subnet"]["id"].lower()
                address = ipaddress.IPv4Address(c["privateIPAddress"])
                if subnet_key not in bridges:
                    continue
                s_nsg = subnet_nsg.get(subnet_key, "")
                if s_nsg or nic_nsg:
                    spec.guards.append(GuardSpec(
                        address=address, chain=f"n{short_hash(cfg['id'])}",
                        subnet_group=f"g{short_hash(s_nsg)}" if s_nsg else None,
                        nic_group=f"g{short_hash(nic_nsg)}" if nic_nsg else None))
                if str(address) in pips:
                    spec.public.append(PublicMapping(
                        public=ipaddress.IPv4Address(pips[str(address)].body["properties"]["ipAddress"]),
                        transit=self._transit_address(transits[str(address)]), private=address))
                kind = self._attached.get(nic_key)
                if kind and c.get("primary"):
                    bridge, net = bridges[subnet_key]
                    h = short_hash(nic_key)
                    spec.endpoints.append(EndpointSpec(
                        kind=kind, port=("e" if kind == "netns" else "t") + h, bridge=bridge,
                        mac=nic_props["macAddress"].replace("-", ":").lower(),
                        address=ipaddress.IPv4Interface(f"{address}/{net.prefixlen}"),
                        gateway=net.network_address + 1,
                        netns=self.endpoint_netns(nic_key) if kind == "netns" else None))
        for instance in instances:
            self._add_instance(spec, instance, bridges, subnet_nsg, instance_transits.get(instance.key))
        lb_plan = load_balancing.plan(
            vnet.key, lbs, nics, lb_pips, {fid: self._transit_address(v) for fid, v in lb_transits.items()},
            self._health)
        spec.public += lb_plan.mappings
        spec.balanced, spec.outbound = lb_plan.balanced, lb_plan.outbound
        self._probes[vnet.key] = lb_plan.probes
        self._lb_rules[vnet.key] = lb_plan.rules
        for lb_key in lbs:
            self._lb_vnets.setdefault(lb_key, set()).add(vnet.key)
        return spec

    def _add_instance(self, spec: VNetSpec, instance: Instance, bridges: dict[str, tuple[str, ipaddress.IPv4Network]],
                      subnet_nsg: dict[str, str], transit: int | None) -> None:
        subnet_key = instance.subnet_key or INSTANCE_NET_KEY + "/subnet"
        if subnet_key not in bridges:
            return
        bridge, net = bridges[subnet_key]
        h = short_hash(instance.key)
        mac = "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))  # locally administered, stable
        spec.endpoints.append(EndpointSpec(
            kind="netns", port="e" + h, bridge=bridge, mac=mac,
            address=ipaddress.IPv4Interface(f"{instance.address}/{net.prefixlen}"), gateway=net.network_address + 1,
            netns=self.endpoint_netns(instance.key)))
        if instance.public is not None and transit is not None:
            spec.public.append(PublicMapping(public=instance.public, transit=self._transit_address(transit),
                                             private=instance.address))
        if instance.subnet_key is None:
            # alone in kumo's instance network: only the exposed ports answer, and no neighbour is reachable
            chain = f"g{h}"
            spec.groups.append(_instance_group(chain, instance))
            spec.guards.append(GuardSpec(address=instance.address, chain=f"n{h}", subnet_group=None, nic_group=chain))
        elif s_nsg := subnet_nsg.get(instance.subnet_key, ""):
            spec.guards.append(GuardSpec(address=instance.address, chain=f"n{h}",
                                         subnet_group=f"g{short_hash(s_nsg)}", nic_group=None))

    # -- endpoints: what VMs, container groups and users plug into a NIC ---------------------------
    async def attach_netns(self, nic_key: str) -> dict[str, Any]:
        return await self._attach(nic_key, "netns")

    async def attach_tap(self, nic_key: str) -> dict[str, Any]:
        return await self._attach(nic_key, "tap")

    async def _attach(self, nic_key: str, kind: Literal["netns", "tap"]) -> dict[str, Any]:
        self._require()
        async with self.store.read() as tx:
            nic = await tx.get_resource(nic_key)
        if nic is None:
            raise ArmError(404, "NotFound", f"Network interface {nic_key} was not found.")
        previous = self._attached.get(nic_key)
        if previous and previous != kind:
            raise ArmError(409, "NicInUse", f"Network interface {nic.name} is already attached to a "
                           f"{'VM' if previous == 'tap' else 'network namespace'}; detach it first.")
        self._attached[nic_key] = kind
        vnets = self.vnets_of_nic(nic)
        for v in vnets:
            await self.sync_vnet(v)
        spec = self._specs.get(vnets[0]) if vnets else None
        endpoint = next((e for e in (spec.endpoints if spec else []) if e.port.endswith(short_hash(nic_key))), None)
        if spec is None or endpoint is None:
            self._attached.pop(nic_key, None)
            raise ArmError(409, "NicNotReady", f"Network interface {nic.name} has no primary IP configuration in a "
                           "provisioned virtual network yet.")
        out = {"kind": kind, "vnetNamespace": spec.netns, "macAddress": endpoint.mac,
               "privateIPAddress": str(endpoint.address.ip), "prefixLength": endpoint.address.network.prefixlen,
               "gateway": str(endpoint.gateway)}
        if kind == "netns":
            out.update(netns=endpoint.netns, netnsPath=f"/run/netns/{endpoint.netns}", interface="eth0")
        else:
            out.update(tap=endpoint.port)
        return out

    async def detach(self, nic_key: str) -> None:
        self._require()
        kind = self._attached.pop(nic_key, None)
        vnet = self._nic_vnet.get(nic_key)
        if vnet:
            await self.sync_vnet(vnet)
        if kind == "netns":
            await self.driver.delete_netns(self.endpoint_netns(nic_key))

    # -- health probes: who is in a load balancer's rotation ----------------------------------------
    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self._probe_round()
            except Exception:  # a probe round must never end the prober
                log.exception("health probe round failed")

    async def _probe_round(self) -> None:
        now = time.monotonic()
        due = [(vnet, t) for vnet, targets in list(self._probes.items()) for t in targets
               if self._due.get(t.key, 0.0) <= now]
        if not due:
            return
        results = await asyncio.gather(*(probes.probe(self.vnet_netns(vnet), t.protocol, t.address, t.port, t.path,
                                                      min(t.interval, 5.0)) for vnet, t in due))
        changed = set()
        for (vnet, t), healthy in zip(due, results, strict=True):
            self._due[t.key] = now + t.interval
            failures = 0 if healthy else self._failures.get(t.key, 0) + 1
            self._failures[t.key] = failures
            before = self._health.get(t.key)
            # one good answer puts a backend in; `threshold` bad ones in a row take it out (a new one
            # starts out until it answers)
            after = True if healthy else (False if failures >= t.threshold or before is None else before)
            if after != before:
                self._health[t.key] = after
                changed.add(vnet)
                log.info("backend %s is %s for probe %s", t.address, "up" if after else "down", t.key[0])
        for vnet in sorted(changed):
            try:
                await self.sync_vnet(vnet)
            except ArmError as e:
                log.error("could not apply health changes to %s: %s", vnet, e.message)

    # -- load balancer measurements ---------------------------------------------------------------
    async def load_balancer_stats(self, lb_key: str) -> load_balancing.LoadBalancerStats:
        """A load balancer's counters (nftables, one read per VNet it serves) and what its health probes
        say now. Cumulative: a counter starts at zero when its load balancer first reaches a VNet."""
        lb_key = lb_key.lower()
        vnets = sorted(v for v in self._lb_vnets.get(lb_key, set()) if v in self._specs)
        if self.unavailable or not vnets:
            return load_balancing.LoadBalancerStats()
        name = load_balancing.counter_name(lb_key)
        readings = await asyncio.gather(*(self.driver.read_counters(self._specs[v].netns) for v in vnets))
        flows = [r.get(f"{name}_b", (0, 0)) for r in readings]
        prefix = f"{lb_key}/probes/"
        probed = {t.key for v in vnets for t in self._probes.get(v, []) if t.key[0].startswith(prefix)}
        rules = [self._lb_rules.get(v, {}).get(lb_key, (0, 0)) for v in vnets]
        return load_balancing.LoadBalancerStats(
            byte_count=sum(b for _, b in flows), packet_count=sum(p for p, _ in flows),
            syn_count=sum(r.get(f"{name}_s", (0, 0))[0] for r in readings),
            probes_up=sum(1 for k in probed if self._health.get(k) is True), probes_total=len(probed),
            rules_up=sum(u for u, _ in rules), rules_total=sum(t for _, t in rules), vnets=tuple(vnets))

    def backend_health(self, vnet_key: str, addresses: list[str]) -> bool | None:
        """What the health probes now running in a VNet say of a backend: False when any has it out of
        rotation, True when one has it in, None when none watches it (scale sets' automatic repairs ask)."""
        keys = {t.key for t in self._probes.get(vnet_key, []) if t.address in addresses}
        verdicts = [v for k in keys if (v := self._health.get(k)) is not None]
        if not verdicts:
            return None
        return all(verdicts)

    async def close(self) -> None:
        """Host objects stay: instances keep their network while kumo restarts. Only the site goes."""
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        if self._site_fd is not None:
            os.close(self._site_fd)
            self._site_fd = None


# -- NSG rules to rule specs ------------------------------------------------------------------------
def _matches(prefixes: list[str], space: tuple[str, ...]) -> tuple[AddressMatch, ...] | None:
    if "*" in prefixes:
        return None
    literal: list[str] = []
    alternatives: list[AddressMatch] = []
    for p in prefixes:
        if p == "VirtualNetwork":
            literal += space
        elif p == "AzureLoadBalancer":
            literal.append(AZURE_PLATFORM_IP)
        elif p == "Internet":
            alternatives.append(AddressMatch(networks=(*space, AZURE_PLATFORM_IP), negate=True))
        else:
            literal.append(p)
    if literal:
        alternatives.insert(0, AddressMatch(networks=tuple(dict.fromkeys(literal))))
    return tuple(alternatives)


def _ports(values: list[str]) -> tuple[str, ...] | None:
    return None if "*" in values else tuple(values)


def _rule(props: dict[str, Any], space: tuple[str, ...]) -> RuleSpec:
    def both(single: str, plural: str) -> list[str]:
        return [props[single]] if props.get(single) not in (None, "") else list(props.get(plural) or [])

    return RuleSpec(priority=int(props["priority"]), allow=props["access"] == "Allow",
                    protocol=props["protocol"].lower(),
                    sources=_matches(both("sourceAddressPrefix", "sourceAddressPrefixes"), space),
                    destinations=_matches(both("destinationAddressPrefix", "destinationAddressPrefixes"), space),
                    source_ports=_ports(both("sourcePortRange", "sourcePortRanges")),
                    destination_ports=_ports(both("destinationPortRange", "destinationPortRanges")))


def _group(chain: str, nsg: Resource, space: tuple[str, ...]) -> GroupSpec:
    props = nsg.body.get("properties") or {}
    rules = [r["properties"] for r in (props.get("securityRules") or []) + (props.get("defaultSecurityRules") or [])]
    return GroupSpec(chain=chain,
                     inbound=tuple(_rule(r, space) for r in rules if r["direction"] == "Inbound"),
                     outbound=tuple(_rule(r, space) for r in rules if r["direction"] == "Outbound"))


def _instance_group(chain: str, instance: Instance) -> GroupSpec:
    neighbours = (AddressMatch((str(INSTANCE_NET),)),)
    inbound = [RuleSpec(100, False, "*", neighbours, None, None, None)]
    inbound += [RuleSpec(200 + n, True, protocol.lower(), None, None, None, (str(port),))
                for n, (protocol, port) in enumerate(instance.ports)]
    inbound.append(RuleSpec(4000, False, "*", None, None, None, None))
    outbound = [RuleSpec(100, False, "*", None, neighbours, None, None), RuleSpec(4000, True, "*", None, None, None,
                                                                                   None)]
    return GroupSpec(chain=chain, inbound=tuple(inbound), outbound=tuple(outbound))
