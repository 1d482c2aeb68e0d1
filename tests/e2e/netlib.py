"""Helpers for data-plane tests: attach endpoints to NICs, run probe servers in them, test what
reaches what, and create/delete network resources over plain REST."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import KumoServer

PROBE = str(Path(__file__).with_name("netprobe.py"))
NET_API = "2024-05-01"
RG_API = {"api-version": "2024-11-01"}


@dataclass
class Endpoint:
    nic: str
    netns: str
    ip: str
    gateway: str


def attach(kumo: KumoServer, nic_id: str) -> Endpoint:
    with kumo.http() as c:
        r = c.post(f"{nic_id}/attachHostEndpoint", params={"api-version": NET_API})
    assert r.status_code == 200, r.text
    body = r.json()
    return Endpoint(nic_id, body["netns"], body["privateIPAddress"], body["gateway"])


def reach(netns: str | None, host: str, port: int) -> str | None:
    """What the server at host:port says to a client in `netns` (None: the host), or None."""
    argv = [sys.executable, PROBE, "connect", host, str(port)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return proc.stdout if proc.returncode == 0 else None


class Servers:
    """Probe servers started in endpoint namespaces; all stopped (by PID) at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, ep: Endpoint, name: str, *ports: int) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", ep.netns, sys.executable, PROBE, "serve",
                                 ",".join(map(str, ports)), name], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.procs.append(proc)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def put_and_wait(server: KumoServer, path: str, body: dict) -> dict:
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


def create_group(server: KumoServer, name: str) -> tuple[str, str]:
    """A new resource group: its path and the path of Microsoft.Network under it."""
    base = f"/subscriptions/{server.identity['subscription_id']}/resourceGroups/{name}"
    with server.http() as c:
        assert c.put(base, params=RG_API, json={"location": "local"}).status_code == 201
    return base, f"{base}/providers/Microsoft.Network"


def delete_group(server: KumoServer, group_path: str) -> None:
    """Delete a resource group and wait until it is gone (its host objects with it)."""
    with server.http() as c:
        assert c.delete(group_path, params=RG_API).status_code == 202
        for _ in range(300):
            if c.get(group_path, params=RG_API).status_code == 404:
                return
            time.sleep(0.1)
    raise AssertionError(f"{group_path} was not deleted")


def until(check: Any, timeout: float = 20.0) -> Any:
    """`check()`'s first truthy value, polled every 0.2 s; AssertionError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")
