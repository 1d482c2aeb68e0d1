"""Virtual networks carry real packets: endpoints (network namespaces running a small server) are
attached to NICs through kumo's `attachHostEndpoint` action, and real connections show what
reaches what — inside a subnet, across subnets, never between VNets (even with the same prefixes),
through public IPs from the host, through NSG rules in priority order, and never to kumo itself."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import KumoServer, unique
from tests.e2e.netlib import PROBE, Endpoint, Servers, attach, reach

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                                 reason="virtual networks need root and nftables (scripts/setup.sh installs them)")]
def _nic(net: Any, rg: str, name: str, subnet_id: str, **extra: Any) -> Any:
    config = {"name": "ipconfig1", "properties": {"subnet": {"id": subnet_id}, **extra}}
    return net.network_interfaces.begin_create_or_update(rg, name, {
        "location": "local", "properties": {"ipConfigurations": [config]}}).result()


@dataclass
class Topology:
    rg_a: str
    rg_b: str
    a1: Endpoint  # VNet A, subnet s1 (10.0.1.4), public IP pip_a1
    a2: Endpoint  # VNet A, subnet s1 (10.0.1.5)
    a3: Endpoint  # VNet A, subnet s2 (10.0.2.4)
    b1: Endpoint  # VNet B (same 10.0.0.0/16 as A), subnet s1 (10.0.1.4), public IP pip_b1
    pip_a1: str
    pip_b1: str
    nsg_a1: str  # on NIC a1


@pytest.fixture(scope="module")
def topo(kumo: KumoServer, resource_client: Any, network_client: Any) -> Iterator[Topology]:
    net = network_client
    rg_a, rg_b = unique("rgneta"), unique("rgnetb")
    servers = Servers()
    for rg in (rg_a, rg_b):
        resource_client.resource_groups.create_or_update(rg, {"location": "local"})
    try:
        subnets = {}
        for rg, prefixes in ((rg_a, ("10.0.1.0/24", "10.0.2.0/24")), (rg_b, ("10.0.1.0/24",))):
            vnet = net.virtual_networks.begin_create_or_update(rg, "vnet", {
                "location": "local", "properties": {
                    "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                    "subnets": [{"name": f"s{i + 1}", "properties": {"addressPrefix": p}}
                                for i, p in enumerate(prefixes)]}}).result()
            assert vnet.provisioning_state == "Succeeded"
            subnets[rg] = {s.name: s.id for s in vnet.subnets}
        pips = {}
        for rg, name in ((rg_a, "pa1"), (rg_b, "pb1")):
            pips[name] = net.public_ip_addresses.begin_create_or_update(rg, name, {"location": "local"}).result()
        nsg = net.network_security_groups.begin_create_or_update(rg_a, "nsga1", {"location": "local", "properties": {
            "securityRules": [
                # 7001: deny at 100 beats allow at 200; 7002: allow at 100 beats deny at 200
                _rule("deny7001", 100, "Deny", "7001"), _rule("allow7001", 200, "Allow", "7001"),
                _rule("allow7002", 110, "Allow", "7002"), _rule("deny7002", 210, "Deny", "7002")]}}).result()
        a1 = net.network_interfaces.begin_create_or_update(rg_a, "a1", {
            "location": "local", "properties": {
                "networkSecurityGroup": {"id": nsg.id},
                "ipConfigurations": [{"name": "ipconfig1", "properties": {
                    "subnet": {"id": subnets[rg_a]["s1"]}, "publicIPAddress": {"id": pips["pa1"].id}}}]}}).result()
        a2 = _nic(net, rg_a, "a2", subnets[rg_a]["s1"])
        a3 = _nic(net, rg_a, "a3", subnets[rg_a]["s2"])
        b1 = _nic(net, rg_b, "b1", subnets[rg_b]["s1"], publicIPAddress={"id": pips["pb1"].id})
        eps = {n.name: attach(kumo, n.id) for n in (a1, a2, a3, b1)}
        for name, ep in eps.items():
            servers.start(ep, name, 7000, 7001, 7002, 7003)
        yield Topology(rg_a, rg_b, eps["a1"], eps["a2"], eps["a3"], eps["b1"],
                       net.public_ip_addresses.get(rg_a, "pa1").ip_address,
                       net.public_ip_addresses.get(rg_b, "pb1").ip_address, nsg.id)
    finally:
        servers.stop()
        for rg in (rg_a, rg_b):
            resource_client.resource_groups.begin_delete(rg).result()


def _rule(name: str, priority: int, access: str, port: str, direction: str = "Inbound") -> dict[str, Any]:
    return {"name": name, "properties": {"priority": priority, "access": access, "direction": direction,
                                         "protocol": "Tcp", "sourceAddressPrefix": "*", "sourcePortRange": "*",
                                         "destinationAddressPrefix": "*", "destinationPortRange": port}}


def test_addresses_follow_azure_rules(topo: Topology) -> None:
    assert (topo.a1.ip, topo.a2.ip, topo.a3.ip, topo.b1.ip) == ("10.0.1.4", "10.0.1.5", "10.0.2.4", "10.0.1.4")
    assert topo.a1.gateway == "10.0.1.1" and topo.a3.gateway == "10.0.2.1"


def test_reachability_inside_a_subnet_and_across_subnets(topo: Topology) -> None:
    assert reach(topo.a1.netns, topo.a2.ip, 7000) == "a2"  # same subnet
    assert reach(topo.a3.netns, topo.a2.ip, 7000) == "a2"  # across subnets, routed by the VNet
    assert reach(topo.a2.netns, topo.a3.ip, 7000) == "a3"


def test_vnets_are_isolated_even_with_the_same_prefixes(topo: Topology) -> None:
    # 10.0.1.4 exists in both VNets: each side reaches its own, never the other's
    assert reach(topo.a2.netns, "10.0.1.4", 7000) == "a1"
    assert reach(topo.b1.netns, "10.0.1.4", 7000) == "b1"
    assert reach(topo.b1.netns, topo.a2.ip, 7000) is None  # 10.0.1.5 lives only in VNet A
    assert reach(topo.b1.netns, topo.a3.ip, 7000) is None


def test_public_ips_answer_on_the_host(topo: Topology) -> None:
    assert topo.pip_a1 != topo.pip_b1 and topo.pip_a1.startswith("127.78.")
    assert reach(None, topo.pip_b1, 7000) == "b1"  # no NSG: everything is allowed, as in Azure
    assert reach(None, topo.pip_b1, 7003) == "b1"  # any port, same port on two public IPs
    assert reach(None, topo.pip_a1, 7002) == "a1"


def test_nsg_rules_apply_in_priority_order(topo: Topology, network_client: Any) -> None:
    assert reach(None, topo.pip_a1, 7001) is None  # deny@100 wins over allow@200
    assert reach(None, topo.pip_a1, 7002) == "a1"  # allow@110 wins over deny@210
    assert reach(None, topo.pip_a1, 7003) is None  # no rule: DenyAllInBound (from the Internet)
    assert reach(topo.a2.netns, topo.a1.ip, 7003) == "a1"  # AllowVnetInBound
    assert reach(topo.a2.netns, topo.a1.ip, 7001) is None  # the deny rule applies inside the VNet too
    # rules change live: move the deny below the allow and 7001 opens; delete the allow and it closes
    rules = network_client.security_rules
    rules.begin_create_or_update(topo.rg_a, "nsga1", "deny7001", _rule("deny7001", 300, "Deny", "7001")).result()
    assert reach(None, topo.pip_a1, 7001) == "a1"
    rules.begin_delete(topo.rg_a, "nsga1", "allow7001").result()
    assert reach(None, topo.pip_a1, 7001) is None
    # an outbound rule on a1 stops a1's new connections to a2
    rules.begin_create_or_update(topo.rg_a, "nsga1", "noout", _rule("noout", 100, "Deny", "7000", "Outbound")).result()
    try:
        assert reach(topo.a1.netns, topo.a2.ip, 7000) is None
        assert reach(topo.a1.netns, topo.a2.ip, 7003) == "a2"
    finally:
        rules.begin_delete(topo.rg_a, "nsga1", "noout").result()
    assert reach(topo.a1.netns, topo.a2.ip, 7000) == "a2"


def test_instances_cannot_reach_kumo_or_the_host(topo: Topology, kumo: KumoServer) -> None:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    host_server = subprocess.Popen([sys.executable, PROBE, "serve", str(port), "host"], stdout=subprocess.PIPE,
                                   text=True)
    try:
        assert host_server.stdout is not None and host_server.stdout.readline().strip() == "ready"
        links = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout)
        # every address of the host (kumo's own uplink ends included) and the instance's gateway
        host_addrs = {a["local"] for link in links for a in link.get("addr_info", [])
                      if a.get("family") == "inet" and not a["local"].startswith("127.")}
        assert any(a.startswith("169.254.") for a in host_addrs)
        for addr in sorted(host_addrs):
            assert reach(None, addr, port) == "host", addr  # the server answers the host itself ...
        for addr in sorted(host_addrs | {topo.a2.gateway}):
            assert reach(topo.a2.netns, addr, port) is None, addr  # ... but no instance
            assert reach(topo.a2.netns, addr, kumo.port) is None, addr
        assert reach(topo.a2.netns, "127.0.0.1", kumo.port) is None  # loopback is the instance's own
    finally:
        host_server.kill()
        host_server.wait()


def test_a_nic_can_be_attached_as_a_tap_for_a_vm(kumo: KumoServer, topo: Topology, network_client: Any) -> None:
    subnet = network_client.subnets.get(topo.rg_b, "vnet", "s1")
    nic = _nic(network_client, topo.rg_b, "tapnic", subnet.id)
    with kumo.http() as c:
        r = c.post(f"{nic.id}/attachHostEndpoint", params={"api-version": "2024-05-01"}, json={"kind": "tap"})
        assert r.status_code == 200, r.text
        tap = r.json()
        assert c.post(f"{nic.id}/attachHostEndpoint", params={"api-version": "2024-05-01"},
                      json={"kind": "floppy"}).json()["error"]["code"] == "InvalidRequestContent"
    assert tap["kind"] == "tap" and tap["privateIPAddress"] == "10.0.1.5" and tap["macAddress"].startswith("00:0d:3a")
    link = json.loads(subprocess.run(["ip", "-n", tap["vnetNamespace"], "-j", "-d", "link", "show", tap["tap"]],
                                     capture_output=True, text=True, check=True).stdout)[0]
    assert link["linkinfo"]["info_kind"] == "tun" and link["master"].startswith("b")  # on the subnet's bridge
    with kumo.http() as c:
        assert c.post(f"{nic.id}/detachHostEndpoint", params={"api-version": "2024-05-01"}).status_code == 204
    gone = subprocess.run(["ip", "-n", tap["vnetNamespace"], "link", "show", tap["tap"]], capture_output=True)
    assert gone.returncode != 0
    network_client.network_interfaces.begin_delete(topo.rg_b, "tapnic").result()
