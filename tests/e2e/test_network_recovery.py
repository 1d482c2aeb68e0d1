"""Host networking survives a crash of kumo (instances keep their network), orphans left behind are
removed at the next start, and deleting the resources leaves nothing of kumo on the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import start_server, stop_server, unique
from tests.e2e.netlib import Servers, attach, create_group, delete_group, put_and_wait, reach

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="virtual networks need root")]


def _host_objects(site: str) -> dict[str, list[str]]:
    """Everything on the host that carries this kumo site's names."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = [link["ifname"] for link in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                                                  text=True).stdout)]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split("\n")
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout.splitlines()
    return {"netns": [n for n in netns if n.startswith(f"kumo{site}-")],
            "links": [n for n in links if n.startswith(f"k{site}h")],
            "tables": [t for t in tables if t.strip() == f"table ip kumo_site{site}"],
            "routes": [r for r in routes if f" k{site}h" in r]}


def test_crash_orphans_and_cleanup() -> None:
    server = start_server()
    servers = Servers()
    try:
        base, net = create_group(server, unique("rgrec"))
        vnet = put_and_wait(server, f"{net}/virtualNetworks/v", {"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": "s", "properties": {"addressPrefix": "10.1.0.0/24"}}]}})
        pip = put_and_wait(server, f"{net}/publicIPAddresses/p", {"location": "local"})
        cfg = {"subnet": {"id": vnet["properties"]["subnets"][0]["id"]}, "publicIPAddress": {"id": pip["id"]}}
        nic = put_and_wait(server, f"{net}/networkInterfaces/n", {"location": "local", "properties": {
            "ipConfigurations": [{"name": "c", "properties": cfg}]}})
        ep = attach(server, nic["id"])
        servers.start(ep, "alive", 8080)
        address = pip["properties"]["ipAddress"]
        assert reach(None, address, 8080) == "alive"
        site = (server.data_dir / "network-site").read_text().strip()

        os.kill(server.pid(), signal.SIGKILL)  # crash: host objects stay, the instance keeps its network
        time.sleep(0.5)
        assert reach(None, address, 8080) == "alive"
        # leftovers of resources that no longer exist, as a crash in the middle of a delete leaves them
        subprocess.run(["ip", "netns", "add", f"kumo{site}-vdeadbeef00"], check=True)
        subprocess.run(["ip", "netns", "add", f"kumo{site}-edeadbeef00"], check=True)
        subprocess.run(["ip", "link", "add", f"k{site}hdeadbeef00", "type", "veth", "peer", "name",
                        f"k{site}hdeadbeef01"], check=True)
        (server.data_dir / "run.json").unlink()
        server.start()
        objects = _host_objects(site)
        assert not [n for n in objects["netns"] + objects["links"] if "deadbeef" in n], objects
        assert len(objects["netns"]) == 2 and len(objects["links"]) == 1  # the VNet, the endpoint, the uplink
        assert reach(None, address, 8080) == "alive"  # rebuilt over the top: still one working path

        servers.stop()
        delete_group(server, base)
        assert _host_objects(site) == {"netns": [], "links": [], "tables": [], "routes": []}
    finally:
        servers.stop()
        stop_server(server)
