"""The crash harness: a seeded random mix of ARM operations by a few concurrent workers while kumo is
`kill -9`ed and restarted again and again, then the checks that nothing was lost, nothing is stuck and
nothing is left on the host that no resource explains.

Used by `bench/crash.py` (full-scale runs, a summary table) and `tests/e2e/test_crash.py` (a bounded run).

The model: every resource a worker touches has a fresh name and belongs to that worker alone, so the
requests on one resource are sequential and its *intended* state (exists with these tags / deleted) is
simply what its last accepted (2xx) request said. A request that got no answer (kumo was killed) is sent
again until it is answered (PUT, PATCH and DELETE are idempotent); if the answer to the retry is a
refusal, the first attempt's fate is unknown and the resource is marked `uncertain` (either outcome
passes). Host objects are found the way kumo names them (`docs/networking.md`, the drivers' docstrings):
every name carries `short_hash(resource key)`, so the census maps each object to a resource or calls it
an orphan."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import KumoServer

API = {"api-version": "2024-11-01"}
ACI_API = {"api-version": "2024-05-01-preview"}
NET_API = {"api-version": "2024-05-01"}
TERMINAL = {"Succeeded", "Failed", "Canceled"}
TINY = {"publisher": "kumo", "offer": "tiny", "sku": "1", "version": "latest"}
INSTANCE_NET_KEY = "kumo:instance-net"  # controllers/network.py: kumo's own network for public groups
CGROUP_CONTROLLERS = ("memory", "cpu", "pids")


def short_hash(key: str) -> str:
    """The hash every host object name carries (controllers/network.short_hash)."""
    return hashlib.sha1(key.lower().encode()).hexdigest()[:10]


# ---- host-object census ----------------------------------------------------------------------------

@dataclass(frozen=True)
class HostObject:
    kind: str  # netns, link, qemu, conmon, runc, bundle, mount, cgroup, nft, public-ip, vm-dir, group-dir, disk
    name: str
    owner: str | None  # the short hash (or public IP) of the resource it belongs to; None: unattributable
    pid: int | None = None


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


def _processes() -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
            except OSError:
                continue
    return out


def census(data_dir: Path, site: int, public_pool: str | None) -> list[HostObject]:
    """Every host object of the kumo with this data dir and network site."""
    objs: list[HostObject] = []
    h10 = "([0-9a-f]{10})"
    # network namespaces and links (the host's, and those inside each VNet namespace)
    namespaces = _run("ip", "netns", "list").split()
    for ns in namespaces:
        if m := re.fullmatch(rf"kumo{site}-[ve]{h10}", ns):
            objs.append(HostObject("netns", ns, m.group(1)))
    for link in json.loads(_run("ip", "-j", "link", "show") or "[]"):
        if m := re.fullmatch(rf"k{site}h{h10}", link["ifname"]):
            objs.append(HostObject("link", link["ifname"], m.group(1)))
    for ns in namespaces:
        if re.fullmatch(rf"kumo{site}-v{h10}", ns):
            for link in json.loads(_run("ip", "-n", ns, "-j", "link", "show") or "[]"):
                if m := re.fullmatch(rf"[bet]{h10}", link["ifname"]):
                    objs.append(HostObject("link", f"{ns}/{link['ifname']}", m.group(1)))
    # processes: QEMU (id kumo<site>v-<hash>) and conmon (container id kumo<site>-<hash>-<spec>-<name>)
    marker = str(data_dir)
    for pid, cmd in _processes():
        if marker not in cmd:
            continue
        if "qemu-system" in cmd and (m := re.search(rf"guest=kumo{site}v-{h10}", cmd)):
            objs.append(HostObject("qemu", f"kumo{site}v-{m.group(1)}", m.group(1), pid))
        elif "conmon" in cmd.split(" ", 1)[0] and (m := re.search(rf"-c (kumo{site}-{h10}-\S+)", cmd)):
            objs.append(HostObject("conmon", m.group(1), m.group(2), pid))
    runtime = data_dir / "containers" / "runtime"
    for kind, d in (("runc", runtime / "runc"), ("bundle", runtime / "c")):
        for e in (d.iterdir() if d.is_dir() else ()):
            m = re.match(rf"kumo{site}-{h10}-", e.name)
            objs.append(HostObject(kind, e.name, m.group(1) if m else None))
    # mounts under the data dir (container rootfs overlays, volumes)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(marker):
            m = re.search(rf"kumo{site}v?-{h10}|/groups/{h10}", point)
            objs.append(HostObject("mount", point, (m.group(1) or m.group(2)) if m else None))
    for ctl in CGROUP_CONTROLLERS:
        base = Path(f"/sys/fs/cgroup/{ctl}/kumo{site}")
        for e in (base.iterdir() if base.is_dir() else ()):
            if e.is_dir():
                m = re.fullmatch(rf"g{h10}", e.name)
                objs.append(HostObject("cgroup", str(e), m.group(1) if m else None))
    # kumo's host nft table, and the public IPs its DNATs serve
    table = _run("nft", "list", "table", "ip", f"kumo_site{site}")
    if table:
        objs.append(HostObject("nft", f"kumo_site{site}", "table"))
        if public_pool:
            prefix = public_pool.rsplit(".", 1)[0].replace(".", r"\.")
            for ip in sorted(set(re.findall(rf"\b{prefix}\.\d+\b", table))):
                objs.append(HostObject("public-ip", ip, ip))
    for kind, d, pattern in (("vm-dir", data_dir / "vms", rf"kumo{site}v-{h10}"),
                             ("group-dir", data_dir / "containers" / "groups", h10),
                             ("disk", data_dir / "disks", rf"[a-z]+-{h10}\.qcow2")):
        for e in (d.iterdir() if d.is_dir() else ()):
            if kind == "vm-dir" and not e.name.startswith(f"kumo{site}v-"):
                continue  # the driver's own files (accel.json): not a VM's
            m = re.fullmatch(pattern, e.name)
            objs.append(HostObject(kind, e.name, m.group(1) if m else None))
    return objs


def running_pids(objs: list[HostObject]) -> dict[tuple[str, str], tuple[str, int]]:
    """(kind, object name) -> (owner hash, pid) of the QEMU and conmon processes in a census."""
    return {(o.kind, o.name): (o.owner or "", o.pid) for o in objs if o.pid is not None}


# ---- the model of what the API accepted ------------------------------------------------------------

@dataclass
class Res:
    kind: str  # group, cg, vm, vmss, vnet, nic
    path: str
    group: str  # resource group name
    worker: int
    api: dict[str, str]
    exists: bool = False  # intended
    tags: dict[str, str] = field(default_factory=dict)
    capacity: int | None = None
    uncertain: bool = False
    accepted: int = 0
    touched: float = 0.0  # monotonic time of the last request that may start, stop or replace processes
    lros: list[str] = field(default_factory=list)


@dataclass
class Stats:
    ops: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    retried: int = 0
    kills: int = 0
    restart_seconds: list[float] = field(default_factory=list)
    readopted: int = 0
    restarted: list[str] = field(default_factory=list)  # instances whose process changed across a kill


class Client:
    """One worker's HTTPS client: sends a request again until kumo answers (it may be down)."""

    def __init__(self, server: KumoServer, stats: Stats, deadline: float = 300) -> None:
        self.server, self.stats, self.deadline = server, stats, deadline
        self.http = self._connect()

    def _connect(self) -> httpx.Client:
        t0 = time.monotonic()
        while True:
            try:
                return self.server.http()
            except (httpx.HTTPError, AssertionError, OSError):
                if time.monotonic() - t0 > self.deadline:
                    raise
                time.sleep(0.3)

    def send(self, method: str, path: str, params: dict[str, str] | None = None,
             body: Any = None) -> tuple[httpx.Response, bool]:
        """The answer, and whether an earlier attempt went unanswered (its effect is unknown)."""
        t0, lost = time.monotonic(), False
        while True:
            try:
                r = self.http.request(method, path, params=params, json=body)
            except httpx.TransportError:
                lost = True
                if time.monotonic() - t0 > self.deadline:
                    raise
                time.sleep(0.3)
                continue
            if r.status_code == 401 and time.monotonic() - t0 < self.deadline:  # tokens outlive restarts: a net
                self.http.close()
                self.http = self._connect()
                continue
            if r.status_code >= 500:
                self.stats.server_errors.append(f"{method} {path}: {r.status_code} {r.text[:300]}")
            if lost:
                self.stats.retried += 1
            return r, lost

    def close(self) -> None:
        self.http.close()


def lro_urls(r: httpx.Response) -> list[str]:
    return [u for h in ("Azure-AsyncOperation", "Location") if (u := r.headers.get(h))]


# ---- workers --------------------------------------------------------------------------------------

@dataclass
class Plan:
    seed: int
    ops: int
    workers: int = 3
    with_vms: bool = True
    with_scale_sets: bool = True
    max_vms: int = 2  # live VMs at once (TCG on a shared 2-core host)
    max_scale_sets: int = 1
    max_groups: int = 3  # live container groups per worker
    ssh_public_key: str = ""


class Harness:
    def __init__(self, server: KumoServer, plan: Plan) -> None:
        self.server, self.plan = server, plan
        self.sub = f"/subscriptions/{server.identity['subscription_id']}"
        self.stats = Stats()
        self.resources: dict[str, Res] = {}  # lower-cased path -> model
        self.lock = threading.Lock()
        self.prefix = f"crash{plan.seed}"
        self.site = int((server.data_dir / "network-site").read_text()) if (
            server.data_dir / "network-site").exists() else None
        self.public_pool: str | None = json.loads((server.data_dir / "run.json").read_text()).get("public_ip_pool")
        self._names = Counter[str]()
        self.pace = 0.25
        self._pending: list[tuple[float, dict[tuple[str, str], tuple[str, int]]]] = []  # (capture time, pids)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _more(self) -> bool:
        with self.lock:
            return sum(self.stats.ops.values()) < self.plan.ops

    def _name(self, kind: str, worker: int) -> str:
        with self.lock:
            self._names[kind] += 1
            return f"{kind}{worker}x{self._names[kind]}"

    def _model(self, kind: str, path: str, group: str, worker: int, api: dict[str, str]) -> Res:
        with self.lock:
            return self.resources.setdefault(path.lower(), Res(kind, path, group, worker, api))

    def live(self, kind: str, worker: int | None = None) -> list[Res]:
        with self.lock:
            return [r for r in self.resources.values() if r.kind == kind and r.exists and not r.uncertain
                    and (worker is None or r.worker == worker)]

    def _record(self, op: str, res: Res, r: httpx.Response, lost: bool, *, exists: bool,
                tags: dict[str, str] | None = None, capacity: int | None = None, touch: bool = False) -> bool:
        """Apply an answered request to the model; True when it was accepted."""
        self.stats.ops[op] += 1
        ok = 200 <= r.status_code < 300 or (not exists and lost and r.status_code == 404)
        with self.lock:
            if touch:
                res.touched = time.monotonic()
            if not ok:
                self.stats.refused[f"{op} {r.status_code} {_code(r)}"] += 1
                if lost:
                    res.uncertain = True  # the unanswered attempt may have been applied
                return False
            self.stats.accepted[op] += 1
            res.accepted += 1
            res.uncertain = False
            res.exists = exists
            if tags is not None:
                res.tags = tags
            if capacity is not None:
                res.capacity = capacity
            res.lros += lro_urls(r)
            if not exists and res.kind == "group":  # a group's delete takes everything in it
                for other in self.resources.values():
                    if other.group == res.group and other is not res:
                        other.exists, other.touched = False, time.monotonic()
        return True

    # -- operations ---------------------------------------------------------------------------------
    def rg_path(self, name: str) -> str:
        return f"{self.sub}/resourcegroups/{name}"

    def op_group_create(self, c: Client, w: int, rnd: random.Random) -> None:
        name = f"{self.prefix}-{self._name('g', w)}"
        res = self._model("group", self.rg_path(name), name, w, API)
        tags = {"n": str(rnd.randrange(1000))}
        r, lost = c.send("PUT", res.path, API, {"location": "local", "tags": tags})
        self._record("group.create", res, r, lost, exists=True, tags=tags)

    def op_update(self, c: Client, w: int, rnd: random.Random, kind: str) -> None:
        targets = self.live(kind, w)
        if not targets:
            return
        res = rnd.choice(targets)
        tags = {"n": str(rnd.randrange(1000)), "kind": kind}
        r, lost = c.send("PATCH", res.path, res.api, {"tags": tags})
        self._record(f"{kind}.update", res, r, lost, exists=True, tags=tags)

    def op_delete(self, c: Client, w: int, rnd: random.Random, kind: str) -> None:
        targets = self.live(kind, w)
        if not targets:
            return
        res = rnd.choice(targets)
        with self.lock:
            res.touched = time.monotonic()
        r, lost = c.send("DELETE", res.path, res.api)
        self._record(f"{kind}.delete", res, r, lost, exists=False, touch=True)

    def _live_group(self, w: int, rnd: random.Random) -> str | None:
        groups = self.live("group", w)
        return rnd.choice(groups).group if groups else None

    def op_cg_create(self, c: Client, w: int, rnd: random.Random) -> None:
        group = self._live_group(w, rnd)
        if group is None or len(self.live("cg", w)) >= self.plan.max_groups:
            return
        path = f"{self.rg_path(group)}/providers/Microsoft.ContainerInstance/containerGroups/{self._name('cg', w)}"
        res = self._model("cg", path, group, w, ACI_API)
        tags = {"n": str(rnd.randrange(1000))}
        props: dict[str, Any] = {"osType": "Linux", "restartPolicy": "Always", "containers": [{
            "name": "web", "properties": {"image": "nginx", "ports": [{"port": 80, "protocol": "TCP"}],
                                          "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}}}}]}
        if rnd.random() < 0.5:
            props["ipAddress"] = {"type": "Public", "ports": [{"port": 80, "protocol": "TCP"}]}
        with self.lock:
            res.touched = time.monotonic()
        r, lost = c.send("PUT", path, ACI_API, {"location": "local", "tags": tags, "properties": props})
        self._record("cg.create", res, r, lost, exists=True, tags=tags, touch=True)

    def _network(self, c: Client, w: int, group: str, name: str) -> str | None:
        """A VNet and a subnet for a VM or scale set (PUT and waited for); the subnet's id."""
        vnet_path = f"{self.rg_path(group)}/providers/Microsoft.Network/virtualNetworks/{name}"
        vnet = self._model("vnet", vnet_path, group, w, NET_API)
        body = {"location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
                                                    "subnets": [{"name": "s", "properties": {
                                                        "addressPrefix": "10.1.0.0/24"}}]}}
        r, lost = c.send("PUT", vnet_path, NET_API, body)
        if not self._record("vnet.create", vnet, r, lost, exists=True, tags={}):
            return None
        if not self._wait_terminal(c, vnet_path, NET_API):
            return None
        return f"{vnet_path}/subnets/s"

    def _wait_terminal(self, c: Client, path: str, api: dict[str, str], timeout: float = 120) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            r, _ = c.send("GET", path, api)
            if r.status_code != 200:
                return False
            if r.json().get("properties", {}).get("provisioningState") in TERMINAL:
                return r.json()["properties"]["provisioningState"] == "Succeeded"
            time.sleep(0.3)
        return False

    def op_vm_create(self, c: Client, w: int, rnd: random.Random) -> None:
        group = self._live_group(w, rnd)
        if group is None or not self.plan.with_vms or len(self.live("vm")) >= self.plan.max_vms:
            return
        name = self._name("vm", w)
        subnet = self._network(c, w, group, f"{name}-net")
        if subnet is None:
            return
        nic_path = f"{self.rg_path(group)}/providers/Microsoft.Network/networkInterfaces/{name}-nic"
        nic = self._model("nic", nic_path, group, w, NET_API)
        r, lost = c.send("PUT", nic_path, NET_API, {"location": "local", "properties": {"ipConfigurations": [
            {"name": "ip", "properties": {"subnet": {"id": subnet}}}]}})
        if not self._record("nic.create", nic, r, lost, exists=True, tags={}) or \
                not self._wait_terminal(c, nic_path, NET_API):
            return
        path = f"{self.rg_path(group)}/providers/Microsoft.Compute/virtualMachines/{name}"
        res = self._model("vm", path, group, w, API)
        tags = {"n": str(rnd.randrange(1000))}
        body = {"location": "local", "tags": tags, "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {"imageReference": TINY,
                               "osDisk": {"createOption": "FromImage", "deleteOption": "Delete"}},
            "osProfile": {"computerName": name, "adminUsername": "azureuser", "linuxConfiguration": {
                "disablePasswordAuthentication": True, "ssh": {"publicKeys": [{
                    "path": "/home/azureuser/.ssh/authorized_keys", "keyData": self.plan.ssh_public_key}]}}},
            "networkProfile": {"networkInterfaces": [{"id": nic_path, "properties": {"primary": True}}]}}}
        with self.lock:
            res.touched = time.monotonic()
        r, lost = c.send("PUT", path, API, body)
        self._record("vm.create", res, r, lost, exists=True, tags=tags, touch=True)

    def op_vmss_create(self, c: Client, w: int, rnd: random.Random) -> None:
        group = self._live_group(w, rnd)
        if group is None or not self.plan.with_scale_sets or len(self.live("vmss")) >= self.plan.max_scale_sets:
            return
        name = self._name("ss", w)
        subnet = self._network(c, w, group, f"{name}-net")
        if subnet is None:
            return
        path = f"{self.rg_path(group)}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
        res = self._model("vmss", path, group, w, API)
        capacity, tags = rnd.randint(1, 2), {"n": str(rnd.randrange(1000))}
        body = {"location": "local", "tags": tags, "sku": {"name": "Standard_B1s", "capacity": capacity},
                "properties": {"orchestrationMode": "Uniform", "upgradePolicy": {"mode": "Manual"},
                               "virtualMachineProfile": {
                                   "storageProfile": {"imageReference": TINY},
                                   "osProfile": {"computerNamePrefix": name, "adminUsername": "azureuser",
                                                 "linuxConfiguration": {
                                                     "disablePasswordAuthentication": True, "ssh": {"publicKeys": [{
                                                         "path": "/home/azureuser/.ssh/authorized_keys",
                                                         "keyData": self.plan.ssh_public_key}]}}},
                                   "networkProfile": {"networkInterfaceConfigurations": [{
                                       "name": "nic", "properties": {"primary": True, "ipConfigurations": [
                                           {"name": "ip", "properties": {"subnet": {"id": subnet}}}]}}]}}}}
        with self.lock:
            res.touched = time.monotonic()
        r, lost = c.send("PUT", path, API, body)
        self._record("vmss.create", res, r, lost, exists=True, tags=tags, capacity=capacity, touch=True)

    def op_vmss_scale(self, c: Client, w: int, rnd: random.Random) -> None:
        targets = self.live("vmss", w)
        if not targets:
            return
        res = rnd.choice(targets)
        capacity = rnd.choice([n for n in (1, 2, 3) if n != res.capacity])
        with self.lock:
            res.touched = time.monotonic()
        r, lost = c.send("PATCH", res.path, API, {"sku": {"capacity": capacity}})
        self._record("vmss.scale", res, r, lost, exists=True, capacity=capacity, touch=True)

    def _choose(self, w: int, rnd: random.Random) -> Any:
        if not self.live("group", w):
            return self.op_group_create
        choices: list[tuple[float, Any]] = [
            (1.0 if len(self.live("group", w)) < 2 else 0.2, self.op_group_create),
            (1.0, lambda c, w, r: self.op_update(c, w, r, "group")),
            (0.4, lambda c, w, r: self.op_delete(c, w, r, "group")),
            (3.0, self.op_cg_create),
            (2.0, lambda c, w, r: self.op_update(c, w, r, "cg")),
            (2.0, lambda c, w, r: self.op_delete(c, w, r, "cg")),
        ]
        if self.plan.with_vms:
            choices += [(1.0, self.op_vm_create), (1.0, lambda c, w, r: self.op_update(c, w, r, "vm")),
                        (0.8, lambda c, w, r: self.op_delete(c, w, r, "vm"))]
        if self.plan.with_scale_sets:
            choices += [(0.7, self.op_vmss_create), (1.5, self.op_vmss_scale),
                        (0.6, lambda c, w, r: self.op_update(c, w, r, "vmss")),
                        (0.4, lambda c, w, r: self.op_delete(c, w, r, "vmss"))]
        return rnd.choices([f for _, f in choices], weights=[wt for wt, _ in choices])[0]

    def worker(self, w: int, errors: list[BaseException]) -> None:
        rnd = random.Random(self.plan.seed * 1000 + w)
        c = Client(self.server, self.stats)
        try:
            while self._more():
                before = sum(self.stats.ops.values())
                self._choose(w, rnd)(c, w, rnd)
                if sum(self.stats.ops.values()) != before:  # an op with nothing to act on sends nothing
                    time.sleep(rnd.uniform(0, 2 * self.pace))
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
        finally:
            c.close()

    # -- killing -----------------------------------------------------------------------------------
    def kill_and_restart(self) -> dict[tuple[str, str], tuple[str, int]]:
        """kill -9 kumo, wait until it is gone, restart it; the running instances' pids right before the kill."""
        running = self._running_instances()
        before = {k: v for k, v in running_pids(self.census()).items() if v[0] in running}
        captured = time.monotonic()
        pid = self.server.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"kumo {pid} survived kill -9")
            time.sleep(0.05)
        (self.server.data_dir / "run.json").unlink(missing_ok=True)
        self.stats.kills += 1
        t0 = time.monotonic()
        for attempt in range(3):
            try:
                self.server.start()
                break
            except (AssertionError, subprocess.TimeoutExpired):
                if attempt == 2:
                    raise
        self.stats.restart_seconds.append(time.monotonic() - t0)
        self._pending.append((captured, before))
        return before

    def _running_instances(self) -> set[str]:
        """Short hashes of the VMs, scale set instances and container groups that are provisioned and
        running now (one that is still booting may rightly boot again after a kill)."""
        out: set[str] = set()
        with self.lock:
            targets = [r for r in self.resources.values() if r.exists and r.kind in ("vm", "vmss", "cg")]
        try:
            with self.server.http() as c:
                for res in targets:
                    if res.kind == "cg":
                        r = c.get(res.path, params=res.api)
                        props = r.json().get("properties", {}) if r.status_code == 200 else {}
                        if props.get("provisioningState") == "Succeeded" and \
                                (props.get("instanceView") or {}).get("state") == "Running":
                            out.add(short_hash(res.path))
                        continue
                    url = f"{res.path}/virtualMachines" if res.kind == "vmss" else res.path
                    r = c.get(url, params={**API, "$expand": "instanceView"})
                    if r.status_code != 200:
                        continue
                    for vm in r.json().get("value", [r.json()]):
                        props = vm.get("properties", {})
                        codes = [s.get("code") for s in (props.get("instanceView") or {}).get("statuses", [])]
                        if props.get("provisioningState") == "Succeeded" and "PowerState/running" in codes:
                            out.add(short_hash(vm["id"]))
        except httpx.HTTPError:
            pass
        return out

    def census(self) -> list[HostObject]:
        if self.site is None:
            self.site = int((self.server.data_dir / "network-site").read_text())
        return census(self.server.data_dir, self.site, self.public_pool)

    def check_readoption(self, final: bool = False) -> None:
        """Each instance process seen right before a kill whose resource is untouched since then and still
        exists must still be the same process (re-adopted, not restarted)."""
        now = running_pids(self.census())
        owners = self._owners()
        keep = []
        for captured, before in self._pending:
            unresolved = False
            for (kind, name), (owner, pid) in before.items():
                res = owners.get(owner)
                if res is None or not res.exists or res.touched >= captured - 1 or res.uncertain:
                    continue  # gone, going, or changed on purpose since the capture
                if (kind, name) in now and now[(kind, name)][1] == pid:
                    self.stats.readopted += 1
                elif (kind, name) in now or final:
                    self.stats.restarted.append(f"{kind} {name} ({res.path}): pid {pid} -> "
                                                f"{now.get((kind, name), ('', None))[1]}")
                else:
                    unresolved = True
            if unresolved and not final:
                keep.append((captured, before))
        self._pending = keep

    def _owners(self) -> dict[str, Res]:
        """short hash -> model resource; scale set instances map to their scale set."""
        with self.lock:
            out = {short_hash(r.path): r for r in self.resources.values()}
        for res in list(out.values()):
            if res.kind == "vmss" and res.exists:
                for key in self._instance_keys(res):
                    out[short_hash(key)] = res
        return out

    def _instance_keys(self, res: Res) -> list[str]:
        try:
            with self.server.http() as c:
                r = c.get(f"{res.path}/virtualMachines", params=API)
        except httpx.HTTPError:
            return []
        if r.status_code != 200:
            return []
        keys = []
        for inst in r.json().get("value", []):
            keys.append(inst["id"])
            keys += [n["id"] for n in inst.get("properties", {}).get("networkProfile", {}).get("networkInterfaces", [])]
        return keys

    def run(self, kills: int, interval: tuple[float, float] = (3, 10), log: Any = print) -> None:
        """The workers' operations with `kills` kill -9s at random intervals meanwhile."""
        rnd = random.Random(self.plan.seed)
        # spread the operations over the kills: each worker pauses about this long between two of them
        self.pace = min(5.0, self.plan.workers * kills * (sum(interval) / 2 + 3) / max(self.plan.ops, 1))
        errors: list[BaseException] = []
        threads = [threading.Thread(target=self.worker, args=(w, errors), daemon=True)
                   for w in range(self.plan.workers)]
        for t in threads:
            t.start()
        for k in range(kills):
            time.sleep(rnd.uniform(*interval))
            self.check_readoption()
            self.kill_and_restart()
            log(f"kill {k + 1}/{kills}: restarted in {self.stats.restart_seconds[-1]:.1f}s, "
                f"{sum(self.stats.ops.values())} ops so far")
        for t in threads:
            t.join()
        if errors:
            raise errors[0]


# ---- the checks after the last kill -----------------------------------------------------------------

@dataclass
class Verdict:
    lros: int = 0
    lro_states: Counter[str] = field(default_factory=Counter)
    lro_problems: list[str] = field(default_factory=list)
    lro_failures: Counter[str] = field(default_factory=Counter)  # error code (message) of Failed LROs
    losses: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    uncertain: int = 0
    orphans: list[str] = field(default_factory=list)
    residue: list[str] = field(default_factory=list)  # host objects left after the purge
    checked: int = 0


def _code(r: httpx.Response) -> str:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""


def check_lros(h: Harness, v: Verdict, timeout: float = 600) -> dict[str, dict[str, Any]]:
    """(a) every LRO URL handed out reaches a terminal state; a Failed one carries code and message.
    Returns path -> the error of its Failed operations."""
    failures: dict[str, dict[str, Any]] = {}
    urls = [(res, u) for res in h.resources.values() for u in res.lros]
    v.lros = len(urls)
    deadline = time.monotonic() + timeout
    with h.server.http() as c:
        for res, url in urls:
            while True:
                r = c.get(url)
                if "operationResults" in url or "/operationresults/" in url.lower():
                    if r.status_code == 202 and time.monotonic() < deadline:
                        time.sleep(0.5)
                        continue
                    status = "InProgress" if r.status_code == 202 else \
                        "Succeeded" if r.status_code < 300 else "Failed"
                    error = r.json().get("error") if status == "Failed" and r.content else None
                else:
                    body = r.json() if r.status_code == 200 else {}
                    status = body.get("status", f"HTTP {r.status_code}")
                    error = body.get("error")
                    if status == "InProgress" and time.monotonic() < deadline:
                        time.sleep(0.5)
                        continue
                break
            v.lro_states[status] += 1
            if status not in TERMINAL:
                v.lro_problems.append(f"{url}: {status}")
            elif status == "Failed":
                if not (error and error.get("code") and error.get("message")):
                    v.lro_problems.append(f"{url}: Failed without code and message: {error}")
                else:
                    failures.setdefault(res.path.lower(), error)
                    message = re.sub(r"/subscriptions/\S+", "<id>", error["message"])[:60]
                    v.lro_failures[f"{error['code']} ({message})"] += 1
    return failures


def check_resources(h: Harness, v: Verdict, failures: dict[str, dict[str, Any]], timeout: float = 300) -> None:
    """(b) no loss: what was last accepted is what is there, in a terminal state; nothing unasked for."""
    deadline = time.monotonic() + timeout
    with h.server.http() as c:
        for res in h.resources.values():
            if res.accepted == 0 and not res.uncertain:
                continue
            v.checked += 1
            if res.uncertain:
                v.uncertain += 1
            while True:
                r = c.get(res.path, params=res.api)
                state = r.json().get("properties", {}).get("provisioningState") if r.status_code == 200 else None
                settling = (r.status_code == 200 and state not in TERMINAL) or \
                           (r.status_code == 200 and not res.exists and not res.uncertain)
                if settling and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                break
            if res.uncertain:
                if r.status_code == 200 and state not in TERMINAL:
                    v.losses.append(f"{res.path}: stuck in {state}")
                continue
            if not res.exists:
                if r.status_code != 404:
                    v.losses.append(f"{res.path}: deleted but GET answers {r.status_code} ({state})")
                continue
            if r.status_code != 200:
                v.losses.append(f"{res.path}: accepted but GET answers {r.status_code} {_code(r)}")
                continue
            body = r.json()
            if state not in ("Succeeded", "Failed"):
                v.losses.append(f"{res.path}: stuck in {state}")
            elif state == "Failed":
                reason = failures.get(res.path.lower())
                if reason is None:
                    v.losses.append(f"{res.path}: Failed with no failed operation giving a reason")
                else:
                    v.failed.append(f"{res.path}: {reason.get('code')}: {reason.get('message', '')[:160]}")
            if (body.get("tags") or {}) != res.tags:
                v.losses.append(f"{res.path}: tags {body.get('tags')} != last accepted {res.tags}")
            if res.kind == "vmss" and body.get("sku", {}).get("capacity") != res.capacity:
                v.losses.append(f"{res.path}: capacity {body.get('sku', {}).get('capacity')} != {res.capacity}")
            if res.kind == "vmss" and state == "Succeeded":
                n = len(c.get(f"{res.path}/virtualMachines", params=API).json().get("value", []))
                if n != res.capacity:
                    v.losses.append(f"{res.path}: {n} instances for capacity {res.capacity}")
        # nothing exists that was never accepted (disks follow their VM; network prerequisites are modelled)
        known = set(h.resources)  # the model's own resources were checked above
        made = [r.path.rsplit("/", 1)[1].lower() for r in h.resources.values()
                if r.kind in ("vm", "vmss") and (r.exists or r.uncertain)]
        listed = c.get(f"{h.sub}/resources", params={**API, "$top": "1000"}).json().get("value", [])
        groups = c.get(f"{h.sub}/resourcegroups", params=API).json().get("value", [])
        for item in listed + groups:
            rid = item["id"].lower()
            if f"/resourcegroups/{h.prefix}-".lower() not in rid + "/" or rid in known:
                continue
            if item.get("type", "").lower() == "microsoft.compute/disks" and any(
                    item["name"].lower().startswith(f"{name}_") for name in made):
                continue  # an OS disk follows its VM or scale set instance
            v.losses.append(f"{item['id']}: exists but no request for it was accepted")


def explained(h: Harness) -> set[str]:
    """Short hashes (and public IPs) of everything that exists now: the census's owners."""
    out = {short_hash(INSTANCE_NET_KEY), short_hash(f"{INSTANCE_NET_KEY}/subnet"), "table"}
    with h.server.http() as c:
        items = c.get(f"{h.sub}/resources", params={**API, "$top": "1000"}).json().get("value", [])
        for item in items:
            out.add(short_hash(item["id"]))
            t = item["type"].lower()
            if t in ("microsoft.network/virtualnetworks", "microsoft.network/publicipaddresses",
                     "microsoft.containerinstance/containergroups", "microsoft.compute/virtualmachinescalesets"):
                api = ACI_API if "containerinstance" in t else NET_API if "network" in t else API
                body = c.get(item["id"], params=api).json()
                props = body.get("properties", {})
                out.update(short_hash(s["id"]) for s in props.get("subnets", []))
                if ip := props.get("ipAddress"):
                    out.add(ip if isinstance(ip, str) else ip.get("ip", ""))
                if "scalesets" in t:
                    for inst in c.get(f"{item['id']}/virtualMachines", params=API).json().get("value", []):
                        out.add(short_hash(inst["id"]))
                        out.update(short_hash(n["id"]) for n in
                                   inst.get("properties", {}).get("networkProfile", {}).get("networkInterfaces", []))
                        out.update(short_hash(d["managedDisk"]["id"]) for d in [
                            inst.get("properties", {}).get("storageProfile", {}).get("osDisk", {})]
                            if d.get("managedDisk", {}).get("id"))
    return out


def check_orphans(h: Harness, v: Verdict, timeout: float = 120) -> None:
    """(c) every host object maps to an existing resource (deletes finishing in the background get time)."""
    deadline = time.monotonic() + timeout
    while True:
        known = explained(h)
        orphans = [f"{o.kind} {o.name}" for o in h.census() if o.owner not in known]
        if not orphans or time.monotonic() > deadline:
            v.orphans = orphans
            return
        time.sleep(2)


def check_purged(data_dir: Path, site: int, public_pool: str | None, v: Verdict, timeout: float = 60) -> None:
    """After stop_server: nothing of this kumo is left on the host."""
    deadline = time.monotonic() + timeout
    while True:
        left = [f"{o.kind} {o.name}" for o in census(data_dir, site, public_pool)]
        if not left or time.monotonic() > deadline:
            v.residue = left
            return
        time.sleep(1)


def summary(h: Harness, v: Verdict, seconds: float) -> str:
    s = h.stats
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(s.ops.items()))
    rows = [
        ("kills (kill -9 + restart)", f"{s.kills}"),
        ("restart time p50 / max", f"{_p50(s.restart_seconds):.1f} s / {max(s.restart_seconds, default=0):.1f} s"),
        ("operations", f"{sum(s.ops.values())} ({by_kind})"),
        ("accepted (2xx)", f"{sum(s.accepted.values())}"),
        ("refused (4xx, by the model's rules)", ", ".join(f"{k}: {n}" for k, n in s.refused.most_common()) or "0"),
        ("requests resent after no answer", f"{s.retried}"),
        ("5xx answers", f"{len(s.server_errors)}"),
        ("resources checked (uncertain)", f"{v.checked} ({v.uncertain})"),
        ("LROs handed out / terminal", f"{v.lros} / {sum(n for k, n in v.lro_states.items() if k in TERMINAL)} "
                                       f"({', '.join(f'{k} {n}' for k, n in sorted(v.lro_states.items()))})"),
        ("LRO problems", f"{len(v.lro_problems)}"),
        ("Failed LROs by error", "; ".join(f"{k}: {n}" for k, n in v.lro_failures.most_common()) or "none"),
        ("resources Failed (with reason)", f"{len(v.failed)}"),
        ("losses", f"{len(v.losses)}"),
        ("orphans", f"{len(v.orphans)}"),
        ("re-adopted (same pid across a kill)", f"{s.readopted}"),
        ("restarted instead of re-adopted", f"{len(s.restarted)}"),
        ("host objects left after purge", f"{len(v.residue)}"),
        ("wall time", f"{seconds:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'what'.ljust(width)} | result |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {k.ljust(width)} | {val} |" for k, val in rows]
    details = [("server errors", s.server_errors), ("LRO problems", v.lro_problems), ("losses", v.losses),
               ("orphans", v.orphans), ("restarted", s.restarted), ("left after purge", v.residue),
               ("failed resources", v.failed)]
    for title, items in details:
        if items:
            lines.append(f"\n{title}:")
            lines += [f"  - {i}" for i in items[:40]]
    return "\n".join(lines)


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def crash_run(plan: Plan, kills: int, interval: tuple[float, float] = (3, 10), log: Any = print,
              extra_args: tuple[str, ...] = ()) -> tuple[Harness, Verdict, str]:
    """A whole run on a fresh kumo: operations and kills, the checks, the purge and the final census."""
    import shutil
    import tempfile

    from tests.conftest import start_server, stop_server
    from tests.vmlib import new_ssh_key

    t0 = time.monotonic()
    keys = Path(tempfile.mkdtemp(prefix="kumo-crash-key-"))
    server = start_server(*extra_args)
    v = Verdict()
    h: Harness | None = None
    try:
        plan.ssh_public_key = new_ssh_key(keys).with_suffix(".pub").read_text().strip()
        h = Harness(server, plan)
        h.run(kills, interval, log)
        log("settling: LROs")
        failures = check_lros(h, v)
        log("settling: resources")
        check_resources(h, v, failures)
        log("census")
        check_orphans(h, v)
        h.check_readoption(final=True)
    finally:
        site = int((server.data_dir / "network-site").read_text()) if (
            server.data_dir / "network-site").exists() else None
        stop_server(server)
        shutil.rmtree(keys, ignore_errors=True)
    assert h is not None  # a failure before it was made has raised
    if site is not None:
        check_purged(server.data_dir, site, h.public_pool, v)
    return h, v, summary(h, v, time.monotonic() - t0)
