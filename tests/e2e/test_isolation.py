"""Containers are boxed in, shown from inside real container groups (busybox from the offline catalog):

- network: with kumo listening on every address (`--host 0.0.0.0`), from a group in VNet A and from
  a public group (no VNet), neither kumo's HTTPS port nor a listener of the test's own on the host
  (0.0.0.0) answers at any address an instance could try (every address of the host, the subnet's
  gateway, the public IPs of the pool, loopback), and a group in VNet B is out of reach while one in
  VNet A is reached from A. The same probe script run by the host's own busybox reaches kumo and the
  listener at every host address: the refusals are the sandbox's doing.
- privileges: Docker's default capabilities and no more (CapEff = CapBnd), NoNewPrivs, no host
  processes or host paths in /proc, a read-only /sys, no mount, no network administration.

The public IP pool is off loopback (198.18.x.0/24, reserved for benchmarks) so that public IPs are
host addresses the instances route to, not their own loopback."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KumoServer, start_server, stop_server
from tests.e2e.acilib import ACI_API, container, group_body, group_path, logs, put_group
from tests.e2e.netlib import PROBE, create_group, put_and_wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("busybox"),
                                 reason="containers need root and nftables; the host probe needs busybox")]

DOCKER_CAPS = 0x00000000a80425fb  # Docker's default set: what `docker run` grants without --cap-add
DELEGATION = [{"name": "aci", "properties": {"serviceName": "Microsoft.ContainerInstance/containerGroups"}}]
# Probes every "host:port" of $TARGETS at once: "PROBE host:port open|shut <what the server said>".
# It sends an HTTP request so that httpd answers; kumo's TLS port hangs up on it, which still is "open".
PROBE_SCRIPT = r"""
D=${PROBE_DIR:-/tmp}; mkdir -p $D
probe() {
  f=$D/p.$1.$2
  if printf 'GET / HTTP/1.0\r\n\r\n' | busybox timeout 8 busybox nc -w 3 $1 $2 >$f 2>/dev/null; then r=open
  else r=shut; fi
  echo "PROBE $1:$2 $r $(head -c 600 $f | tr -dc 'a-zA-Z0-9._-')"
}
for t in $TARGETS; do probe ${t%:*} ${t#*:} & done
wait
echo PROBES-DONE
"""
INSIDE_SCRIPT = r"""
echo "STATUS $(grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/1/status | tr -s '\t ' ' ' | tr '\n' ';')"
for p in /proc/[0-9]*; do echo "PID ${p#/proc/} $(tr '\0\n' '  ' < $p/cmdline)"; done
sed 's/^/MOUNT /' /proc/mounts
touch /sys/probe-file 2>/dev/null && echo "SYS writable" || echo "SYS read-only"
mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo "MOUNTED yes" || echo "MOUNTED no"
ip link add probe0 type dummy 2>/dev/null && echo "NETADMIN yes" || echo "NETADMIN no"
"""


def _httpd(name: str, token: str) -> dict[str, Any]:
    return container(name, ["sh", "-c", f"mkdir -p /www && echo {token} > /www/index.html && "
                                        "exec httpd -f -p 8080 -h /www"], ports=(8080,))


def _prober(targets: list[str]) -> dict[str, Any]:
    return container("prober", ["sh", "-c", INSIDE_SCRIPT + PROBE_SCRIPT + "exec sleep 3600"],
                     environmentVariables=[{"name": "TARGETS", "value": " ".join(targets)}])


def _probes(text: str) -> dict[str, tuple[bool, str]]:
    return {m[1]: (m[2] == "open", m[3]) for m in re.finditer(r"^PROBE (\S+) (open|shut) ?(\S*)$", text, re.M)}


def _host_addresses() -> list[str]:
    """Every IPv4 address of the host (each VNet's uplink end included), loopback aside."""
    links = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
    return sorted({a["local"] for link in links for a in link.get("addr_info", [])
                   if a.get("family") == "inet" and not a["local"].startswith("127.")})


@dataclass
class World:
    server: KumoServer
    listener_port: int
    listener_token: str
    host_addrs: list[str]
    gateways_a: tuple[str, ...]  # VNet A's subnets' gateways (containers' and VM's)
    web_a: str  # private IP of an httpd group in VNet A
    web_b: str  # private IP of an httpd group in VNet B
    public_ip: str  # of the public group
    pool_addr: str  # an unallocated address of the public pool
    tokens: dict[str, str]
    inside_a: str  # what the prober in VNet A printed
    inside_public: str  # what the prober in the public group printed
    rg: str
    vm_subnet: str  # VNet A's subnet for VMs (10.61.2.0/24)

    def targets(self) -> list[str]:
        addrs = [*self.host_addrs, *self.gateways_a, self.public_ip, self.pool_addr, "127.0.0.1"]
        return [f"{a}:{p}" for a in addrs for p in (self.server.port, self.listener_port)] + \
            [f"{self.web_a}:8080", f"{self.web_b}:8080", f"{self.public_ip}:8080"]


def _wait_logs(server: KumoServer, path: str, name: str, marker: str, timeout: float = 120) -> str:
    """The container's output once a line is `marker` (the script itself, in /proc's cmdlines, names it too)."""
    deadline = time.monotonic() + timeout
    while not re.search(rf"^{marker}$", out := logs(server, path, name), re.M):
        assert time.monotonic() < deadline, out
        time.sleep(0.5)
    return out


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # kumo listens on every address (`--host 0.0.0.0`), the hardest case: its API is on all of them
    server = start_server("--host", "0.0.0.0", "--public-ip-pool", f"198.18.{random.randrange(256)}.0/24")
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    token = f"host-{uuid.uuid4().hex[:8]}"
    listener = subprocess.Popen([sys.executable, PROBE, "serve", str(port), token], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        base, net = create_group(server, f"rgiso{uuid.uuid4().hex[:8]}")
        rg = base.rsplit("/", 1)[-1]
        subnets = {}
        for side, prefix in (("a", "10.61"), ("b", "10.62")):
            vnet = put_and_wait(server, f"{net}/virtualNetworks/v{side}", {"location": "local", "properties": {
                "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
                "subnets": [{"name": "aci", "properties": {"addressPrefix": f"{prefix}.1.0/24",
                                                           "delegations": DELEGATION}},
                            {"name": "vms", "properties": {"addressPrefix": f"{prefix}.2.0/24"}}]}})
            subnets[side] = vnet["properties"]["subnets"][0]["id"]
            subnets[f"{side}-vms"] = vnet["properties"]["subnets"][1]["id"]
        tokens = {k: f"{k}-{uuid.uuid4().hex[:8]}" for k in ("weba", "webb", "public")}
        private = {}
        for side in ("a", "b"):
            got = put_group(server, group_path(server, rg, f"web{side}"), group_body(
                _httpd("web", tokens[f"web{side}"]), subnetIds=[{"id": subnets[side]}],
                ipAddress={"type": "Private", "ports": [{"port": 8080, "protocol": "TCP"}]}))
            private[side] = got["properties"]["ipAddress"]["ip"]
        pool = server.extra_args[-1]
        pool_addr = pool.rsplit(".", 2)[0] + ".0.250"
        # the public group's address is known once it exists: its prober container is added after
        pub_path = group_path(server, rg, "public")
        pub = put_group(server, pub_path, group_body(_httpd("web", tokens["public"]), public_ports=(8080,)))
        public_ip = pub["properties"]["ipAddress"]["ip"]
        world = World(server, port, token, _host_addresses(), ("10.61.1.1", "10.61.2.1"), private["a"],
                      private["b"], public_ip, pool_addr, tokens, "", "", rg, subnets["a-vms"])
        targets = world.targets()
        prober_a = group_path(server, rg, "probera")
        put_group(server, prober_a, group_body(_prober(targets), subnetIds=[{"id": subnets["a"]}]))
        put_group(server, pub_path, group_body(_httpd("web", tokens["public"]), _prober(targets),
                                               public_ports=(8080,)))
        world.inside_a = _wait_logs(server, prober_a, "prober", "PROBES-DONE")
        world.inside_public = _wait_logs(server, pub_path, "prober", "PROBES-DONE")
        yield world
        with server.http() as c:  # the groups go with it; stop_server's purge waits for them
            c.delete(base, params={"api-version": "2024-11-01"})
    finally:
        listener.kill()
        listener.wait()
        stop_server(server)


def test_the_host_itself_reaches_kumo_and_its_listener_with_the_same_probe(world: World) -> None:
    """The positive control: the probe script, run by the host's busybox, connects to kumo's port and
    to the test's listener at every host address, and to a public IP."""
    with tempfile.TemporaryDirectory() as d:
        targets = [f"{a}:{p}" for a in world.host_addrs for p in (world.server.port, world.listener_port)]
        targets.append(f"{world.public_ip}:8080")
        out = subprocess.run(["busybox", "sh", "-c", PROBE_SCRIPT], env={**os.environ, "TARGETS": " ".join(targets),
                             "PROBE_DIR": d}, capture_output=True, text=True, timeout=60).stdout
    probes = _probes(out)
    assert set(probes) == set(targets), out
    # other kumos on this host add and remove VNet uplinks meanwhile: judge the addresses that stayed
    stayed = set(world.host_addrs) & set(_host_addresses())
    assert len(stayed) >= 2, stayed  # at least the host's own interface and this kumo's VNet uplinks
    for target, (opened, said) in probes.items():
        if target.rsplit(":", 1)[0] not in stayed and not target.endswith(":8080"):
            continue
        assert opened, (target, out)
        if target.endswith(f":{world.listener_port}"):
            assert said == world.listener_token, (target, said)
    assert world.tokens["public"] in probes[f"{world.public_ip}:8080"][1]


@pytest.mark.parametrize("where", ["vnet", "public"])
def test_containers_reach_neither_kumo_nor_the_host_nor_another_vnet(world: World, where: str) -> None:
    out = world.inside_a if where == "vnet" else world.inside_public
    probes = _probes(out)
    assert set(probes) == set(world.targets()), out
    for target, (opened, said) in probes.items():
        port = int(target.rsplit(":", 1)[1])
        if port in (world.server.port, world.listener_port):
            assert not opened and world.listener_token not in said, (where, target, said)
    # VNet B: never (by its token: traffic that leaves the host could be answered by something else)
    assert world.tokens["webb"] not in probes[f"{world.web_b}:8080"][1], out
    if where == "vnet":  # its own VNet: yes
        assert world.tokens["weba"] in probes[f"{world.web_a}:8080"][1], out
    else:  # a public group is in no VNet
        assert world.tokens["weba"] not in probes[f"{world.web_a}:8080"][1], out
    # public IPs answer from anywhere, as on Azure, on the ports they expose
    assert world.tokens["public"] in probes[f"{world.public_ip}:8080"][1], out


@pytest.mark.parametrize("where", ["vnet", "public"])
def test_containers_have_dockers_capabilities_and_see_nothing_of_the_host(world: World, where: str) -> None:
    out = world.inside_a if where == "vnet" else world.inside_public
    status = dict(re.findall(r"(\w+): ?(\w+)", re.search(r"^STATUS (.*)$", out, re.M)[1]))
    assert int(status["CapEff"], 16) == DOCKER_CAPS and int(status["CapBnd"], 16) == DOCKER_CAPS, status
    assert int(status["CapPrm"], 16) == DOCKER_CAPS and status["NoNewPrivs"] == "1", status
    for cap in (21, 12, 19, 16):  # CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE
        assert not int(status["CapEff"], 16) & (1 << cap), cap
    pids = re.findall(r"^PID (\d+) (.*)$", out, re.M)
    assert pids and len(pids) <= 10, pids  # the prober's shell and its children, no host process
    assert all(not re.search(r"kumo|conmon|python|uvicorn|qemu|sshd|init\b", cmd) for _, cmd in pids), pids
    mounts = "\n".join(re.findall(r"^MOUNT (.*)$", out, re.M))
    assert "proc /proc proc" in mounts, mounts
    for host_path in (str(world.server.data_dir), "/work", "/var/lib/kumo", "/tmp", "/root", "/home"):
        # as an absolute path of its own (not the tail of another, as in a relative ".../work")
        assert not re.search(rf"(?<![\w./-]){re.escape(host_path)}(?=[/\s,:]|$)", mounts), (host_path, mounts)
    assert " / overlay " in mounts and "lowerdir=" in mounts, mounts
    assert "SYS read-only" in out and "MOUNTED no" in out and "NETADMIN no" in out, out


def test_the_probers_ran_as_containers_of_their_groups(world: World) -> None:
    """The outputs above came from the groups' prober containers (not from the host): logs of ACI."""
    for out in (world.inside_a, world.inside_public):
        assert "PROBES-DONE" in out and "STATUS " in out
    with world.server.http() as c:
        groups = c.get(f"/subscriptions/{world.server.identity['subscription_id']}/providers/"
                       "Microsoft.ContainerInstance/containerGroups", params=ACI_API).json()["value"]
    assert {g["name"] for g in groups} == {"weba", "webb", "public", "probera"}


def _tiny_image() -> bool:
    from kumo.compute.marketplace import ImageCatalog
    from kumo.config import default_vm_images_dir

    return shutil.which("qemu-system-x86_64") is not None and \
        ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest") is not None


@pytest.mark.skipif(not _tiny_image(), reason="needs qemu and the tiny VM image (kumo vm-images build)")
def test_a_vm_reaches_neither_kumo_nor_the_host_nor_another_vnet(world: World) -> None:
    """One tiny VM in VNet A's second subnet runs the same probe through run-command (the guest agent)."""
    server, vm_api = world.server, {"api-version": "2024-07-01"}
    base = f"/subscriptions/{server.identity['subscription_id']}/resourceGroups/{world.rg}/providers"
    nic = put_and_wait(server, f"{base}/Microsoft.Network/networkInterfaces/vmnic", {
        "location": "local", "properties": {"ipConfigurations": [{"name": "ip", "properties": {
            "subnet": {"id": world.vm_subnet}}}]}})
    vm = f"{base}/Microsoft.Compute/virtualMachines/prober"
    with tempfile.TemporaryDirectory() as keys, server.http() as c:
        from tests.vmlib import new_ssh_key

        pub = new_ssh_key(Path(keys)).with_suffix(".pub").read_text().strip()
        r = c.put(vm, params=vm_api, json={"location": "local", "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {"imageReference": {"publisher": "kumo", "offer": "tiny", "sku": "1",
                                                  "version": "latest"}},
            "osProfile": {"computerName": "prober", "adminUsername": "azureuser", "linuxConfiguration": {
                "disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                    {"path": "/home/azureuser/.ssh/authorized_keys", "keyData": pub}]}}},
            "networkProfile": {"networkInterfaces": [{"id": nic["id"]}]}}})
        assert r.status_code in (200, 201), r.text
        deadline = time.monotonic() + 600
        while (state := c.get(vm, params=vm_api).json()["properties"]["provisioningState"]) not in (
                "Succeeded", "Failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert state == "Succeeded"
        targets = [t for t in world.targets() if not t.startswith("127.")]  # loopback is the guest's own
        r = c.post(f"{vm}/runCommand", params=vm_api, json={"commandId": "RunShellScript", "script": [
            f"export TARGETS='{' '.join(targets)}'", PROBE_SCRIPT]})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 300
        while (res := c.get(r.headers["location"])).status_code == 202:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        out = res.json()["value"][0]["message"]
        c.delete(vm, params=vm_api)
    probes = _probes(out)
    assert set(probes) == set(targets), out
    for target, (opened, said) in probes.items():
        if int(target.rsplit(":", 1)[1]) in (server.port, world.listener_port):
            assert not opened and world.listener_token not in said, (target, said)
    assert world.tokens["webb"] not in probes[f"{world.web_b}:8080"][1], out
    assert world.tokens["weba"] in probes[f"{world.web_a}:8080"][1], out  # its own VNet, across subnets
    assert world.tokens["public"] in probes[f"{world.public_ip}:8080"][1], out
