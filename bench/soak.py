"""Load and soak: many create/delete cycles with concurrent clients; latency, memory, fds and host leaks.

Starts a fresh kumo of its own (tests.conftest.start_server: temporary data dir, free port, its own slice of
loopback for public IPs; root needed) and runs one or both of:

- `aci`: N (default 1000) cycles of a container group with C (default 4) concurrent clients over ARM's REST
  API (async httpx, a bearer token from kumo): PUT an nginx group with a public IP on port 80 (the catalog's
  image, its own entrypoint), GET until it is Succeeded and its container Running, GET it once more, DELETE
  it, GET until 404.
- `vm`: N (default 100) cycles of a tiny-image VM with C (default 2) concurrent clients: a VNet made once;
  each cycle PUTs a public IP and a NIC (both marked Delete) and a VM (OS disk marked Delete), GETs until
  Succeeded, DELETEs the VM and GETs until the VM, its NIC, public IP and disk are gone (404).

Measured: latency of each request kind (PUT, poll GET, DELETE) and of whole cycles, p50/p95 in each tenth of
the run; kumo's RSS, open fds and threads sampled every second with the host's load average; and a census of
the host objects this kumo owns (namespaces; links, bridges, veths, taps in the root namespace and in its
namespaces; nft tables; conmon/runc/QEMU and container processes; cgroups; mounts under its data dir and
/run; public IPs on loopback; files under its containers/, vms/ and disks/ dirs; rows of the store) taken
after one warm-up cycle and after the run. Verdicts: latency flat (the last tenth's p50 within 1.5x of the
first tenth's, or within 25 ms for single requests), memory flat (RSS growth from the first tenth to the last
within 10% or 8 MiB), fds flat (quiescent fds after the run within 3 of those after warm-up), host leaks zero,
no failed cycle. Exits 1 when a verdict fails.

Progress goes to stderr, the tables to stdout. Usage: .venv/bin/python bench/soak.py [aci] [vm]
[--aci-cycles 1000] [--aci-clients 4] [--vm-cycles 100] [--vm-clients 2]"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import KumoServer, start_server, stop_server  # noqa: E402
from tests.e2e.acilib import container, group_body  # noqa: E402

ACI = {"api-version": "2024-05-01-preview"}
COMPUTE = {"api-version": "2024-11-01"}
NETWORK = {"api-version": "2024-05-01"}
RG_API = {"api-version": "2024-11-01"}
TINY = {"publisher": "kumo", "offer": "tiny", "sku": "1", "version": "latest"}
POLL = 0.2  # seconds between the GETs that poll a resource
KINDS = ("PUT", "GET", "DELETE", "cycle")
TENTHS = 10
TOKEN_REFRESH = 900.0  # kumo's access tokens live an hour
LATENCY_RATIO, LATENCY_SLACK = 1.5, 0.025  # flat: last tenth's p50 ≤ 1.5 × the first's (or + 25 ms)
RSS_RATIO, RSS_SLACK_MIB = 0.10, 8.0
FD_SLACK = 3
# SQLAlchemy keeps up to pool_size (5) SQLite connections open once used: growth up to that is a pool filling
SQLITE_POOL, DB_FILES = 5, ("kumo.db", "kumo.db-wal")
POSTGRES_POOL = 10  # kumo's pool_size for PostgreSQL
STORE_TABLES = ("resources", "allocations", "operations", "events")
LEAK_TABLES = ("resources", "allocations")  # operations and events are history: reported, not verdicts


def say(msg: str) -> None:
    print(f"[soak] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(len(s) * q) - 1)] if s else float("nan")


# -- kumo's process and the host objects it owns --------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and open fds of a process."""
    out = {"rss": 0, "threads": 0, "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    return out


def _lines(argv: list[str]) -> list[str]:
    return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()


def _link_names(netns: str | None) -> list[str]:
    argv = ["ip", "-o", *(["-n", netns] if netns else []), "link", "show"]
    return [line.split(":")[1].strip().split("@")[0] for line in _lines(argv) if line.count(":") >= 2]


def _nft_tables(netns: str | None) -> list[str]:
    argv = [*(["ip", "netns", "exec", netns] if netns else []), "nft", "list", "tables"]
    return [line.strip() for line in _lines(argv) if line.startswith("table")]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def census(server: KumoServer, site: int, pool: ipaddress.IPv4Network) -> dict[str, set[str]]:
    """Every host object that this kumo (data dir, site number, public pool) owns, by category."""
    data = str(server.data_dir)
    prefixes = (f"kumo{site}-", f"kumo{site}g", f"kumo{site}v")
    out: dict[str, set[str]] = {}
    namespaces = [n for n in (line.split()[0] for line in _lines(["ip", "netns", "list"]) if line.strip())
                  if n.startswith(prefixes)]
    out["netns"] = set(namespaces)
    out["links"] = {n for n in _link_names(None) if n.startswith(f"k{site}h")}
    out["links"] |= {f"{ns}/{n}" for ns in namespaces for n in _link_names(ns) if n != "lo"}
    out["nft tables"] = {t for t in _nft_tables(None) if f"kumo_site{site}" in t}
    out["nft tables"] |= {f"{ns}/{t}" for ns in namespaces for t in _nft_tables(ns)}
    me, kumo = str(os.getpid()), str(server.pid())
    out["processes"] = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and p.name not in (me, kumo):
            cmd = _cmdline(p.name)
            if data in cmd or any(x in cmd for x in prefixes):
                out["processes"].add(f"{p.name} {cmd[:80]}")
    cgroups = [d for d in Path("/sys/fs/cgroup").glob(f"*/kumo{site}") if d.is_dir()]
    out["cgroups"] = {str(d) for c in cgroups for d in c.rglob("*") if d.is_dir()}
    for c in cgroups:  # container processes (nginx workers …) sit in the group cgroups
        for procs in c.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                out["processes"] |= {f"{pid} {_cmdline(pid)[:80]}" for pid in procs.read_text().split()}
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    out["mounts"] = {m for m in mounts if m.startswith(data + "/") or (m.startswith("/run/") and
                                                                     any(x in m for x in prefixes))}
    # Public IPs live in 127/8 (on lo already): the host table's DNATs and the routes to the VNets hold them.
    host_tables = [t.removeprefix("table ").split() for t in out["nft tables"] if "/" not in t]
    rules = [line for fam, name in host_tables for line in _lines(["nft", "list", "table", fam, name])]
    out["public IPs"] = {w.strip(",{}:;") for line in rules for w in line.split() if _in(w.strip(",{}:;"), pool)}
    out["routes"] = {line.strip() for table in ("main", "local")
                     for line in _lines(["ip", "route", "show", "table", table]) if f" k{site}h" in line}
    out["files"] = {str(f) for d in ("containers", "vms", "disks") for f in (server.data_dir / d).rglob("*")
                    if f.is_file() or f.is_symlink()}
    return out


def _in(word: str, pool: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(word) in pool
    except ValueError:
        return False


def fd_targets(pid: int) -> list[str]:
    """What kumo's open fds point at (sockets and pipes by kind, files by path)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            out.append(target.split(":[")[0] if ":[" in target else target)
    return sorted(out)


def store_rows(server: KumoServer) -> dict[str, int] | None:
    """Row counts of the store's tables (SQLite only; None under PostgreSQL)."""
    db = server.data_dir / "kumo.db"
    if os.environ.get("KUMO_DATABASE_URL") or not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in STORE_TABLES}  # noqa: S608


def leaks(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, list[str]]:
    """What the run left: categories with more objects after than before, and the new objects' names.
    Processes are compared by count (their pids change when runners restart nothing, but be safe)."""
    out = {}
    for cat, objs in after.items():
        if len(objs) > len(before.get(cat, set())):
            out[cat] = sorted(objs - before.get(cat, set()))[:10]
    return out


# -- the ARM client -------------------------------------------------------------------------------------
class Arm:
    """An async ARM client with a bearer token renewed every 15 minutes and a latency record per kind."""

    def __init__(self, server: KumoServer) -> None:
        self.server = server
        self.http = self._client()
        self.token_at = 0.0
        self.lat: dict[str, list[tuple[int, float]]] = {k: [] for k in KINDS}  # (cycle index, seconds)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server.endpoint, verify=self.server.tls(), timeout=120,
                                 limits=httpx.Limits(max_connections=16))

    async def reconnect(self) -> None:
        """Close every kept-alive connection (kumo's idle fd count must not include ours), then go on."""
        auth = self.http.headers.get("Authorization")
        await self.http.aclose()
        self.http = self._client()
        if auth:
            self.http.headers["Authorization"] = auth

    async def _auth(self) -> None:
        if time.monotonic() - self.token_at > TOKEN_REFRESH:
            ident = self.server.identity
            r = await self.http.post(f"/{ident['tenant_id']}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": ident["client_id"],
                "client_secret": ident["client_secret"], "scope": f"{self.server.endpoint}/.default"})
            r.raise_for_status()
            self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            self.token_at = time.monotonic()

    async def call(self, kind: str, cycle: int, method: str, path: str, params: dict[str, str],
                   body: Any = None) -> httpx.Response:
        await self._auth()
        t0 = time.perf_counter()
        r = await self.http.request(method, path, params=params, json=body)
        self.lat[kind].append((cycle, time.perf_counter() - t0))
        if r.status_code >= 500:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r

    async def put(self, cycle: int, path: str, params: dict[str, str], body: Any) -> dict[str, Any]:
        r = await self.call("PUT", cycle, "PUT", path, params, body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"PUT {path}: {r.status_code} {r.text[:300]}")
        return dict(r.json())

    async def wait(self, cycle: int, path: str, params: dict[str, str], done: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any]:
        """GET until `done(body)`; a Failed provisioning state is an error."""
        deadline = time.monotonic() + timeout
        while True:
            r = await self.call("GET", cycle, "GET", path, params)
            if r.status_code == 200:
                got = r.json()
                if got.get("properties", {}).get("provisioningState") == "Failed":
                    raise RuntimeError(f"{path} failed: {json.dumps(got)[:400]}")
                if done(got):
                    return dict(got)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: not done within {timeout:.0f} s (last {r.status_code})")
            await asyncio.sleep(POLL)

    async def delete(self, cycle: int, path: str, params: dict[str, str], timeout: float) -> None:
        r = await self.call("DELETE", cycle, "DELETE", path, params)
        if r.status_code not in (200, 202, 204, 404):
            raise RuntimeError(f"DELETE {path}: {r.status_code} {r.text[:300]}")
        await self.gone(cycle, path, params, timeout)

    async def gone(self, cycle: int, path: str, params: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (await self.call("GET", cycle, "GET", path, params)).status_code != 404:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: still there {timeout:.0f} s after DELETE")
            await asyncio.sleep(POLL)

    async def aclose(self) -> None:
        await self.http.aclose()


# -- the two workloads ----------------------------------------------------------------------------------
def ready_group(g: dict[str, Any]) -> bool:
    props = g["properties"]
    views = [(c["properties"].get("instanceView") or {}).get("currentState") or {} for c in props["containers"]]
    return props.get("provisioningState") == "Succeeded" and all(v.get("state") == "Running" for v in views)


def succeeded(r: dict[str, Any]) -> bool:
    return r.get("properties", {}).get("provisioningState") == "Succeeded"


class Workload:
    """One kind of cycle in one resource group: `setup` once, then `cycle(i)` many times."""

    name = ""

    def __init__(self, arm: Arm, rg: str) -> None:
        self.arm = arm
        self.rg = rg
        self.on_ready: Callable[[int], Awaitable[None]] | None = None  # called once cycle i's resource runs

    async def ready(self, i: int) -> None:
        if self.on_ready is not None:
            await self.on_ready(i)

    async def setup(self) -> None:
        await self.arm.put(-1, self.rg, RG_API, {"location": "local"})

    async def cycle(self, i: int) -> None:
        raise NotImplementedError


class AciWorkload(Workload):
    name = "aci"

    async def cycle(self, i: int) -> None:
        path = f"{self.rg}/providers/Microsoft.ContainerInstance/containerGroups/soak{i}"
        body = group_body(container("web", image="nginx", ports=(80,), cpu=0.5, memory=0.5), public_ports=(80,))
        await self.arm.put(i, path, ACI, body)
        try:
            await self.arm.wait(i, path, ACI, ready_group, 300)
            await self.ready(i)
            await self.arm.wait(i, path, ACI, lambda _: True, 30)  # one plain GET of the running group
        finally:
            await self.arm.delete(i, path, ACI, 300)


async def ssh_public_key() -> str:
    """A fresh ed25519 public key (the private half is never needed: the soak does not log in)."""
    with tempfile.TemporaryDirectory(prefix="kumo-soak-key-") as d:
        proc = await asyncio.create_subprocess_exec("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kumo-soak",
                                                    "-f", f"{d}/id", stdin=asyncio.subprocess.DEVNULL)
        if await proc.wait() != 0:
            raise RuntimeError("ssh-keygen failed")
        return Path(f"{d}/id.pub").read_text().strip()


class VmWorkload(Workload):
    name = "vm"

    async def setup(self) -> None:
        await super().setup()
        vnet = f"{self.rg}/providers/Microsoft.Network/virtualNetworks/soakvnet"
        await self.arm.put(-1, vnet, NETWORK, {"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": ["10.7.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "10.7.0.0/24"}}]}})
        got = await self.arm.wait(-1, vnet, NETWORK, succeeded, 300)
        self.subnet = got["properties"]["subnets"][0]["id"]
        self.key = await ssh_public_key()

    async def cycle(self, i: int) -> None:
        net = f"{self.rg}/providers/Microsoft.Network"
        pip, nic = f"{net}/publicIPAddresses/soakpip{i}", f"{net}/networkInterfaces/soaknic{i}"
        vm = f"{self.rg}/providers/Microsoft.Compute/virtualMachines/soakvm{i}"
        disk = None
        try:
            await self.arm.put(i, pip, NETWORK, {"location": "local", "sku": {"name": "Standard"}, "properties": {
                "publicIPAllocationMethod": "Static", "deleteOption": "Delete"}})
            await self.arm.wait(i, pip, NETWORK, succeeded, 120)
            await self.arm.put(i, nic, NETWORK, {"location": "local", "properties": {"ipConfigurations": [{
                "name": "ipconfig1", "properties": {"subnet": {"id": self.subnet}, "publicIPAddress": {"id": pip}}}]}})
            await self.arm.wait(i, nic, NETWORK, succeeded, 120)
            await self.arm.put(i, vm, COMPUTE, {"location": "local", "properties": {
                "hardwareProfile": {"vmSize": "Standard_B1s"},
                "storageProfile": {"imageReference": TINY, "osDisk": {
                    "createOption": "FromImage", "deleteOption": "Delete",
                    "managedDisk": {"storageAccountType": "Standard_LRS"}}},
                "osProfile": {"computerName": f"soak{i}", "adminUsername": "azureuser", "linuxConfiguration": {
                    "disablePasswordAuthentication": True, "ssh": {"publicKeys": [{
                        "path": "/home/azureuser/.ssh/authorized_keys", "keyData": self.key}]}}},
                "networkProfile": {"networkInterfaces": [{"id": nic, "properties": {
                    "primary": True, "deleteOption": "Delete"}}]}}})
            got = await self.arm.wait(i, vm, COMPUTE, succeeded, 600)
            disk = got["properties"]["storageProfile"]["osDisk"].get("managedDisk", {}).get("id")
            await self.ready(i)
        finally:
            await self.arm.delete(i, vm, COMPUTE, 600)
            for path in [nic, pip]:  # gone with the VM (deleteOption); explicit if the VM never came to be
                await self.arm.delete(i, path, NETWORK, 300)
            if disk:
                await self.arm.gone(i, disk, COMPUTE, 300)


WORKLOADS: dict[str, type[Workload]] = {"aci": AciWorkload, "vm": VmWorkload}


# -- one soak -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Sample:
    t: float
    done: int  # cycles finished when sampled
    rss: int  # KiB
    fds: int
    threads: int
    load: float


@dataclasses.dataclass
class Report:
    workload: str
    cycles: int
    clients: int
    seconds: float = 0.0
    errors: list[str] = dataclasses.field(default_factory=list)
    lat: dict[str, list[tuple[int, float]]] = dataclasses.field(default_factory=dict)
    cycle_ends: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (index, seconds)
    samples: list[Sample] = dataclasses.field(default_factory=list)
    quiet_before: dict[str, int] = dataclasses.field(default_factory=dict)  # kumo's process, idle
    quiet_after: dict[str, int] = dataclasses.field(default_factory=dict)
    fds_before: list[str] = dataclasses.field(default_factory=list)  # what the idle fds point at
    fds_after: list[str] = dataclasses.field(default_factory=list)
    rows_before: dict[str, int] | None = None
    rows_after: dict[str, int] | None = None
    leaks: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    counts_before: dict[str, int] = dataclasses.field(default_factory=dict)
    counts_after: dict[str, int] = dataclasses.field(default_factory=dict)
    counts_mid: dict[str, int] = dataclasses.field(default_factory=dict)  # halfway, while cycles run
    loads: list[float] = dataclasses.field(default_factory=list)
    sqlite: bool = True  # the store: SQLite in the data dir, else PostgreSQL

    def tenth(self, index: int) -> int:
        return min(TENTHS - 1, index * TENTHS // max(1, self.cycles))

    def latencies(self, kind: str, tenth: int) -> list[float]:
        return [s for i, s in (self.cycle_ends if kind == "cycle" else self.lat.get(kind, []))
                if i >= 0 and self.tenth(i) == tenth]

    def samples_in(self, tenth: int) -> list[Sample]:
        return [s for s in self.samples if self.tenth(min(s.done, self.cycles - 1)) == tenth]

    def verdicts(self) -> dict[str, tuple[bool, str]]:
        out: dict[str, tuple[bool, str]] = {}
        flat = []
        for kind in KINDS:
            first, last = self.latencies(kind, 0), self.latencies(kind, TENTHS - 1)
            if not first or not last:
                continue
            a, b = pct(first, 0.5), pct(last, 0.5)
            slack = 0.0 if kind == "cycle" else LATENCY_SLACK
            ok = b <= a * LATENCY_RATIO or b - a <= slack
            flat.append((ok, f"{kind} {a * 1000:.0f}→{b * 1000:.0f} ms"))
        out["latency flat"] = (all(ok for ok, _ in flat), ", ".join(m for _, m in flat))
        first_rss = [s.rss for s in self.samples_in(0)]
        last_rss = [s.rss for s in self.samples_in(TENTHS - 1)]
        if first_rss and last_rss:
            ref, end = max(first_rss), pct([float(r) for r in last_rss], 0.5)
            growth = (end - ref) / 1024
            ok = growth <= max(RSS_RATIO * ref / 1024, RSS_SLACK_MIB)
            idle = f"{self.quiet_before['rss'] / 1024:.1f} → {self.quiet_after['rss'] / 1024:.1f} MiB"
            out["memory flat"] = (ok, f"RSS {ref / 1024:.1f} MiB (max of first tenth) → {end / 1024:.1f} MiB "
                                      f"(median of last tenth), {growth:+.1f} MiB; idle {idle}")
        fd_growth = self.quiet_after["fds"] - self.quiet_before["fds"]
        new = list((collections.Counter(self.fds_after) - collections.Counter(self.fds_before)).elements())
        # fds of pooled store connections: a SQLite one holds the db and its WAL, a PostgreSQL one a socket
        db = sum(f.endswith(DB_FILES) for f in new) if self.sqlite else sum(f == "socket" for f in new)
        ok = fd_growth - db <= FD_SLACK and db <= (2 * SQLITE_POOL if self.sqlite else POSTGRES_POOL)
        out["fds flat"] = (ok, f"idle fds {self.quiet_before['fds']} → {self.quiet_after['fds']}"
                                                  f" ({fd_growth:+d}{'; new: ' + ', '.join(new) if new else ''}); "
                                                  f"threads {self.quiet_before['threads']} → "
                                                  f"{self.quiet_after['threads']}")
        row_leaks = {t: self.rows_after[t] - self.rows_before[t] for t in LEAK_TABLES
                     if self.rows_before and self.rows_after and self.rows_after[t] > self.rows_before[t]}
        host = ", ".join(f"{k}: {len(v)}+ ({'; '.join(v[:3])})" for k, v in self.leaks.items())
        out["host leaks zero"] = (not self.leaks and not row_leaks,
                                  host or (f"store rows {row_leaks}" if row_leaks else
                                           f"{sum(self.counts_after.values())} objects before and after"))
        out["no failed cycle"] = (not self.errors, f"{len(self.errors)} failed" +
                                  (f": {self.errors[0][:200]}" if self.errors else ""))
        return out

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.verdicts().values())


async def quiet(pid: int, baseline: dict[str, int] | None, timeout: float = 60) -> dict[str, int]:
    """kumo's process figures once idle: wait (to a deadline) for fds to come down to `baseline`'s."""
    deadline = time.monotonic() + timeout
    while True:
        now = proc_status(pid)
        if baseline is None or now["fds"] <= baseline["fds"] or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.5)


async def soak(server: KumoServer, workload: str, cycles: int, clients: int) -> Report:
    """Run `cycles` cycles of `workload` with `clients` concurrent clients against `server`."""
    report = Report(workload, cycles, clients, sqlite=(server.data_dir / "kumo.db").exists())
    info = json.loads((server.data_dir / "run.json").read_text())
    pid = server.pid()
    arm = Arm(server)
    rg = f"/subscriptions/{server.identity['subscription_id']}/resourceGroups/soak{workload}"
    work = WORKLOADS[workload](arm, rg)
    try:
        say(f"{workload}: setting up, {clients} warm-up cycles at once")
        await work.setup()
        await work.cycle(-1)  # pulls the image / makes the VM golden
        # then as many at once as the run has clients, so pools (the store's connections) reach working size
        await asyncio.gather(*(work.cycle(-2 - k) for k in range(clients)))
        site = int(info.get("network_site") or (server.data_dir / "network-site").read_text().strip())
        pool = ipaddress.IPv4Network(server.extra_args[server.extra_args.index("--public-ip-pool") + 1])
        await arm.reconnect()
        report.quiet_before = await quiet(pid, None)
        report.fds_before = fd_targets(pid)
        before = await asyncio.to_thread(census, server, site, pool)
        report.rows_before = await asyncio.to_thread(store_rows, server)
        say(f"{workload}: baseline {', '.join(f'{k} {len(v)}' for k, v in before.items())}; "
            f"kumo RSS {report.quiet_before['rss'] / 1024:.1f} MiB, {report.quiet_before['fds']} fds")
        async def halfway(i: int) -> None:  # the objects while a resource runs: shows the census sees them
            if i == cycles // 2:
                mid = await asyncio.to_thread(census, server, site, pool)
                report.counts_mid = {k: len(v) for k, v in mid.items()}

        work.on_ready = halfway
        next_index, done = 0, 0
        t_start = time.monotonic()

        async def client() -> None:
            nonlocal next_index, done
            while next_index < cycles:
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                try:
                    await work.cycle(i)
                    report.cycle_ends.append((i, time.perf_counter() - t0))
                except Exception as e:  # noqa: BLE001 - a failed cycle is counted and reported, the run goes on
                    report.errors.append(f"cycle {i}: {type(e).__name__}: {e}")
                    say(f"{workload}: cycle {i} FAILED: {report.errors[-1][:300]}")
                done += 1
                if done % max(1, cycles // 20) == 0:
                    s = proc_status(pid)
                    say(f"{workload}: {done}/{cycles} cycles, {time.monotonic() - t_start:.0f} s, RSS "
                        f"{s['rss'] / 1024:.1f} MiB, {s['fds']} fds, load {os.getloadavg()[0]:.2f}")

        async def sampler() -> None:
            while True:
                with contextlib.suppress(OSError):
                    s = proc_status(pid)
                    report.samples.append(Sample(time.monotonic() - t_start, done, s["rss"], s["fds"],
                                                 s["threads"], os.getloadavg()[0]))
                await asyncio.sleep(1.0)

        sampling = asyncio.create_task(sampler())
        try:
            await asyncio.gather(*(client() for _ in range(clients)))
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
        report.seconds = time.monotonic() - t_start
        report.lat = arm.lat
        await arm.reconnect()
        report.quiet_after = await quiet(pid, report.quiet_before)
        report.fds_after = fd_targets(pid)
        after = await settle_census(server, site, pool, before)
        report.rows_after = await asyncio.to_thread(store_rows, server)
        report.leaks = leaks(before, after)
        report.counts_before = {k: len(v) for k, v in before.items()}
        report.counts_after = {k: len(v) for k, v in after.items()}
        report.loads = [s.load for s in report.samples]
        # the resource group goes last, outside the measurements
        with contextlib.suppress(Exception):
            await arm.call("DELETE", -1, "DELETE", rg, RG_API)
            await arm.gone(-1, rg, RG_API, 600)
    finally:
        await arm.aclose()
    return report


async def settle_census(server: KumoServer, site: int, pool: ipaddress.IPv4Network,
                        before: dict[str, set[str]], timeout: float = 30) -> dict[str, set[str]]:
    """The census after the run, taken again (to a deadline) while it still shows more than before: the last
    DELETE's 404 can precede the last of its host clean-up by a moment."""
    deadline = time.monotonic() + timeout
    while True:
        after = await asyncio.to_thread(census, server, site, pool)
        if not leaks(before, after) or time.monotonic() > deadline:
            return after
        await asyncio.sleep(1.0)


# -- the tables -----------------------------------------------------------------------------------------
def table(r: Report, out: Callable[..., None] = print) -> None:
    ms = lambda v: f"{v * 1000:.0f}" if v == v else "—"  # noqa: E731 - NaN for an empty tenth
    n_ok = len(r.cycle_ends)
    out(f"{r.workload}: {r.cycles} create/delete cycles, {r.clients} concurrent clients, {r.seconds:.0f} s "
        f"({n_ok / max(r.seconds, 1e-9) * 60:.1f} cycles/min), {len(r.errors)} failed; latency p50/p95 in ms")
    head = f"{'tenth':>5} {'cycles':>6}" + "".join(f" {k + ' p50':>10} {k + ' p95':>10}" for k in KINDS)
    out(head + f" {'RSS MiB':>8} {'fds':>5} {'thr':>4} {'load':>5}")
    for t in range(TENTHS):
        cells = f"{t + 1:>5} {len(r.latencies('cycle', t)):>6}"
        for kind in KINDS:
            v = r.latencies(kind, t)
            cells += f" {ms(pct(v, 0.5)):>10} {ms(pct(v, 0.95)):>10}"
        ss = r.samples_in(t)
        if ss:
            rss, fds, thr, load = (sorted(getattr(s, f) for s in ss)[len(ss) // 2]
                                   for f in ("rss", "fds", "threads", "load"))
            cells += f" {rss / 1024:>8.1f} {fds:>5} {thr:>4} {load:>5.2f}"
        else:
            cells += f" {'—':>8} {'—':>5} {'—':>4} {'—':>5}"
        out(cells)
    per = {k: len(r.lat[k]) for k in ("PUT", "GET", "DELETE")}
    out(f"requests: {sum(per.values())} ({', '.join(f'{k} {v}' for k, v in per.items())})"
        f"; load average min/median/max {min(r.loads, default=0):.2f}/{pct(r.loads, 0.5):.2f}/"
        f"{max(r.loads, default=0):.2f} on {os.cpu_count()} cores")
    out("host objects of this kumo, after warm-up → halfway → after the run: " +
        ", ".join(f"{k} {r.counts_before[k]}→{r.counts_mid.get(k, '?')}→{r.counts_after[k]}"
                  for k in r.counts_before))
    if r.rows_before and r.rows_after:
        out("store rows: " + ", ".join(f"{t} {r.rows_before[t]}→{r.rows_after[t]}" for t in STORE_TABLES))
    for name, (ok, detail) in r.verdicts().items():
        out(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    out("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*", default=["aci", "vm"], choices=sorted(WORKLOADS))
    ap.add_argument("--aci-cycles", type=int, default=1000)
    ap.add_argument("--aci-clients", type=int, default=4)
    ap.add_argument("--vm-cycles", type=int, default=100)
    ap.add_argument("--vm-clients", type=int, default=2)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/soak.py needs root (kumo's containers, VMs, namespaces)")
    say("starting kumo")
    server = start_server()
    reports: list[Report] = []
    try:
        for w in args.workloads:
            n, c = getattr(args, f"{w}_cycles"), getattr(args, f"{w}_clients")
            reports.append(asyncio.run(soak(server, w, n, c)))
            table(reports[-1], lambda *a: print(*a, file=sys.stderr, flush=True))  # early, in case of a later crash
    finally:
        say("stopping kumo")
        stop_server(server)
    print(f"kumo soak, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
          f"kernel {os.uname().release}")
    for r in reports:
        table(r)
    sys.exit(0 if all(r.ok for r in reports) else 1)


if __name__ == "__main__":
    main()
