"""Host networking survives a crash of kumo (instances keep their network), orphans left behind are
removed at the next start, and deleting the resources leaves nothing of kumo on the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import KumoServer, start_server, stop_server, unique
from tests.e2e.test_network_dataplane import NET_API, Servers, attach, reach

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


def _put(server: KumoServer, path: str, body: dict) -> dict:
    with server.http() as c:
        r = c.put(path, params={"api-version": NET_API}, json=body)
        assert r.status_code in (200, 201), r.text
        for _ in range(100):
            got = c.get(path, params={"api-version": NET_API}).json()
            if got["properties"]["provisioningState"] in ("Succeeded", "Failed"):
                assert got["properties"]["provisioningState"] == "Succeeded", got
                return got
            time.sleep(0.1)
    raise AssertionError(f"{path} did not finish")


def test_crash_orphans_and_cleanup() -> None:
    server = start_server()
    servers = Servers()
    try:
        rg = unique("rgrec")
        base = f"/subscriptions/{server.identity['subscription_id']}/resourceGroups/{rg}"
        net = f"{base}/providers/Microsoft.Network"
        with server.http() as c:
            assert c.put(base, params={"api-version": "2024-11-01"}, json={"location": "local"}).status_code == 201
        vnet = _put(server, f"{net}/virtualNetworks/v", {"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": "s", "properties": {"addressPrefix": "10.1.0.0/24"}}]}})
        pip = _put(server, f"{net}/publicIPAddresses/p", {"location": "local"})
        nic = _put(server, f"{net}/networkInterfaces/n", {"location": "local", "properties": {"ipConfigurations": [
            {"name": "c", "properties": {"subnet": {"id": vnet["properties"]["subnets"][0]["id"]},
                                         "publicIPAddress": {"id": pip["id"]}}}]}})
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
        with server.http() as c:
            r = c.delete(base, params={"api-version": "2024-11-01"})
            assert r.status_code == 202
            for _ in range(100):
                if c.get(base, params={"api-version": "2024-11-01"}).status_code == 404:
                    break
                time.sleep(0.1)
        assert _host_objects(site) == {"netns": [], "links": [], "tables": [], "routes": []}
    finally:
        servers.stop()
        stop_server(server)
