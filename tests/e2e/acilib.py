"""Helpers for container group tests: bodies, PUT-and-wait over REST, and what a group left on the host."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import KumoServer

ACI_API = {"api-version": "2024-05-01-preview"}
BUSYBOX = "busybox"  # Docker Hub's name: resolves to kumo's offline catalog


def container(name: str, command: list[str] | None = None, image: str = BUSYBOX, ports: tuple[int, ...] = (),
              memory: float = 0.5, cpu: float = 0.5, **props: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"image": image, "resources": {"requests": {"cpu": cpu, "memoryInGB": memory}},
                            "ports": [{"port": p, "protocol": "TCP"} for p in ports], **props}
    if command:
        body["command"] = command
    return {"name": name, "properties": body}


def group_body(*containers: dict[str, Any], restart: str = "Always", public_ports: tuple[int, ...] = (),
               **props: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"location": "local", "properties": {
        "osType": "Linux", "restartPolicy": restart, "containers": list(containers), **props}}
    if public_ports:
        body["properties"]["ipAddress"] = {"type": "Public", "ports": [{"port": p, "protocol": "TCP"}
                                                                       for p in public_ports]}
    return body


def group_path(kumo: KumoServer, rg: str, name: str) -> str:
    return (f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/"
            f"Microsoft.ContainerInstance/containerGroups/{name}")


def put_group(kumo: KumoServer, path: str, body: dict[str, Any], expect: str = "Succeeded",
              timeout: float = 120) -> dict[str, Any]:
    with kumo.http() as c:
        r = c.put(path, params=ACI_API, json=body)
        assert r.status_code in (200, 201), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = c.get(path, params=ACI_API).json()
            if got["properties"]["provisioningState"] in ("Succeeded", "Failed"):
                assert got["properties"]["provisioningState"] == expect, got
                return got
            time.sleep(0.1)
    raise AssertionError(f"{path} did not finish")


def get_group(kumo: KumoServer, path: str) -> dict[str, Any]:
    with kumo.http() as c:
        r = c.get(path, params=ACI_API)
        assert r.status_code == 200, r.text
        return r.json()


def wait_for(kumo: KumoServer, path: str, check: Any, timeout: float = 60) -> dict[str, Any]:
    """GET the group until `check(group)` holds."""
    deadline = time.monotonic() + timeout
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = get_group(kumo, path)
        if check(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"condition not met; last view: {got['properties'].get('instanceView')} "
                         f"{[c['properties'].get('instanceView') for c in got['properties']['containers']]}")


def state(group: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return (group["properties"]["containers"][index]["properties"].get("instanceView") or {})


def logs(kumo: KumoServer, path: str, name: str, **params: Any) -> str:
    with kumo.http() as c:
        r = c.get(f"{path}/containers/{name}/logs", params={**ACI_API, **params})
        assert r.status_code == 200, r.text
        return r.json()["content"]


def delete(kumo: KumoServer, path: str) -> None:
    with kumo.http() as c:
        r = c.delete(path, params=ACI_API)
        assert r.status_code in (200, 202, 204), r.text
        for _ in range(600):
            if c.get(path, params=ACI_API).status_code == 404:
                return
            time.sleep(0.1)
    raise AssertionError(f"{path} was not deleted")


def http_get(url: str, timeout: float = 3) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - a test's own loopback URL
            return r.read().decode(errors="replace")
    except OSError:
        return None


def wait_http(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (body := http_get(url)) is not None:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def host_traces(kumo: KumoServer, group_key_hash: str) -> list[str]:
    """Host objects a group of this kumo could have left: processes, mounts, cgroups, namespaces."""
    site = (kumo.data_dir / "network-site").read_text().strip()
    prefix = f"kumo{site}-{group_key_hash}"
    found = []
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [line for line in mounts.splitlines() if prefix in line or f"/groups/{group_key_hash}" in line]
    for ctl in ("memory", "cpu", "pids"):
        base = Path(f"/sys/fs/cgroup/{ctl}/kumo{site}/g{group_key_hash}")
        if base.exists():
            found.append(str(base))
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found += [line for line in ps.splitlines() if prefix in line]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line for line in netns.splitlines() if f"kumo{site}-e{group_key_hash}" in line]
    if (kumo.data_dir / "containers" / "groups" / group_key_hash).exists():
        found.append("files")
    for ns in netns.split():
        if ns.startswith(f"kumo{site}-v"):  # a VNet namespace: no nft chain of the group's may stay
            rules = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True,
                                   text=True).stdout
            found += [f"{ns}: {line.strip()}" for line in rules.splitlines()
                      if f"g{group_key_hash}" in line or f"n{group_key_hash}" in line]
    return found


def key_hash(path: str) -> str:
    import hashlib

    return hashlib.sha1(path.lower().encode()).hexdigest()[:10]


def root_only() -> bool:
    return os.geteuid() == 0
