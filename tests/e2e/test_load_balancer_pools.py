"""What scale sets need from a load balancer, with real traffic: inbound NAT pools and port-range NAT
rules give each member its own frontend port (the one the API shows, kept as others come and go),
established flows to a backend that leaves the pool are flushed while the others' stay, the
counters on the DNAT rules grow with traffic, and outbound rules let pool members leave from the
frontend's public IP."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kumo.controllers.load_balancing import counter_name
from kumo.controllers.network import short_hash
from tests.conftest import KumoServer, start_server, stop_server, unique
from tests.e2e.netlib import (NET_API, Endpoint, Servers, attach, create_group, delete_group, put_and_wait, reach,
                              until)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nftables")]

# a server that greets each connection with its name and then echoes lines as "<name>:<line>", keeping
# the connection open: flows that must survive (or not) a change of the load balancer
HOLD = """
import socket, sys, threading
name = sys.argv[2]
def talk(conn):
    with conn:
        conn.sendall((name + "\\n").encode())
        f = conn.makefile("rb")
        for line in f:
            conn.sendall((name + ":" + line.decode()).encode())
def serve(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=talk, args=(conn,), daemon=True).start()
for p in sys.argv[1].split(","):
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def hold(procs: list[subprocess.Popen[str]], ep: Endpoint, name: str, *ports: int) -> None:
    proc = subprocess.Popen(["ip", "netns", "exec", ep.netns, sys.executable, "-c", HOLD, ",".join(map(str, ports)),
                             name], stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def lb_id_of(kumo: KumoServer, rg: str, name: str) -> str:
    return f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/" \
           f"Microsoft.Network/loadBalancers/{name}"


def get(kumo: KumoServer, path: str) -> dict[str, Any]:
    with kumo.http() as c:
        r = c.get(path, params={"api-version": NET_API})
    assert r.status_code == 200, r.text
    return r.json()


def nic_body(subnet: str, **refs: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"subnet": {"id": subnet}}
    cfg.update({field: [{"id": i} for i in ids] for field, ids in refs.items()})
    return {"location": "local", "properties": {"ipConfigurations": [{"name": "c", "properties": cfg}]}}


def vnet_and_pip(net: Any, rg: str, prefix: str) -> tuple[Any, str]:
    vnet = net.virtual_networks.begin_create_or_update(rg, "v", {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
        "subnets": [{"name": "s", "properties": {"addressPrefix": f"{prefix}.0.0/24"}}]}}).result()
    pip = net.public_ip_addresses.begin_create_or_update(rg, "lbpip", {"location": "local",
                                                                        "sku": {"name": "Standard"}}).result()
    return vnet, pip


def test_nat_pools_and_range_rules_give_each_member_its_own_port(kumo: KumoServer, rg: str,
                                                                 network_client: Any) -> None:
    net = network_client
    vnet, pip = vnet_and_pip(net, rg, "10.6")
    subnet = vnet.subnets[0].id
    lb_id = lb_id_of(kumo, rg, "lb")
    fe = {"id": f"{lb_id}/frontendIPConfigurations/fe"}
    net.load_balancers.begin_create_or_update(rg, "lb", {"location": "local", "sku": {"name": "Standard"},
        "properties": {
            "frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": pip.id}}}],
            "backendAddressPools": [{"name": "pool"}],
            "inboundNatPools": [{"name": "ssh", "properties": {
                "frontendIPConfiguration": fe, "protocol": "Tcp", "frontendPortRangeStart": 50200,
                "frontendPortRangeEnd": 50209, "backendPort": 7003}}],
            "inboundNatRules": [{"name": "range", "properties": {
                "frontendIPConfiguration": fe, "backendAddressPool": {"id": f"{lb_id}/backendAddressPools/pool"},
                "protocol": "Tcp", "frontendPortRangeStart": 50300, "frontendPortRangeEnd": 50309,
                "backendPort": 7004}}]}}).result()
    refs = {"loadBalancerBackendAddressPools": [f"{lb_id}/backendAddressPools/pool"],
            "loadBalancerInboundNatPools": [f"{lb_id}/inboundNatPools/ssh"]}
    servers = Servers()
    names = ("b0", "b1", "b2")
    try:
        eps, cfgs = {}, {}
        for name in names[:2]:
            nic = net.network_interfaces.begin_create_or_update(rg, name, nic_body(subnet, **refs)).result()
            cfgs[name] = nic.ip_configurations[0].id
            kept = get(kumo, nic.id)["properties"]["ipConfigurations"][0]["properties"]  # (not in the SDK's model)
            assert kept["loadBalancerInboundNatPools"][0]["id"].endswith("/inboundNatPools/ssh")
            eps[name] = attach(kumo, nic.id)
            servers.start(eps[name], name, 7003, 7004)
        frontend = pip.ip_address

        def ports() -> tuple[dict[str, int], dict[str, int]]:
            """member -> its NAT pool port, and its range rule port, as the load balancer shows them"""
            body = get(kumo, lb_id)["properties"]
            by_cfg = {v.lower(): k for k, v in cfgs.items()}
            pool = {by_cfg[r["properties"]["backendIPConfiguration"]["id"].lower()]: r["properties"]["frontendPort"]
                    for r in body["inboundNatRules"] if r["name"].startswith("ssh.")}
            addresses = body["backendAddressPools"][0]["properties"]["loadBalancerBackendAddresses"]
            ranged = {by_cfg[a["properties"]["networkInterfaceIPConfiguration"]["id"].lower()]:
                      a["properties"]["inboundNatRulesPortMapping"][0]["frontendPort"] for a in addresses}
            return pool, ranged

        pool_ports, range_ports = ports()
        assert pool_ports == {"b0": 50200, "b1": 50201} and range_ports == {"b0": 50300, "b1": 50301}
        for name in names[:2]:  # each port reaches its member, and only that one
            assert reach(None, frontend, pool_ports[name]) == name
            assert reach(None, frontend, range_ports[name]) == name
        assert reach(None, frontend, 50202) is None
        # the member rules a NAT pool derives are NAT rules of their own, as on Azure
        rule = get(kumo, f"{lb_id}/inboundNatRules/ssh.1")
        assert rule["properties"]["backendIPConfiguration"]["id"].lower() == cfgs["b1"].lower()
        assert rule["properties"]["frontendPort"] == 50201 and rule["properties"]["backendPort"] == 7003
        with kumo.http() as c:  # ... that only the pool changes
            r = c.put(f"{lb_id}/inboundNatRules/ssh.1", params={"api-version": NET_API}, json={"properties": {
                "frontendIPConfiguration": fe, "protocol": "Tcp", "frontendPort": 50250, "backendPort": 22}})
            assert r.status_code == 400, r.text
            r = c.delete(f"{lb_id}/inboundNatRules/ssh.1", params={"api-version": NET_API})
            assert r.status_code == 400 and r.json()["error"]["code"] == "InUseInboundNatRuleCannotBeDeleted"
        with kumo.http() as c:  # a NAT pool that does not exist
            r = c.put(f"{cfgs['b0'].split('/ipConfigurations/')[0][:-2]}bad", params={"api-version": NET_API},
                      json=nic_body(subnet, loadBalancerInboundNatPools=[f"{lb_id}/inboundNatPools/nope"]))
            assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResourceReference", r.text
        # az network lb list-mapping's action answers with the port the data path maps
        with kumo.http() as c:
            for request in ({"ipConfiguration": {"id": cfgs["b1"]}}, {"ipAddress": eps["b1"].ip}):
                r = c.post(f"{lb_id}/backendAddressPools/pool/queryInboundNatRulePortMapping",
                           params={"api-version": NET_API}, json=request)
                assert r.status_code == 200, r.text
                assert r.json() == {"inboundNatRulePortMappings": [
                    {"inboundNatRuleName": "range", "protocol": "Tcp", "frontendPort": 50301, "backendPort": 7004}]}
            r = c.post(f"{lb_id}/backendAddressPools/pool/queryInboundNatRulePortMapping",
                       params={"api-version": NET_API}, json={"ipAddress": "10.6.0.99"})
            assert r.status_code == 404

        # b0 leaves: b1 keeps its ports; b0's answer no more; b2 joins and takes the free ones
        net.network_interfaces.begin_create_or_update(rg, "b0", nic_body(subnet)).result()
        assert ports() == ({"b1": 50201}, {"b1": 50301})
        assert reach(None, frontend, 50201) == "b1" and reach(None, frontend, 50301) == "b1"
        assert reach(None, frontend, 50200) is None and reach(None, frontend, 50300) is None
        nic = net.network_interfaces.begin_create_or_update(rg, "b2", nic_body(subnet, **refs)).result()
        cfgs["b2"] = nic.ip_configurations[0].id
        eps["b2"] = attach(kumo, nic.id)
        servers.start(eps["b2"], "b2", 7003, 7004)
        assert ports() == ({"b1": 50201, "b2": 50200}, {"b1": 50301, "b2": 50300})
        assert reach(None, frontend, 50200) == "b2" and reach(None, frontend, 50300) == "b2"
        # a load balancer PUT (here: a narrower NAT pool range) keeps the members that still fit
        lb = get(kumo, lb_id)
        lb["properties"]["inboundNatPools"][0]["properties"]["frontendPortRangeStart"] = 50201
        put_and_wait(kumo, lb_id, lb)  # echoes the derived rules back, as az's GET-modify-PUT does
        assert ports() == ({"b1": 50201, "b2": 50202}, {"b1": 50301, "b2": 50300})
        assert reach(None, frontend, 50202) == "b2" and reach(None, frontend, 50200) is None
    finally:
        servers.stop()
    for name in names:
        net.network_interfaces.begin_delete(rg, name).result()
    net.load_balancers.begin_delete(rg, "lb").result()


def lb_counters(kumo: KumoServer, vnet_id: str, lb_id: str) -> tuple[int, int, int]:
    """(packets, bytes, SYNs) of a load balancer's counters in a VNet's namespace."""
    site = (kumo.data_dir / "network-site").read_text().strip()
    out = subprocess.run(["ip", "netns", "exec", f"kumo{site}-v{short_hash(vnet_id)}", "nft", "-j", "list",
                          "counters", "table", "inet", "kumo_lb"], capture_output=True, text=True, check=True).stdout
    counters = {c["counter"]["name"]: c["counter"] for c in json.loads(out)["nftables"] if "counter" in c}
    name = counter_name(lb_id.lower())
    return counters[f"{name}_b"]["packets"], counters[f"{name}_b"]["bytes"], counters[f"{name}_s"]["packets"]


def talk(sock: socket.socket, line: str) -> str | None:
    """Send a line, return the answer; None when the flow is gone (reset, closed, or silence)."""
    try:
        sock.sendall(line.encode() + b"\n")
        answer = sock.recv(100).decode()
        return answer or None
    except OSError:
        return None


def test_flows_to_a_backend_that_leaves_are_flushed_and_counted(kumo: KumoServer, rg: str, network_client: Any,
                                                                 holders: list[subprocess.Popen[str]]) -> None:
    net = network_client
    vnet, pip = vnet_and_pip(net, rg, "10.7")
    subnet = vnet.subnets[0].id
    lb_id = lb_id_of(kumo, rg, "lb")
    pool = f"{lb_id}/backendAddressPools/pool"
    net.load_balancers.begin_create_or_update(rg, "lb", {"location": "local", "sku": {"name": "Standard"},
        "properties": {
            "frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": pip.id}}}],
            "backendAddressPools": [{"name": "pool"}],
            "loadBalancingRules": [{"name": "web", "properties": {
                "frontendIPConfiguration": {"id": f"{lb_id}/frontendIPConfigurations/fe"},
                "backendAddressPool": {"id": pool}, "protocol": "Tcp", "frontendPort": 80,
                "backendPort": 7010}}]}}).result()
    socks: list[socket.socket] = []
    try:
        for name in ("b0", "b1"):
            nic = net.network_interfaces.begin_create_or_update(
                rg, name, nic_body(subnet, loadBalancerBackendAddressPools=[pool])).result()
            hold(holders, attach(kumo, nic.id), name, 7010)
        frontend = pip.ip_address
        before = lb_counters(kumo, vnet.id, lb_id)
        # open connections until each backend holds one (the 5-tuple hash picks)
        held: dict[str, socket.socket] = {}
        for _ in range(40):
            s = socket.create_connection((frontend, 80), timeout=3)
            socks.append(s)
            held.setdefault(s.recv(100).decode().strip(), s)
            if len(held) == 2:
                break
        assert set(held) == {"b0", "b1"}
        assert talk(held["b0"], "x") == "b0:x\n" and talk(held["b1"], "x") == "b1:x\n"
        packets, octets, syns = lb_counters(kumo, vnet.id, lb_id)
        assert syns - before[2] >= len(socks) and packets - before[0] >= 4 * len(socks) and octets > before[1]

        # b1's ip configuration leaves the pool (its endpoint and server stay): its flow is flushed, so
        # the next packet is balanced afresh, reaches b0 (which knows no such connection) and is reset;
        # b0's flow goes on
        net.network_interfaces.begin_create_or_update(rg, "b1", nic_body(subnet)).result()
        assert talk(held["b1"], "y") is None
        assert talk(held["b0"], "y") == "b0:y\n"
        assert {reach(None, frontend, 80) for _ in range(10)} == {"b0\n"}
        after = lb_counters(kumo, vnet.id, lb_id)
        assert after[0] > packets and after[1] > octets and after[2] >= syns + 10

        # the same counters as Azure Monitor metrics, sampled every few seconds (traffic goes on meanwhile:
        # a sample is the growth since the sampler's previous reading)
        def sampled() -> dict[str, float] | None:
            assert reach(None, frontend, 80) == "b0\n"
            with kumo.http() as c:
                r = c.get(f"{lb_id}/providers/microsoft.insights/metrics", params={
                    "api-version": "2018-01-01", "metricnames": "ByteCount,PacketCount,SYNCount,VipAvailability",
                    "timespan": "PT10M", "interval": "PT5S", "aggregation": "Total,Average"})
            assert r.status_code == 200, r.text
            got = {v["name"]["value"]: [p for p in v["timeseries"][0]["data"] if "total" in p]
                   for v in r.json()["value"]}
            totals = {name: sum(p["total"] for p in data) for name, data in got.items()}
            if totals["SYNCount"] < 1 or not got["VipAvailability"]:
                return None
            return {**totals, "VipAvailability": got["VipAvailability"][-1]["average"]}

        metrics = until(sampled, timeout=30)
        assert metrics["ByteCount"] > 0 and metrics["PacketCount"] > 0 and metrics["VipAvailability"] == 100
    finally:
        for s in socks:
            s.close()
    for name in ("b0", "b1"):
        net.network_interfaces.begin_delete(rg, name).result()
    net.load_balancers.begin_delete(rg, "lb").result()


@pytest.mark.slow  # a kumo of its own, with a public IP pool off loopback
def test_outbound_rule_members_leave_from_the_frontend_ip() -> None:
    # 198.18.0.0/15 is reserved for benchmarking: never a real destination
    server = start_server("--public-ip-pool", f"198.19.{random.randrange(256)}.0/24")
    servers = Servers()
    try:
        base, net = create_group(server, unique("rglbout"))
        pips = {n: put_and_wait(server, f"{net}/publicIPAddresses/{n}", {"location": "local",
                                                                          "sku": {"name": "Standard"}})
                for n in ("fe", "own", "far")}
        subnets = {}
        for side, prefix in (("a", "10.8"), ("b", "10.9")):
            vnet = put_and_wait(server, f"{net}/virtualNetworks/v{side}", {"location": "local", "properties": {
                "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
                "subnets": [{"name": "s", "properties": {"addressPrefix": f"{prefix}.0.0/24"}}]}})
            subnets[side] = vnet["properties"]["subnets"][0]["id"]
        lb_id = f"{base}/providers/Microsoft.Network/loadBalancers/lb"
        pool = f"{lb_id}/backendAddressPools/pool"
        lb = put_and_wait(server, lb_id, {"location": "local", "sku": {"name": "Standard"}, "properties": {
            "frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": pips["fe"]["id"]}}}],
            "backendAddressPools": [{"name": "pool"}],
            "outboundRules": [{"name": "out", "properties": {
                "frontendIPConfigurations": [{"id": f"{lb_id}/frontendIPConfigurations/fe"}],
                "backendAddressPool": {"id": pool}, "protocol": "All", "allocatedOutboundPorts": 1024}}]}})
        assert lb["properties"]["outboundRules"][0]["properties"]["allocatedOutboundPorts"] == 1024
        eps = {}
        for name, side, extra in (("m", "a", {}), ("own", "a", {"publicIPAddress": {"id": pips["own"]["id"]}}),
                                  ("plain", "a", None), ("far", "b", {"publicIPAddress": {"id": pips["far"]["id"]}})):
            cfg: dict[str, Any] = {"subnet": {"id": subnets[side]}, **(extra or {})}
            if extra is not None:  # "plain" is in no pool
                if side == "a":
                    cfg["loadBalancerBackendAddressPools"] = [{"id": pool}]
            nic = put_and_wait(server, f"{net}/networkInterfaces/{name}", {"location": "local", "properties": {
                "ipConfigurations": [{"name": "c", "properties": cfg}]}})
            eps[name] = attach(server, nic["id"])
        servers.start(eps["far"], "@peer", 9000)
        far = pips["far"]["properties"]["ipAddress"]
        assert reach(eps["m"].netns, far, 9000) == pips["fe"]["properties"]["ipAddress"]  # the outbound rule's IP
        assert reach(eps["own"].netns, far, 9000) == pips["own"]["properties"]["ipAddress"]  # its own IP first
        plain = reach(eps["plain"].netns, far, 9000)
        assert plain is not None and plain.startswith("169.254.")  # no rule: the VNet's own address
        servers.stop()
        delete_group(server, base)
    finally:
        servers.stop()
        stop_server(server)


@pytest.mark.slow  # the az CLI takes about a second a call
def test_az_network_lb_nat_pool_outbound_rule_and_list_mapping(kumo: KumoServer, rg: str) -> None:
    kumo.az("network", "vnet", "create", "-g", rg, "-n", "v", "--address-prefixes", "10.10.0.0/16",
            "--subnet-name", "s", "--subnet-prefixes", "10.10.0.0/24")
    kumo.az("network", "lb", "create", "-g", rg, "-n", "lb", "--sku", "Standard", "--public-ip-address", "lbpip",
            "--frontend-ip-name", "fe", "--backend-pool-name", "pool")
    kumo.az("network", "lb", "inbound-nat-pool", "create", "-g", rg, "--lb-name", "lb", "-n", "ssh", "--protocol",
            "Tcp", "--frontend-port-range-start", "50000", "--frontend-port-range-end", "50099", "--backend-port", "22",
            "--frontend-ip-name", "fe")
    kumo.az("network", "lb", "inbound-nat-rule", "create", "-g", rg, "--lb-name", "lb", "-n", "rdp", "--protocol",
            "Tcp", "--frontend-port-range-start", "51000", "--frontend-port-range-end", "51099", "--backend-port",
            "3389", "--frontend-ip-name", "fe", "--backend-pool-name", "pool")
    clash = kumo.az("network", "lb", "inbound-nat-rule", "create", "-g", rg, "--lb-name", "lb", "-n", "x",
                    "--protocol", "Tcp", "--frontend-port", "50010", "--backend-port", "22", "--frontend-ip-name", "fe",
                    check=False)
    assert clash.returncode != 0 and "RulesUseSameFrontendIpAndPort" in clash.stderr
    bad = kumo.az("network", "lb", "outbound-rule", "create", "-g", rg, "--lb-name", "lb", "-n", "out",
                  "--frontend-ip-configs", "fe", "--address-pool", "pool", "--protocol", "All", "--outbound-ports",
                  "1001", check=False)
    assert bad.returncode != 0 and "SpecifiedAllocatedOutboundPortsForOutboundRuleIsNotAMultipleOfEight" in bad.stderr
    kumo.az("network", "lb", "outbound-rule", "create", "-g", rg, "--lb-name", "lb", "-n", "out",
            "--frontend-ip-configs", "fe", "--address-pool", "pool", "--protocol", "All", "--outbound-ports", "2048")
    subnet = kumo.az("network", "vnet", "subnet", "show", "-g", rg, "--vnet-name", "v", "-n", "s")["id"]
    lb_id = lb_id_of(kumo, rg, "lb")
    with kumo.http() as c:  # a NIC the way a Uniform scale set's model has it: in the pool and the NAT pool
        r = c.put(f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/"
                  "Microsoft.Network/networkInterfaces/n0", params={"api-version": NET_API}, json=nic_body(
                      subnet, loadBalancerBackendAddressPools=[f"{lb_id}/backendAddressPools/pool"],
                      loadBalancerInboundNatPools=[f"{lb_id}/inboundNatPools/ssh"]))
        assert r.status_code in (200, 201), r.text
    until(lambda: kumo.az("network", "nic", "show", "-g", rg, "-n", "n0")["provisioningState"] == "Succeeded")
    lb = kumo.az("network", "lb", "show", "-g", rg, "-n", "lb")
    assert [p["name"] for p in lb["inboundNatPools"]] == ["ssh"] and lb["outboundRules"][0]["allocatedOutboundPorts"] \
        == 2048
    assert {r["name"]: r.get("frontendPort") for r in lb["inboundNatRules"]}["ssh.0"] == 50000
    rules = kumo.az("network", "lb", "inbound-nat-rule", "list", "-g", rg, "--lb-name", "lb")
    assert sorted(r["name"] for r in rules) == ["rdp", "ssh.0"]
    address = lb["backendAddressPools"][0]["loadBalancerBackendAddresses"][0]
    assert address["inboundNatRulesPortMapping"][0]["frontendPort"] == 51000
    mapping = kumo.az("network", "lb", "list-mapping", "-g", rg, "-n", "lb", "--backend-pool-name", "pool",
                      "--request", f"nic={address['networkInterfaceIPConfiguration']['id']}")
    assert mapping["inboundNatRulePortMappings"] == [
        {"backendPort": 3389, "frontendPort": 51000, "inboundNatRuleName": "rdp", "protocol": "Tcp"}]
    in_use = kumo.az("network", "lb", "inbound-nat-pool", "delete", "-g", rg, "--lb-name", "lb", "-n", "ssh",
                     check=False)
    assert in_use.returncode != 0 and "InUseInboundNatPoolCannotBeDeleted" in in_use.stderr
    kumo.az("network", "nic", "delete", "-g", rg, "-n", "n0")
    kumo.az("network", "lb", "inbound-nat-pool", "delete", "-g", rg, "--lb-name", "lb", "-n", "ssh")
    kumo.az("network", "lb", "delete", "-g", rg, "-n", "lb")
