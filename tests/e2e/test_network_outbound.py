"""Instances reach the world outside their VNet through SNAT: here, another VNet's public IP, with
a public IP pool off loopback (a guest's own loopback would swallow 127.x). The callee sees the
caller's public IP as the source, as on Azure."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from tests.conftest import start_server, stop_server, unique
from tests.e2e.netlib import Servers, attach, create_group, delete_group, put_and_wait, reach

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="virtual networks need root")]


def test_instance_reaches_another_vnets_public_ip_through_snat() -> None:
    # 198.18.0.0/15 is reserved for benchmarking: never a real destination
    server = start_server("--public-ip-pool", f"198.18.{random.randrange(256)}.0/24")
    servers = Servers()
    try:
        base, net = create_group(server, unique("rgout"))
        eps, pips = {}, {}
        for side in ("a", "b", "c"):
            vnet = put_and_wait(server, f"{net}/virtualNetworks/v{side}", {"location": "local", "properties": {
                "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                "subnets": [{"name": "s", "properties": {"addressPrefix": "10.0.0.0/24"}}]}})
            cfg = {"subnet": {"id": vnet["properties"]["subnets"][0]["id"]}}
            if side != "c":  # c has no public IP: it goes out from its VNet's own address
                pips[side] = put_and_wait(server, f"{net}/publicIPAddresses/p{side}", {"location": "local"})
                cfg["publicIPAddress"] = {"id": pips[side]["id"]}
            nic = put_and_wait(server, f"{net}/networkInterfaces/n{side}", {"location": "local", "properties": {
                "ipConfigurations": [{"name": "c", "properties": cfg}]}})
            eps[side] = attach(server, nic["id"])
        servers.start(eps["b"], "@peer", 9000)
        b_public = pips["b"]["properties"]["ipAddress"]
        assert reach(eps["a"].netns, b_public, 9000) == pips["a"]["properties"]["ipAddress"]
        from_c = reach(eps["c"].netns, b_public, 9000)
        assert from_c is not None and from_c.startswith("169.254.")  # c's VNet uplink, after SNAT
        assert reach(None, b_public, 9000) is not None  # and the host, too
        servers.stop()
        delete_group(server, base)
    finally:
        servers.stop()
        stop_server(server)
