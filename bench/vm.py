"""Virtual machine speed with and without kumo's golden-snapshot path: PUT → SSH, memory, a burst.

PUT → SSH answering, memory per idle guest, and a burst of VMs created at once, for the tiny image and
Debian 12, in one run.

Two kumos run side by side (temporary data dirs, free ports, root needed): one as it ships (the snapshot
path on: the first VM of a shape boots cold and is saved as a "golden", later ones are restored from it) and
one with KUMO_VM_SNAPSHOTS=0 in its environment (every VM cold-boots). Their samples are interleaved
(snapshot, cold, snapshot, cold …) so load from elsewhere on the host hits both alike.

1. PUT → SSH: VMs created over ARM's REST API (an SSH key, one NIC with a public IP per kumo, reused),
   timed from just before the PUT to the first successful `ssh azureuser@<public IP> true` (a TCP probe
   for the SSH banner every 50 ms first, then ssh); also PUT → provisioningState Succeeded (polled every
   0.25 s in a thread: what `az vm create` waits for), kumo's own `bootSeconds`, and one more `ssh … true`
   once the guest answers ("ssh alone": what the handshake itself costs in the guest). The instance view's
   `kumo.bootPath` says which path served. The first VM of each image on each kumo is reported apart ("golden made" on
   the snapshot kumo, "first cold boot" on the other) and the p50/min/max are of the next N. Each VM is
   deleted (and gone) before the next sample, so only one guest runs at a time.
2. Memory per idle guest: for the last sample of each series, RSS (anon/file) and PSS (smaps_rollup) of the
   VM's QEMU process after it has been idle a while.
3. Burst: N tiny VMs PUT at once (threads), on the snapshot kumo then on the cold one: wall time from the
   first PUT to all answering SSH, the per-VM p50 (min–max), and the mean RSS/PSS of their QEMUs once
   idle. kumo's default vCPU overcommit (4 × cores) is raised for both kumos when the burst needs it.

Progress goes to stderr, the table to stdout. Everything (VMs, kumos, data dirs, namespaces) is removed at
the end. About 16 minutes on 2 cores under TCG. Usage: .venv/bin/python bench/vm.py [--samples 5]
[--images tiny debian] [--debian-size Standard_B1s] [--burst 10] [--skip-burst] [--idle 10]"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kumo.controllers.network import short_hash  # noqa: E402
from tests.conftest import KumoServer, free_port, public_pool  # noqa: E402
from tests.vmlib import qemu_pids  # noqa: E402

COMPUTE = {"api-version": "2024-11-01"}
NETWORK = {"api-version": "2024-05-01"}
RG_API = {"api-version": "2024-11-01"}
IMAGES: dict[str, dict[str, str]] = {
    "tiny": {"publisher": "kumo", "offer": "tiny", "sku": "1", "version": "latest"},
    "debian": {"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest"},
}
TIMEOUTS = {"tiny": 180.0, "debian": 1500.0}  # a cold Debian boot with cloud-init under TCG on a busy host
ADMIN = "azureuser"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
SERVERS = ("snapshot", "cold")
MIB = 1024  # KiB in a MiB: /proc reports KiB


def say(msg: str) -> None:
    print(f"[vm] {msg}", file=sys.stderr, flush=True)


# -- a kumo with an environment of its own ------------------------------------------------------------------
@dataclasses.dataclass
class BenchServer(KumoServer):
    """KumoServer whose `kumo up` (and so the server it detaches) gets `extra_env` on top of ours."""

    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}

    def run_info(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "run.json").read_text()))


def start_bench_server(label: str, env: dict[str, str]) -> BenchServer:
    data_dir = Path(tempfile.mkdtemp(prefix=f"kumo-bench-vm-{label}-"))
    server = BenchServer(data_dir, free_port(), ("--public-ip-pool", public_pool()), extra_env=env)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return server


# -- measurements of one guest ------------------------------------------------------------------------------
def ssh_banner(host: str, timeout: float = 0.5) -> bool:
    """Does something on host:22 greet with an SSH banner (the guest's sshd, not a half-set-up path)?"""
    try:
        with socket.create_connection((host, 22), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def ssh_true(key: Path, host: str) -> tuple[bool, str]:
    try:
        r = subprocess.run(["ssh", *SSH_OPTS, "-i", str(key), f"{ADMIN}@{host}", "true"], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, "ssh timed out"
    return r.returncode == 0, r.stderr.strip()


def proc_kib(pid: int, field: str, name: str = "status") -> int:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@dataclasses.dataclass
class Memory:
    rss: int  # KiB
    anon: int
    file: int
    shmem: int
    pss: int

    @staticmethod
    def of(pid: int) -> Memory:
        return Memory(rss=proc_kib(pid, "VmRSS"), anon=proc_kib(pid, "RssAnon"), file=proc_kib(pid, "RssFile"),
                      shmem=proc_kib(pid, "RssShmem"), pss=proc_kib(pid, "Pss", "smaps_rollup"))

    @staticmethod
    def mean(items: list[Memory]) -> Memory:
        n = max(1, len(items))
        return Memory(*(sum(getattr(m, f.name) for m in items) // n for f in dataclasses.fields(Memory)))


@dataclasses.dataclass
class Sample:
    server: str
    image: str
    seconds: float | None = None  # PUT → ssh true; None: failed
    boot_path: str | None = None
    boot_seconds: float | None = None  # kumo's own instance-view figure
    put_seconds: float | None = None  # the PUT's answer
    succeeded: float | None = None  # PUT → provisioningState Succeeded (what `az vm create` waits for)
    ssh_alone: float | None = None  # one more `ssh … true` once the guest answers: the handshake's own cost
    started: float = 0.0  # perf_counter just before the PUT
    memory: Memory | None = None
    error: str | None = None


class Poller:
    """GETs a VM every 0.25 s in a thread of its own (its own client): when provisioningState turned
    Succeeded, or the VM failed."""

    def __init__(self, client: httpx.Client, path: str) -> None:
        self.client = client
        self.path = path
        self.succeeded: float | None = None
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, t0: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(t0,), daemon=True)
        self._thread.start()

    def _run(self, t0: float) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                got = self.client.get(self.path, params=COMPUTE)
                state = got.json()["properties"].get("provisioningState") if got.status_code == 200 else None
                if state == "Succeeded":
                    self.succeeded = time.perf_counter() - t0
                    return
                if state == "Failed":
                    self.failed = json.dumps(got.json()["properties"].get("instanceView") or got.json())[:300]
                    return
            self._stop.wait(0.25)

    def wait(self, timeout: float) -> float:
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
        if self.failed:
            raise RuntimeError(f"VM failed: {self.failed}")
        if self.succeeded is None:
            raise TimeoutError(f"{self.path} did not reach provisioningState Succeeded")
        return self.succeeded

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.client.close()


# -- one kumo, driven over REST -----------------------------------------------------------------------------
class Kumo:
    """VMs in one resource group of one of the benchmark's kumos: a VNet, NICs with public IPs made once
    (NIC 0 for the one-at-a-time samples, the others for the burst), VMs created and deleted over REST."""

    def __init__(self, label: str, server: BenchServer, key: Path) -> None:
        self.label = label
        self.server = server
        self.key = key
        self.c = server.http()
        self.c.timeout = 120
        sub = server.identity["subscription_id"]
        self.rg = f"/subscriptions/{sub}/resourceGroups/benchvm"
        self.net = f"{self.rg}/providers/Microsoft.Network"
        self.nics: list[tuple[str, str]] = []  # (NIC id, public IP)
        self.live: set[str] = set()
        self.site = int(server.run_info()["network_site"])
        self.token = server.token()
        self.c.put(self.rg, params=RG_API, json={"location": "local"}).raise_for_status()
        vnet = self._put_wait(f"{self.net}/virtualNetworks/vnet", {"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "10.1.0.0/24"}}]}})
        self.subnet = vnet["properties"]["subnets"][0]["id"]

    def _put_wait(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.c.put(path, params=NETWORK, json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"PUT {path}: {r.status_code} {r.text}")
        for _ in range(3000):
            got: dict[str, Any] = self.c.get(path, params=NETWORK).json()
            state = got["properties"].get("provisioningState")
            if state == "Succeeded":
                return got
            if state == "Failed":
                raise RuntimeError(f"{path} failed: {got}")
            time.sleep(0.02)
        raise TimeoutError(f"{path} did not succeed")

    def ensure_nics(self, n: int) -> None:
        while len(self.nics) < n:
            i = len(self.nics)
            pip = self._put_wait(f"{self.net}/publicIPAddresses/pip{i}", {
                "location": "local", "sku": {"name": "Standard"},
                "properties": {"publicIPAllocationMethod": "Static"}})
            nic = self._put_wait(f"{self.net}/networkInterfaces/nic{i}", {"location": "local", "properties": {
                "ipConfigurations": [{"name": "ipconfig1", "properties": {
                    "subnet": {"id": self.subnet}, "publicIPAddress": {"id": pip["id"]}}}]}})
            self.nics.append((nic["id"], pip["properties"]["ipAddress"]))

    def vm_path(self, name: str) -> str:
        return f"{self.rg}/providers/Microsoft.Compute/virtualMachines/{name}"

    def body(self, image: str, size: str, nic: str, name: str) -> dict[str, Any]:
        return {"location": "local", "properties": {
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {"imageReference": IMAGES[image], "osDisk": {
                "createOption": "FromImage", "deleteOption": "Delete",
                "managedDisk": {"storageAccountType": "Premium_LRS"}}},
            "osProfile": {"computerName": name, "adminUsername": ADMIN, "linuxConfiguration": {
                "disablePasswordAuthentication": True,
                "ssh": {"publicKeys": [{"path": f"/home/{ADMIN}/.ssh/authorized_keys",
                                        "keyData": self.key.with_suffix(".pub").read_text().strip()}]}}},
            "networkProfile": {"networkInterfaces": [{"id": nic, "properties": {"primary": True}}]}}}

    def create(self, client: httpx.Client, name: str, image: str, size: str, nic: int, idle: float | None) -> Sample:
        """PUT a VM and wait for SSH; its boot path, kumo's boot seconds and (with `idle`) its memory."""
        sample = Sample(self.label, image)
        path = self.vm_path(name)
        nic_id, ip = self.nics[nic]
        body = self.body(image, size, nic_id, name)
        self.live.add(path)
        poller = Poller(self.server.http(self.token), path)  # made before the clock starts
        t0 = sample.started = time.perf_counter()
        try:
            r = client.put(path, params=COMPUTE, json=body)
            sample.put_seconds = time.perf_counter() - t0
            if r.status_code not in (200, 201):
                raise RuntimeError(f"PUT {name}: {r.status_code} {r.text}")
            vm_id = r.json()["id"]
            poller.start(t0)
            sample.seconds = self._wait_ssh(poller, ip, t0, TIMEOUTS[image])
            sample.ssh_alone = self._ssh_alone(ip)
            sample.succeeded = poller.wait(TIMEOUTS[image] - (time.perf_counter() - t0))
            view = self._instance_view(client, path)  # complete once provisioning is over
            sample.boot_path = view.get("bootPath")
            sample.boot_seconds = view.get("bootSeconds")
            if idle is not None:
                time.sleep(idle)
                pids = qemu_pids(f"kumo{self.site}v-{short_hash(vm_id)}")
                if len(pids) == 1:
                    sample.memory = Memory.of(pids[0])
                else:
                    say(f"{self.label} {name}: {len(pids)} QEMU processes found, no memory figure")
        except Exception as e:  # noqa: BLE001 - one failed sample is reported, the run goes on
            sample.seconds = None
            sample.error = str(e)[:300]
            say(f"{self.label} {name}: FAILED: {sample.error}")
        finally:
            poller.close()
        return sample

    def _wait_ssh(self, poller: Poller, ip: str, t0: float, timeout: float) -> float:
        """Seconds from `t0` to the first `ssh … true` (a TCP probe for the SSH banner every 50 ms first)."""
        err = ""
        while True:
            if ssh_banner(ip):
                ok, err = ssh_true(self.key, ip)
                if ok:
                    return time.perf_counter() - t0
            if poller.failed:
                raise RuntimeError(f"VM failed: {poller.failed}")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"no SSH to {ip} within {timeout:.0f} s ({err})")
            time.sleep(0.05)

    def _ssh_alone(self, ip: str) -> float | None:
        """One more `ssh … true` to the guest now that it answers: what the handshake itself costs."""
        t = time.perf_counter()
        ok, _ = ssh_true(self.key, ip)
        return time.perf_counter() - t if ok else None

    def _instance_view(self, client: httpx.Client, path: str) -> dict[str, Any]:
        r = client.get(f"{path}/instanceView", params=COMPUTE)
        r.raise_for_status()
        view = r.json()
        kumo = dict(view.get("kumo") or {})
        kumo.setdefault("statuses", [s.get("code") for s in view.get("statuses", [])])
        return kumo

    def delete(self, client: httpx.Client, name: str, timeout: float = 300) -> None:
        path = self.vm_path(name)
        t0 = time.perf_counter()
        r = client.delete(path, params=COMPUTE)
        if r.status_code not in (200, 202, 204):
            raise RuntimeError(f"DELETE {name}: {r.status_code} {r.text}")
        while client.get(path, params=COMPUTE).status_code != 404:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{name} was not deleted within {timeout:.0f} s")
            time.sleep(0.1)
        self.live.discard(path)

    def close(self) -> bool:
        """Delete what is left, then the resource group; True when it all went."""
        try:
            for path in sorted(self.live):
                with contextlib.suppress(Exception):
                    self.delete(self.c, path.rsplit("/", 1)[1])
            r = self.c.delete(self.rg, params=RG_API)
            if r.status_code in (200, 202):
                for _ in range(1200):
                    if self.c.get(self.rg, params=RG_API).status_code == 404:
                        return True
                    time.sleep(0.25)
                return False
            return r.status_code in (204, 404)
        finally:
            self.c.close()


def stop_kumo(server: BenchServer, clean: bool) -> None:
    site = server.run_info().get("network_site") if (server.data_dir / "run.json").exists() else None
    with contextlib.suppress(Exception):
        server.stop()
    if not clean:
        say(f"VMs could not all be deleted: keeping {server.data_dir}")
        return
    shutil.rmtree(server.data_dir, ignore_errors=True)
    if site is not None:
        left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(f"kumo{site}-") or n.startswith(f"kumo{site}g")]
        if left:
            say(f"note: namespaces of kumo site {site} left after all VMs were deleted: {left}")
        if qemu_pids(f"kumo{site}v-"):
            say(f"note: QEMU processes of kumo site {site} are still running")


# -- 1 and 2: one VM at a time, interleaved ------------------------------------------------------------------
def series(kumos: dict[str, Kumo], image: str, size: str, n: int, idle: float | None) -> dict[str, list[Sample]]:
    """n + 1 VMs per kumo, one at a time, alternating kumos; memory on the last of each."""
    out: dict[str, list[Sample]] = {label: [] for label in kumos}
    for i in range(n + 1):
        for label, kumo in kumos.items():
            name = f"{image}{i}"
            s = kumo.create(kumo.c, name, image, size, 0, idle if i == n else None)
            out[label].append(s)
            took = f"{s.seconds:.2f} s" if s.seconds is not None else "failed"
            mem = f", QEMU RSS {s.memory.rss / MIB:.0f} MiB PSS {s.memory.pss / MIB:.0f} MiB" if s.memory else ""
            say(f"{image} {label} {i}/{n}: PUT → SSH {took} (ssh alone {fmt(s.ssh_alone)}), → Succeeded "
                f"{fmt(s.succeeded)}, bootPath {s.boot_path}, "
                f"kumo bootSeconds {s.boot_seconds}{mem}")
            try:
                kumo.delete(kumo.c, name)
            except Exception as e:  # noqa: BLE001
                say(f"{image} {label} {i}: delete failed: {e}")
    return out


# -- 3: a burst ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Burst:
    server: str
    samples: list[Sample]
    wall: float | None  # first PUT → the last VM answering SSH
    memory: Memory | None  # mean over the VMs, once idle


def burst(kumo: Kumo, n: int, idle: float) -> Burst:
    kumo.ensure_nics(n + 1)
    clients = [kumo.server.http(kumo.token) for _ in range(n)]
    for c in clients:
        c.timeout = 300
    names = [f"burst{i}" for i in range(n)]
    try:
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(kumo.create, clients[i], names[i], "tiny", "Standard_B1s", i + 1, None)
                       for i in range(n)]
            samples = [f.result() for f in futures]
        ends = [s.started + s.seconds for s in samples if s.seconds is not None]
        wall = max(ends) - min(s.started for s in samples) if len(ends) == n else None
        time.sleep(idle)
        mems = []
        for i, c in enumerate(clients):
            with contextlib.suppress(Exception):
                r = c.get(kumo.vm_path(names[i]), params=COMPUTE)
                pids = qemu_pids(f"kumo{kumo.site}v-{short_hash(r.json()['id'])}")
                if len(pids) == 1:
                    mems.append(Memory.of(pids[0]))
        result = Burst(kumo.label, samples, wall, Memory.mean(mems) if mems and len(mems) == len(ends) else None)
        say(f"burst {kumo.label}: deleting {n} VMs")

        def delete(i: int) -> None:
            try:
                kumo.delete(clients[i], names[i])
            except Exception as e:  # noqa: BLE001 - close() tries again with the resource group
                say(f"burst {kumo.label}: deleting {names[i]} failed: {e}")
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(delete, range(n)))
    finally:
        for c in clients:
            c.close()
    return result


# -- the table -----------------------------------------------------------------------------------------------
def fmt(v: float | None, unit: str = "s") -> str:
    return "—" if v is None else f"{v:.2f} {unit}" if unit else f"{v:.2f}"


def paths_of(samples: list[Sample]) -> str:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.boot_path or "?"] = counts.get(s.boot_path or "?", 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def med(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def table(results: dict[str, dict[str, list[Sample]]], sizes: dict[str, str], bursts: list[Burst], n: int,
          idle: float, env: dict[str, str], goldens_mib: float | None) -> None:
    out = print
    if results:
        out(f"PUT → first `ssh {ADMIN}@<public IP> true`, one VM at a time, snapshot/cold kumos interleaved; "
            f"p50/min/max of {n} after the first VM of each kumo; →Succeeded, kumo boot, ssh alone: p50")
        out(f"{'image (size)':<22} {'kumo':<9} {'first VM':>25} {'p50':>8} {'min':>8} {'max':>8} "
            f"{'→Succeeded':>10} {'kumo boot':>9} {'ssh alone':>9}  bootPath of the {n}")
        for image, per in results.items():
            for label in SERVERS:
                if label not in per:
                    continue
                first, rest = per[label][0], per[label][1:]
                ok = [s.seconds for s in rest if s.seconds is not None]
                kind = "golden made" if label == "snapshot" and first.boot_path == "snapshot" else "first cold boot"
                head = f"{fmt(first.seconds)} ({kind})" if first.seconds is not None else "failed"
                failed = len(rest) - len(ok)
                out(f"{f'{image} ({sizes[image]})':<22} {label:<9} {head:>25} {fmt(med(ok)):>8} "
                    f"{fmt(min(ok) if ok else None):>8} {fmt(max(ok) if ok else None):>8} "
                    f"{fmt(med([s.succeeded for s in rest])):>10} {fmt(med([s.boot_seconds for s in rest])):>9} "
                    f"{fmt(med([s.ssh_alone for s in rest])):>9}  {paths_of(rest)}"
                    f"{f'; {failed} FAILED: {next(s.error for s in rest if s.error)}' if failed else ''}")
            snap = med([s.seconds for s in per.get("snapshot", [])[1:]])
            cold = med([s.seconds for s in per.get("cold", [])[1:]])
            if snap and cold:
                served = all(s.boot_path == "snapshot" for s in per["snapshot"][1:])
                note = "" if served else "  (the snapshot path did not serve (all): see bootPath)"
                out(f"{f'{image} ({sizes[image]})':<22} {'ratio':<9} {'snapshot / cold p50':>25} "
                    f"{snap / cold:>8.3f}{note}")
        out("")
        out(f"Memory of the VM's QEMU process after {idle:.0f} s idle (last sample of each series), MiB")
        out(f"{'image':<8} {'kumo':<9} {'bootPath':<9} {'RSS':>7} {'anon':>7} {'file':>7} {'shmem':>7} {'PSS':>7}")
        for image, per in results.items():
            for label in SERVERS:
                s = per[label][-1] if per.get(label) else None
                if s is None or s.memory is None:
                    out(f"{image:<8} {label:<9} {'—':<9} (no figure{': ' + s.error if s and s.error else ''})")
                    continue
                m = s.memory
                out(f"{image:<8} {label:<9} {s.boot_path or '?':<9} {m.rss / MIB:>7.0f} {m.anon / MIB:>7.0f} "
                    f"{m.file / MIB:>7.0f} {m.shmem / MIB:>7.0f} {m.pss / MIB:>7.0f}")
        if goldens_mib is not None:
            out(f"golden snapshots on disk (the snapshot kumo's vm-goldens/): {goldens_mib:.0f} MiB")
        out("")
    if bursts:
        out(f"Burst: {len(bursts[0].samples)} tiny VMs (Standard_B1s) PUT at once, each on its own NIC + public IP; "
            f"per VM: p50 (min–max); memory: mean per VM after {idle:.0f} s idle")
        out(f"{'kumo':<9} {'first PUT → all SSH':>20} {'PUT → SSH':>23} {'→Succeeded':>10} {'kumo boot':>9} "
            f"{'ssh alone':>9} {'RSS MiB':>7} {'PSS MiB':>7}  bootPath")
    for b in bursts:
        m = b.memory
        secs = [s.seconds for s in b.samples if s.seconds is not None]
        failed = [s.error or "" for s in b.samples if s.seconds is None]
        per_vm = f"{fmt(med(secs))} ({min(secs):.2f}–{max(secs):.2f})" if secs else "—"
        out(f"{b.server:<9} {fmt(b.wall):>20} {per_vm:>23} {fmt(med([s.succeeded for s in b.samples])):>10} "
            f"{fmt(med([s.boot_seconds for s in b.samples])):>9} {fmt(med([s.ssh_alone for s in b.samples])):>9} "
            f"{f'{m.rss / MIB:.0f}' if m else '—':>7} {f'{m.pss / MIB:.0f}' if m else '—':>7}  "
            f"{paths_of(b.samples)}{f'; {len(failed)} FAILED: {failed[0][:120]}' if failed else ''}")
    walls = [b.wall for b in bursts if b.wall]
    if len(walls) == 2:
        out(f"{'ratio':<9} {walls[0] / walls[1]:>20.3f}  (snapshot / cold, wall)")
    if bursts:
        out("")
    info = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(),
            "memory": f"{meminfo_kib('MemTotal') / MIB / 1024:.1f} GiB", **env}
    out(" ".join(f"{k}={v}" for k, v in info.items()))


def meminfo_kib(field: str) -> int:
    return next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith(field + ":"))


@contextlib.contextmanager
def ssh_key() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kumo-bench-vmkey-"))
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kumo-bench", "-f", str(d / "id")],
                       check=True)
        yield d / "id"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def du_mib(path: Path) -> float | None:
    if not path.exists():
        return None
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) / MIB if out else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5, help="timed VMs per image and kumo (after a first one)")
    ap.add_argument("--images", nargs="*", default=["tiny", "debian"], choices=sorted(IMAGES),
                    help="images for steps 1 and 2 (`--images` alone: the burst only)")
    ap.add_argument("--debian-size", default="Standard_B1s", choices=["Standard_B1s", "Standard_B2s"])
    ap.add_argument("--burst", type=int, default=10, help="tiny VMs created at once on each kumo")
    ap.add_argument("--skip-burst", action="store_true")
    ap.add_argument("--idle", type=float, default=10, help="seconds a guest idles before its memory is read")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/vm.py needs root (kumo's VMs: network namespaces, taps, nftables)")
    for tool in ("qemu-system-x86_64", "ssh", "ssh-keygen", "nft"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/vm.py needs {tool}")
    sizes = {"tiny": "Standard_B1s", "debian": args.debian_size}
    cores = os.cpu_count() or 1
    common: dict[str, str] = {}
    if not args.skip_burst and args.burst > 4 * cores:  # kumo's default vCPU overcommit: 4 × cores
        common["KUMO_VM_OVERCOMMIT"] = str(math.ceil(args.burst / cores))
    envs = {"snapshot": {**common, "KUMO_VM_SNAPSHOTS": "1"}, "cold": {**common, "KUMO_VM_SNAPSHOTS": "0"}}
    results: dict[str, dict[str, list[Sample]]] = {}
    bursts: list[Burst] = []
    load0 = os.getloadavg()
    servers: dict[str, BenchServer] = {}
    kumos: dict[str, Kumo] = {}
    goldens_mib = None
    accel = "?"
    with ssh_key() as key:
        try:
            for label in SERVERS:
                say(f"starting the {label} kumo ({' '.join(f'{k}={v}' for k, v in envs[label].items())})")
                servers[label] = start_bench_server(label, envs[label])
            for label, server in servers.items():
                info = server.run_info()
                if info.get("vms_unavailable"):
                    sys.exit(f"kumo cannot run VMs here: {info['vms_unavailable']}")
                accel = str(info.get("vm_accelerator"))
                kumos[label] = Kumo(label, server, key)
                kumos[label].ensure_nics(1)
            for image in args.images:
                say(f"{image}: {args.samples} + 1 VMs on each kumo, interleaved")
                results[image] = series(kumos, image, sizes[image], args.samples, args.idle)
            goldens_mib = du_mib(servers["snapshot"].data_dir / "vm-goldens")
            if not args.skip_burst:
                if "tiny" not in args.images:  # the golden of the burst's shape first, untimed
                    say("burst: one tiny VM on each kumo first (the snapshot kumo's golden)")
                    series(kumos, "tiny", "Standard_B1s", 0, None)
                for label in SERVERS:
                    say(f"burst: {args.burst} tiny VMs at once on the {label} kumo")
                    bursts.append(burst(kumos[label], args.burst, args.idle))
                    b = bursts[-1]
                    say(f"burst {label}: all answered SSH after {fmt(b.wall)}, per VM p50 "
                        f"{fmt(med([s.seconds for s in b.samples]))}; "
                        f"{sum(s.seconds is None for s in b.samples)} failed")
        finally:
            say("cleaning up")
            for label, server in servers.items():
                clean = True
                if label in kumos:
                    try:
                        clean = kumos[label].close()
                    except Exception as e:  # noqa: BLE001 - report and keep the data dir rather than orphan VMs
                        say(f"could not delete every VM of the {label} kumo: {e}")
                        clean = False
                stop_kumo(server, clean)
    load1 = os.getloadavg()
    env = {"accelerator": accel, "kernel": platform.release(),
           "load": f"{load0[0]:.2f}→{load1[0]:.2f}", **common}
    table(results, sizes, bursts, args.samples, args.idle, env, goldens_mib)


if __name__ == "__main__":
    main()
