"""A load balancer spreads real connections over the healthy members of its backend pool: a public
frontend on the host, Azure's hash distribution, a health probe that takes a dead backend out and
puts it back, inbound NAT rules (one port to one NIC, and a port range over the pool), and an
internal frontend in a subnet."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.conftest import KumoServer
from tests.e2e.netlib import Servers, attach, reach, until

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nftables")]


def test_load_balancer_spreads_traffic_over_healthy_backends(kumo: KumoServer, rg: str, network_client: Any) -> None:
    net = network_client
    vnet = net.virtual_networks.begin_create_or_update(rg, "v", {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": ["10.5.0.0/16"]},
        "subnets": [{"name": "s", "properties": {"addressPrefix": "10.5.0.0/24"}}]}}).result()
    subnet = vnet.subnets[0].id
    pip = net.public_ip_addresses.begin_create_or_update(rg, "lbpip", {"location": "local",
                                                                        "sku": {"name": "Standard"}}).result()
    lb_id = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/" \
            "Microsoft.Network/loadBalancers/lb"
    lb = net.load_balancers.begin_create_or_update(rg, "lb", {"location": "local", "sku": {"name": "Standard"},
        "properties": {
            "frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": pip.id}}},
                                         {"name": "internal", "properties": {"subnet": {"id": subnet},
                                                                            "privateIPAddress": "10.5.0.100"}}],
            "backendAddressPools": [{"name": "pool"}],
            "probes": [{"name": "tcp7000", "properties": {"protocol": "Tcp", "port": 7000, "intervalInSeconds": 1,
                                                          "numberOfProbes": 1, "probeThreshold": 1}}],
            "loadBalancingRules": [{"name": "web", "properties": {
                "frontendIPConfiguration": {"id": f"{lb_id}/frontendIPConfigurations/fe"},
                "backendAddressPool": {"id": f"{lb_id}/backendAddressPools/pool"},
                "probe": {"id": f"{lb_id}/probes/tcp7000"},
                "protocol": "Tcp", "frontendPort": 80, "backendPort": 7000}},
                {"name": "inside", "properties": {
                    "frontendIPConfiguration": {"id": f"{lb_id}/frontendIPConfigurations/internal"},
                    "backendAddressPool": {"id": f"{lb_id}/backendAddressPools/pool"},
                    "protocol": "Tcp", "frontendPort": 8080, "backendPort": 7001}}],
            "inboundNatRules": [{"name": "ssh0", "properties": {
                "frontendIPConfiguration": {"id": f"{lb_id}/frontendIPConfigurations/fe"},
                "protocol": "Tcp", "frontendPort": 50022, "backendPort": 7002}},
                {"name": "range", "properties": {
                    "frontendIPConfiguration": {"id": f"{lb_id}/frontendIPConfigurations/fe"},
                    "backendAddressPool": {"id": f"{lb_id}/backendAddressPools/pool"},
                    "protocol": "Tcp", "frontendPortRangeStart": "50100", "frontendPortRangeEnd": "50119",
                    "backendPort": 7003}}]}}).result()
    assert lb.provisioning_state == "Succeeded"
    assert lb.frontend_ip_configurations[1].private_ip_address == "10.5.0.100"
    servers = Servers()
    try:
        endpoints = {}
        for name in ("b0", "b1", "client"):
            cfg: dict[str, Any] = {"subnet": {"id": subnet}}
            if name != "client":
                cfg["loadBalancerBackendAddressPools"] = [{"id": f"{lb_id}/backendAddressPools/pool"}]
            if name == "b0":
                cfg["loadBalancerInboundNatRules"] = [{"id": f"{lb_id}/inboundNatRules/ssh0"}]
            nic = net.network_interfaces.begin_create_or_update(rg, name, {"location": "local", "properties": {
                "ipConfigurations": [{"name": "c", "properties": cfg}]}}).result()
            endpoints[name] = attach(kumo, nic.id)
        servers.start(endpoints["b0"], "b0", 7000, 7001, 7002, 7003)
        servers.start(endpoints["b1"], "b1", 7000, 7001, 7002, 7003)
        pool = net.load_balancer_backend_address_pools.get(rg, "lb", "pool")
        assert len(pool.backend_ip_configurations) == 2
        frontend = pip.ip_address
        # both backends answer on the public frontend once the probe has seen them
        seen = until(lambda: {reach(None, frontend, 80) for _ in range(30)} >= {"b0", "b1"} or None)
        assert seen
        assert reach(None, frontend, 50022) == "b0"  # one NAT port, one NIC
        assert {reach(None, frontend, 50100), reach(None, frontend, 50101)} == {"b0", "b1"}  # NAT range
        assert reach(None, frontend, 50102) is None  # a range port with no member behind it
        inside = {reach(endpoints["client"].netns, "10.5.0.100", 8080) for _ in range(30)}
        assert inside == {"b0", "b1"}  # the internal frontend, from inside the VNet
        # kill b1's server: the probe takes it out of rotation, and only b0 answers
        servers.procs[1].kill()
        servers.procs[1].wait()
        until(lambda: {reach(None, frontend, 80) for _ in range(20)} == {"b0"})
        servers.start(endpoints["b1"], "b1", 7000, 7001, 7002, 7003)  # back: in rotation again
        until(lambda: "b1" in {reach(None, frontend, 80) for _ in range(20)})
    finally:
        servers.stop()
    for name in ("b0", "b1", "client"):
        net.network_interfaces.begin_delete(rg, name).result()
    net.load_balancers.begin_delete(rg, "lb").result()


@pytest.mark.slow  # the az CLI takes about a second a call
def test_az_network_lb_commands(kumo: KumoServer, rg: str) -> None:
    lb = kumo.az("network", "lb", "create", "-g", rg, "-n", "lb1", "--sku", "Standard", "--public-ip-address",
                 "lbpip", "--frontend-ip-name", "fe", "--backend-pool-name", "pool")["loadBalancer"]
    assert lb["provisioningState"] == "Succeeded" and lb["frontendIPConfigurations"][0]["name"] == "fe"
    kumo.az("network", "lb", "probe", "create", "-g", rg, "--lb-name", "lb1", "-n", "hp", "--protocol", "tcp",
            "--port", "80")
    kumo.az("network", "lb", "rule", "create", "-g", rg, "--lb-name", "lb1", "-n", "web", "--protocol", "tcp",
            "--frontend-port", "80", "--backend-port", "80", "--frontend-ip-name", "fe", "--backend-pool-name",
            "pool", "--probe-name", "hp")
    kumo.az("network", "lb", "inbound-nat-rule", "create", "-g", rg, "--lb-name", "lb1", "-n", "ssh", "--protocol",
            "tcp", "--frontend-port", "50001", "--backend-port", "22", "--frontend-ip-name", "fe")
    shown = kumo.az("network", "lb", "show", "-g", rg, "-n", "lb1")
    assert [r["name"] for r in shown["loadBalancingRules"]] == ["web"]
    assert shown["loadBalancingRules"][0]["probe"]["id"].endswith("/probes/hp")
    assert [p["name"] for p in shown["probes"]] == ["hp"] and [n["name"] for n in shown["inboundNatRules"]] == ["ssh"]
    assert [p["name"] for p in kumo.az("network", "lb", "address-pool", "list", "-g", rg, "--lb-name", "lb1")] == [
        "pool"]
    clash = kumo.az("network", "lb", "inbound-nat-rule", "create", "-g", rg, "--lb-name", "lb1", "-n", "web2",
                    "--protocol", "tcp", "--frontend-port", "80", "--backend-port", "8080", "--frontend-ip-name", "fe",
                    check=False)
    assert clash.returncode != 0 and "RulesUseSameFrontendIpAndPort" in clash.stderr
    kumo.az("network", "lb", "delete", "-g", rg, "-n", "lb1")
    assert kumo.az("network", "lb", "list", "-g", rg) == []
