"""Scale sets: scale-out 0 → N to serving behind the load balancer, LB against direct, autoscale's reaction.

Scale-out 0 → N to every instance serving behind the load balancer, throughput through the load balancer
against one instance directly, and autoscale's reaction to CPU load, in one run.

Starts its own kumo (temporary data dir, free port, root needed) with KUMO_VM_OVERCOMMIT raised so N
Standard_B1s instances fit on this host's cores. Setup, untimed, as a user would do it with az:
`az vmss create --orchestration-mode Uniform --lb-sku Standard --image Tiny --instance-count 1
--custom-data serve.sh` (the first instance makes kumo's golden snapshot of the shape, so the timed
instances are restored from it, as any later VM of a shape is; serve.sh starts busybox httpd serving the
instance's hostname), an NSG rule letting in TCP 80, and an inbound NAT rule `direct80` over the set's
backend pool (`--frontend-port-range-start 8000 --backend-port 80`: each instance gets its own frontend
port to its port 80, so the direct path is DNAT in the same kernel as the load-balancing rule LBRule
80 → 80). The load balancer has no health probe (az makes none): every member of the pool is in
rotation. Then the set is scaled to 0 and everything timed is driven over ARM's REST API.

How an instance's httpd starts (`--start`): by default its custom data, a `#!/bin/sh` script that kumo
starts through the guest agent at every boot of the tiny image (it has no cloud-init), before the
instance is reported Succeeded, as cloud-init would on Azure. With `--start run-command` there is no
custom data and the benchmark starts httpd through `POST …/virtualMachines/{id}/runCommand` the moment
each instance is Succeeded (in parallel threads, polled every 0.1 s): what one would do without it.

1. Scale-out 0 → N (N=20 by default; `--scale-rounds` times, scaling back to 0 in between): the clock
   starts just before `PATCH {"sku": {"capacity": N}}`. A thread lists the instances every 0.25 s
   (when each turned Succeeded). Meanwhile 8 threads GET the frontend's port 80 on new connections, so
   the 5-tuple hash picks a backend at random each time; an instance counts as serving when the
   frontend first answers with its hostname. Reported: PATCH → the set's provisioningState Succeeded
   (what `az vmss scale` waits for), PATCH → the frontend has answered with all N hostnames, and per
   instance the p50 (min–max) of PATCH → instance Succeeded, (→ its run-command answered,) → first
   served through the frontend; and the instances' `kumo.bootPath`. kumo's warnings of restores from
   the golden that fell back to a cold boot are copied from its log.
2. Throughput with wrk (same settings for every path: -t1 -d5s, at -c16 and at -c64; GET / of a 16-byte
   page; busybox httpd answers HTTP/1.0 and closes, so every request is a new connection and a new
   load-balancing decision), once the set's CPU has settled (< 5 % over 10 s): requests/s through the
   frontend's port 80 (all N instances) and through `direct80`'s port of the lowest-numbered instance,
   in interleaved rounds (LB, direct, direct, LB …, both concurrencies in each round), median
   (min..max), with wrk's p50 latency and how busy the host's CPUs were (/proc/stat) during the rounds.
   Then the set is scaled to 1 (the lowest-numbered instance stays, per the Default scale-in policy)
   and the same is done again: the load balancer over that one backend against the direct path to the
   same backend. That ratio isolates what the load-balancing rule costs over a plain DNAT; the first
   one is what N TCG guests sharing this host's cores give against one of them.
3. Autoscale, on the set at 1 instance: an autoscale setting (minimum 1, maximum 3, default 1) with
   one rule, Percentage CPU Average > `--threshold` over a `--window` window of `--grain` grains (kumo
   accepts windows and grains shorter than Azure's PT5M / PT1M as an extension), scale out by 1,
   cooldown `--cooldown`. Once the set's CPU is quiet and the setting has been seen not to act for a
   window and two evaluator periods, a busy loop is started in the instance through run-command
   (`setsid sh -c 'while :; do :; done' &`); the clock starts just before that POST (the loop starts
   inside it; its answer comes later, the guest's one vCPU being busy). Reported: load → the set's
   capacity raised (the autoscale decision, seen by polling every 0.25 s), → the new instance
   Succeeded, → it serves through the frontend (its httpd started as in step 1; the frontend watchers
   start only once the capacity is raised, so no HTTP load adds to the busy instance's CPU before),
   with the configured window, the evaluator's period (KUMO_AUTOSCALE_SECONDS) and the metrics'
   sampling period (KUMO_METRICS_SAMPLE_SECONDS), and autoscale's own reason from the activity log (the
   window's average it saw). The default threshold is low (10 %) because under TCG on a shared 2-core
   host a guest's busy loop got anywhere from 25 % to ~90 % of a host core while this was written (an
   idle tiny guest: < 1 %); the rule fires once the window's average passes it, that is once
   threshold / busy level of the window is loaded, not the whole window. `--autoscale-rounds` (3)
   reactions are measured, median (min–max); between rounds the setting is deleted, the loop
   killed (run-command) and the set scaled back to its one instance.

Progress goes to stderr, the markdown table to stdout (with the load average before and after each
step: other engineers' tests may share the host). Everything (the resource group and so the set's
QEMUs and the load balancer's host rules, the kumo, its data dir) is removed at the end, also on
failure or Ctrl-C. About 8 minutes on 2 cores under TCG. Usage: .venv/bin/python bench/vmss.py
[--instances 20] [--scale-rounds 2] [--rounds 5] [--seconds 5] [--connections 16 64] [--threshold 10]
[--window PT10S] [--autoscale-rounds 3] [--start custom-data] [--skip-throughput] [--skip-autoscale]"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import KumoServer, free_port, public_pool  # noqa: E402
from tests.vmlib import new_ssh_key, qemu_pids  # noqa: E402

COMPUTE = {"api-version": "2024-11-01"}
NETWORK = {"api-version": "2024-05-01"}
INSIGHTS = {"api-version": "2022-10-01"}
METRICS = {"api-version": "2018-01-01"}
RG_API = {"api-version": "2024-11-01"}
RG = "benchvmss"
SET = "ss"
DIRECT_RULE = "direct80"
DIRECT_PORTS = (8000, 8999)
SERVE = "mkdir -p /www && hostname > /www/index.html && httpd -p 80 -h /www"  # busybox httpd daemonises
BUSY = "setsid sh -c 'while :; do :; done' >/dev/null 2>&1 </dev/null &"  # setsid: outlives the run-command
UNBUSY = ("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q 'while :; do :; done' "
          "&& kill ${p#/proc/}; done; true")
WATCHERS = 8


def say(msg: str) -> None:
    print(f"[vmss] {msg}", file=sys.stderr, flush=True)


def load1() -> float:
    return os.getloadavg()[0]


# -- a kumo with an environment of its own ------------------------------------------------------------------
@dataclasses.dataclass
class BenchServer(KumoServer):
    """KumoServer whose `kumo up` (and so the server it detaches) gets `extra_env` on top of ours."""

    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}

    def run_info(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "run.json").read_text()))


def start_bench_server(env: dict[str, str]) -> BenchServer:
    data_dir = Path(tempfile.mkdtemp(prefix="kumo-bench-vmss-"))
    server = BenchServer(data_dir, free_port(), ("--public-ip-pool", public_pool()), extra_env=env)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return server


# -- HTTP to the guests -------------------------------------------------------------------------------------
def fetch(host: str, port: int, timeout: float = 0.5) -> str | None:
    """One HTTP/1.0 GET / on a new connection: the body of a 200 (an instance's hostname), else None."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.") and head[9:12] == b"200":
        return body.decode(errors="replace").strip()
    return None


class FrontendWatcher:
    """Threads GETting the frontend on new connections: when each hostname was first answered with."""

    def __init__(self, host: str, port: int = 80, threads: int = WATCHERS) -> None:
        self.host, self.port, self.threads = host, port, threads
        self.first: dict[str, float] = {}  # hostname -> perf_counter
        self.ok = self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> FrontendWatcher:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            name = fetch(self.host, self.port)
            now = time.perf_counter()
            with self._lock:
                if name is None:
                    self.failed += 1
                else:
                    self.ok += 1
                    self.first.setdefault(name, now)
            if name is None:
                self._stop.wait(0.02)  # refused or unanswered: leave the booting guests the CPU

    def seen(self, names: Iterable[str]) -> bool:
        with self._lock:
            return all(n in self.first for n in names)


# -- the scale set, driven over REST ------------------------------------------------------------------------
@dataclasses.dataclass
class Instance:
    id: str
    name: str  # computerName: what its httpd serves
    seen: float  # perf_counter when first listed
    succeeded: float | None = None
    httpd: float | None = None  # its run-command answered
    error: str | None = None
    boot_path: str | None = None
    boot_seconds: float | None = None


class ScaleSet:
    def __init__(self, server: BenchServer, key: Path) -> None:
        self.server = server
        self.key = key
        self.token = server.token()
        self.c = server.http(self.token)
        self.c.timeout = 120
        self.sub = server.identity["subscription_id"]
        self.rg = f"/subscriptions/{self.sub}/resourceGroups/{RG}"
        self.path = f"{self.rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{SET}"
        self.lb = f"{self.rg}/providers/Microsoft.Network/loadBalancers/{SET}LB"
        self.setting = f"{self.rg}/providers/Microsoft.Insights/autoscalesettings/{SET}-cpu"
        self.frontend = ""
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        """A client of the calling thread's own (closed by `close`)."""
        c: httpx.Client | None = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = self.server.http(self.token)
            c.timeout = 120
            with self._lock:
                self._clients.append(c)
        return c

    def close(self) -> None:
        with self._lock:
            for c in [self.c, *self._clients]:
                with contextlib.suppress(Exception):
                    c.close()
            self._clients.clear()

    def setup(self, custom_data: bool) -> None:
        srv = self.server
        srv.az("group", "create", "-n", RG, "-l", "local")
        extra: list[str] = []
        if custom_data:
            script = self.key.parent / "serve.sh"
            script.write_text(f"#!/bin/sh\n{SERVE}\n")
            extra = ["--custom-data", str(script)]
        srv.az("vmss", "create", "-g", RG, "-n", SET, "--image", "Tiny", "--instance-count", "1",
               "--vm-sku", "Standard_B1s", "--admin-username", "azureuser",
               "--ssh-key-values", str(self.key.with_suffix(".pub")), "--orchestration-mode", "Uniform",
               "--lb-sku", "Standard", *extra, timeout=900)
        srv.az("network", "nsg", "rule", "create", "-g", RG, "--nsg-name", f"{SET}NSG", "-n", "http",
               "--priority", "1001", "--destination-port-ranges", "80", "--access", "Allow", "--protocol", "Tcp")
        srv.az("network", "lb", "inbound-nat-rule", "create", "-g", RG, "--lb-name", f"{SET}LB", "-n", DIRECT_RULE,
               "--protocol", "Tcp", "--frontend-ip-name", "loadBalancerFrontEnd", "--backend-pool-name",
               f"{SET}LBBEPool", "--frontend-port-range-start", str(DIRECT_PORTS[0]),
               "--frontend-port-range-end", str(DIRECT_PORTS[1]), "--backend-port", "80")
        self.frontend = srv.az("network", "public-ip", "show", "-g", RG, "-n", f"{SET}LBPublicIP")["ipAddress"]

    def get(self) -> dict[str, Any]:
        r = self.client().get(self.path, params=COMPUTE)
        r.raise_for_status()
        return dict(r.json())

    def instances(self) -> list[dict[str, Any]]:
        r = self.client().get(f"{self.path}/virtualMachines", params=COMPUTE)
        r.raise_for_status()
        return list(r.json()["value"])

    def patch_capacity(self, n: int) -> None:
        r = self.client().patch(self.path, params=COMPUTE, json={"sku": {"capacity": n}})
        if r.status_code not in (200, 202):
            raise RuntimeError(f"PATCH capacity {n}: {r.status_code} {r.text[:300]}")

    def wait_capacity(self, n: int, timeout: float = 600) -> None:
        """Until the set is Succeeded with n instances, all Succeeded."""
        t0 = time.perf_counter()
        while True:
            body = self.get()
            state = body["properties"]["provisioningState"]
            if state == "Failed":
                raise RuntimeError(f"scale set failed: {json.dumps(body)[:400]}")
            if state == "Succeeded":
                got = self.instances()
                if len(got) == n and all(i["properties"]["provisioningState"] == "Succeeded" for i in got):
                    return
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"the set did not reach {n} instances within {timeout:.0f} s")
            time.sleep(0.25)

    def scale(self, n: int) -> float:
        t0 = time.perf_counter()
        self.patch_capacity(n)
        self.wait_capacity(n)
        return time.perf_counter() - t0

    def run_command(self, instance: str, script: str, tries: int = 20) -> str:
        """POST …/runCommand and poll its Location every 0.1 s; the message, or RuntimeError."""
        c = self.client()
        for attempt in range(tries):
            r = c.post(f"{self.path}/virtualMachines/{instance}/runCommand", params=COMPUTE,
                       json={"commandId": "RunShellScript", "script": [script]})
            if r.status_code == 409 and attempt + 1 < tries:  # not running yet
                time.sleep(0.5)
                continue
            if r.status_code != 202:
                raise RuntimeError(f"runCommand on {instance}: {r.status_code} {r.text[:300]}")
            location = r.headers["location"]
            while True:
                g = c.get(location)
                if g.status_code == 200:
                    status = g.json()["value"][0]
                    if status["code"] != "ProvisioningState/succeeded":
                        raise RuntimeError(f"runCommand on {instance}: {status['message'][:300]}")
                    return str(status["message"])
                if g.status_code != 202:
                    raise RuntimeError(f"runCommand on {instance}: {g.status_code} {g.text[:300]}")
                time.sleep(0.1)
        raise RuntimeError(f"runCommand on {instance}: still not running")

    def instance_view(self, instance: str) -> dict[str, Any]:
        r = self.client().get(f"{self.path}/virtualMachines/{instance}/instanceView", params=COMPUTE)
        r.raise_for_status()
        return dict(r.json().get("kumo") or {})

    def direct_port(self, instance: str) -> int:
        """`direct80`'s frontend port for an instance, from the load balancer's pool (where Azure shows it)."""
        r = self.client().get(self.lb, params=NETWORK)
        r.raise_for_status()
        for pool in r.json()["properties"]["backendAddressPools"]:
            for a in pool["properties"].get("loadBalancerBackendAddresses") or []:
                cfg = a["properties"]["networkInterfaceIPConfiguration"]["id"]
                if f"/virtualmachines/{instance}/networkinterfaces/" in cfg.lower():
                    for m in a["properties"].get("inboundNatRulesPortMapping") or []:
                        if m["inboundNatRuleName"] == DIRECT_RULE:
                            return int(m["frontendPort"])
        raise RuntimeError(f"no {DIRECT_RULE} port for instance {instance}")

    def set_cpu(self, seconds: float, grain: str = "PT5S") -> list[float | None]:
        r = self.client().get(f"{self.path}/providers/microsoft.insights/metrics", params={
            **METRICS, "metricnames": "Percentage CPU", "interval": grain, "aggregation": "Average",
            "timespan": f"PT{max(1, round(seconds))}S"})
        r.raise_for_status()
        series = r.json()["value"][0]["timeseries"]
        return [d.get("average") for d in series[0]["data"]] if series else []

    def autoscale_events(self, since: float) -> list[dict[str, Any]]:
        start = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        r = self.client().get(f"/subscriptions/{self.sub}/providers/microsoft.insights/eventtypes/management/values",
                              params={"api-version": "2015-04-01", "$filter": f"eventTimestamp ge '{start}' and "
                                      f"resourceGroupName eq '{RG}'"})
        if r.status_code != 200:
            return []
        return [e for e in r.json().get("value", []) if (e.get("category") or {}).get("value") == "Autoscale"]

    def delete_group(self) -> bool:
        """Delete the resource group (the set, its instances and the load balancer with it); True when gone."""
        with self.server.http(self.token) as c:
            c.timeout = 120
            if c.get(self.rg, params=RG_API).status_code == 404:
                return True
            r = c.delete(self.rg, params=RG_API)
            if r.status_code not in (200, 202, 204):
                say(f"DELETE {self.rg}: {r.status_code} {r.text[:200]}")
                return False
            for _ in range(2400):
                if c.get(self.rg, params=RG_API).status_code == 404:
                    return True
                time.sleep(0.25)
            return False


# -- 1. scale-out 0 → N -------------------------------------------------------------------------------------
@dataclasses.dataclass
class ScaleOut:
    n: int
    patch: float | None = None  # PATCH answered
    succeeded: float | None = None  # the set's provisioningState Succeeded
    serving: float | None = None  # the frontend answered with every instance's hostname
    instances: list[Instance] = dataclasses.field(default_factory=list)
    served: dict[str, float] = dataclasses.field(default_factory=dict)  # hostname -> seconds
    load: tuple[float, float] = (0.0, 0.0)
    error: str | None = None


class Starter:
    """Lists the set's instances every 0.25 s and (`start_app`: no custom data started it) starts httpd in
    each through run-command the moment it is Succeeded."""

    def __init__(self, ss: ScaleSet, t0: float, known: set[str], workers: int, start_app: bool) -> None:
        self.ss, self.t0, self.known, self.start_app = ss, t0, known, start_app
        self.found: dict[str, Instance] = {}
        self.set_state: str | None = None
        self.set_succeeded: float | None = None
        self.capacity: int | None = None
        self.capacity_at: dict[int, float] = {}  # capacity -> when first seen
        self.pool = ThreadPoolExecutor(max(1, workers))
        self.futures: list[Future[None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: str | None = None

    def start(self) -> Starter:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as e:  # noqa: BLE001 - one bad poll (a busy host) is retried
                self.error = str(e)[:200]
            self._stop.wait(0.25)

    def _poll(self) -> None:
        body = self.ss.get()
        now = time.perf_counter()
        self.set_state = body["properties"]["provisioningState"]
        cap = int(body["sku"]["capacity"])
        self.capacity = cap
        self.capacity_at.setdefault(cap, now)
        for item in self.ss.instances():
            iid = item["instanceId"]
            if iid in self.known:
                continue
            inst = self.found.get(iid)
            if inst is None:
                inst = self.found[iid] = Instance(iid, item["properties"]["osProfile"]["computerName"], now)
            if inst.succeeded is None and item["properties"]["provisioningState"] == "Succeeded":
                inst.succeeded = time.perf_counter()
                if self.start_app:
                    self.futures.append(self.pool.submit(self._serve, inst))
        if self.set_state == "Succeeded" and self.set_succeeded is None and len(self.found) == cap:
            self.set_succeeded = now

    def _serve(self, inst: Instance) -> None:
        try:
            self.ss.run_command(inst.id, SERVE)
            inst.httpd = time.perf_counter()
        except Exception as e:  # noqa: BLE001 - reported per instance
            inst.error = str(e)[:200]
            say(f"instance {inst.id}: {inst.error}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.pool.shutdown(wait=True)


def scale_out(ss: ScaleSet, n: int, timeout: float, start_app: bool) -> ScaleOut:
    result = ScaleOut(n)
    l0 = load1()
    with FrontendWatcher(ss.frontend) as watcher:
        t0 = time.perf_counter()
        ss.patch_capacity(n)
        result.patch = time.perf_counter() - t0
        starter = Starter(ss, t0, set(), n, start_app).start()  # after the PATCH: no poll reads the old state
        try:
            while True:
                names = [i.name for i in starter.found.values()]
                if len(names) == n and watcher.seen(names) and starter.set_succeeded is not None:
                    break
                if time.perf_counter() - t0 > timeout:
                    result.error = (f"after {timeout:.0f} s: {len(names)} instances listed, "
                                    f"{sum(i.succeeded is not None for i in starter.found.values())} Succeeded, "
                                    f"{len(set(names) & set(watcher.first))} serving; set {starter.set_state}")
                    break
                time.sleep(0.05)
        finally:
            starter.stop()
    result.instances = sorted(starter.found.values(), key=lambda i: int(i.id) if i.id.isdigit() else 0)
    if starter.set_succeeded is not None:
        result.succeeded = starter.set_succeeded - t0
    result.served = {name: t - t0 for name, t in watcher.first.items()}
    if result.error is None:
        result.serving = max(result.served[i.name] for i in result.instances)
    for inst in result.instances:
        inst.seen -= t0
        inst.succeeded = inst.succeeded - t0 if inst.succeeded is not None else None
        inst.httpd = inst.httpd - t0 if inst.httpd is not None else None
        with contextlib.suppress(Exception):
            view = ss.instance_view(inst.id)
            inst.boot_path, inst.boot_seconds = view.get("bootPath"), view.get("bootSeconds")
    result.load = (l0, load1())
    say(f"scale-out 0 → {n}: Succeeded {fmt(result.succeeded)}, all serving {fmt(result.serving)}; "
        f"frontend GETs {watcher.ok} answered, {watcher.failed} refused or timed out"
        f"{'; ' + result.error if result.error else ''}")
    return result


# -- 2. throughput ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Wrk:
    rps: float
    p50_ms: float | None
    errors: int  # socket errors + non-2xx
    requests: int
    host_busy: float  # share of the host's CPU time not idle during the round, 0..1


def cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all the host's CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def wrk(url: str, seconds: int, connections: int, threads: int) -> Wrk:
    idle0, total0 = cpu_times()
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    idle1, total1 = cpu_times()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk {url}: no result:\n{out[-400:]}")
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p50_ms = float(p50.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)] if p50 else None
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
    return Wrk(float(rps.group(1)), p50_ms, errors + (int(non2xx.group(1)) if non2xx else 0),
               int(total.group(1)) if total else 0, busy)


@dataclasses.dataclass
class Throughput:
    backends: int
    connections: int
    lb: list[Wrk]
    direct: list[Wrk]
    load: tuple[float, float]
    spread: dict[str, int]  # who answered 6 × backends GETs through the frontend before wrk

    @staticmethod
    def med(runs: list[Wrk]) -> float:
        return statistics.median(r.rps for r in runs)


def wait_quiet(ss: ScaleSet, below: float, seconds: float, grain: str = "PT5S", timeout: float = 120) -> list[float]:
    """Until the set's Percentage CPU in each whole grain of the last `seconds` is below `below`: those values."""
    step = seconds_of(grain)
    t0 = time.perf_counter()
    while True:
        series = ss.set_cpu(seconds + 2 * step, grain)
        values = [v for v in series[:-1][-math.ceil(seconds / step):] if v is not None]
        if values and max(values) < below:
            return values
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"the set's Percentage CPU did not fall below {below:g} % within {timeout:.0f} s: "
                               f"{values}")
        time.sleep(2)


def throughput(ss: ScaleSet, instance: str, backends: int, rounds: int, seconds: int, connections: list[int],
               threads: int) -> list[Throughput]:
    port = ss.direct_port(instance)
    lb_url, direct_url = f"http://{ss.frontend}:80/", f"http://{ss.frontend}:{port}/"
    quiet = wait_quiet(ss, 5, 10)  # the boots (or the last rounds) done: idle guests
    say(f"  the set's CPU over the last 10 s: {[round(v, 1) for v in quiet]} %")
    spread: dict[str, int] = {}
    for _ in range(6 * backends):
        name = fetch(ss.frontend, 80, timeout=2) or "<error>"
        spread[name] = spread.get(name, 0) + 1
    expected = {i["properties"]["osProfile"]["computerName"] for i in ss.instances()}
    names = {fetch(ss.frontend, port, timeout=2) for _ in range(3)}
    say(f"throughput, {backends} backend(s): {len(expected & set(spread))} of {len(expected)} hostnames in "
        f"{6 * backends} GETs through the frontend (missing {sorted(expected - set(spread))}, "
        f"{spread.get('<error>', 0)} errors; fewest answers from one: {min(spread.values())}); "
        f"direct port {port} answers as {names}")
    if len(names) != 1 or None in names:
        raise RuntimeError(f"the direct path {direct_url} does not answer as one instance: {names}")
    l0 = load1()
    out = {c: Throughput(backends, c, [], [], (0.0, 0.0), spread) for c in connections}
    for c in connections:  # warm-up, not counted
        wrk(lb_url, 1, c, threads)
        wrk(direct_url, 1, c, threads)
    for r in range(rounds):
        for c in connections:
            order = [("lb", lb_url), ("direct", direct_url)]
            for label, url in order if r % 2 == 0 else reversed(order):
                got = wrk(url, seconds, c, threads)
                (out[c].lb if label == "lb" else out[c].direct).append(got)
                say(f"  round {r + 1}/{rounds} c{c:<3} {label:<6} {got.rps:8.1f} req/s  p50 "
                    f"{fmt(got.p50_ms, 'ms')}  errors {got.errors}  host CPU {got.host_busy:.0%}")
    for t in out.values():
        t.load = (l0, load1())
    return list(out.values())


# -- 3. autoscale -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Autoscale:
    available: bool
    reason: str = ""
    decided: float | None = None  # load → capacity raised
    succeeded: float | None = None  # → the new instance Succeeded
    httpd: float | None = None  # → its run-command answered
    serving: float | None = None  # → served through the frontend
    load_cmd: float | None = None  # the busy loop's run-command, POST → answered
    description: str = ""
    cpu_before: list[float | None] = dataclasses.field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)
    error: str | None = None


def autoscale_body(target: str, threshold: float, grain: str, window: str, cooldown: str) -> dict[str, Any]:
    rule = {"metricTrigger": {"metricName": "Percentage CPU", "metricResourceUri": target, "timeGrain": grain,
                              "statistic": "Average", "timeWindow": window, "timeAggregation": "Average",
                              "operator": "GreaterThan", "threshold": threshold},
            "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": "1", "cooldown": cooldown}}
    return {"location": "local", "properties": {
        "profiles": [{"name": "bench", "capacity": {"minimum": "1", "maximum": "3", "default": "1"},
                      "rules": [rule]}],
        "enabled": True, "targetResourceUri": target}}


def seconds_of(duration: str) -> float:
    m = re.fullmatch(r"PT(?:(\d+)M)?(?:(\d+)S)?", duration.upper())
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"{duration}: give PT<m>M<s>S, e.g. PT10S or PT1M")
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def autoscale(ss: ScaleSet, instance: str, threshold: float, grain: str, window: str, cooldown: str,
              period: float, timeout: float, start_app: bool) -> Autoscale:
    result = Autoscale(True)
    win = seconds_of(window)
    c = ss.client()
    try:  # quiet first: the throughput rounds just kept this instance busy
        values = wait_quiet(ss, threshold / 2, win, grain)
    except httpx.HTTPStatusError as e:
        return Autoscale(False, f"the scale set's Percentage CPU: {e.response.status_code} {e.response.text[:200]}")
    except TimeoutError as e:
        return Autoscale(True, error=str(e))
    result.cpu_before = values
    r = c.put(ss.setting, params=INSIGHTS, json=autoscale_body(ss.path, threshold, grain, window, cooldown))
    if r.status_code not in (200, 201):
        return Autoscale(False, f"PUT autoscale setting: {r.status_code} {r.text[:200]}")
    say(f"autoscale: setting made; the set's CPU over the last window {[round(v, 1) for v in values]} %; "
        f"checking it does not act before the load")
    time.sleep(win + 2 * period)
    if int(ss.get()["sku"]["capacity"]) != 1:
        return Autoscale(True, error="the setting scaled out before any load (the set's CPU was above the threshold)")
    l0 = load1()
    wall0 = time.time()
    before = {i["instanceId"] for i in ss.instances()}
    with contextlib.ExitStack() as stack:
        t0 = time.perf_counter()  # the loop starts within this run-command (its answer comes later)
        starter = Starter(ss, t0, before, 3, start_app).start()
        stack.callback(starter.stop)
        ss.run_command(instance, BUSY)
        result.load_cmd = time.perf_counter() - t0
        say(f"autoscale: busy loop started in instance {instance} (its run-command answered after "
            f"{result.load_cmd:.2f} s)")
        watcher: FrontendWatcher | None = None  # no HTTP load on the busy instance before the decision
        while True:
            new = list(starter.found.values())
            if watcher is None and (starter.capacity or 1) > 1:
                result.decided = starter.capacity_at[starter.capacity] - t0
                say(f"autoscale: capacity {starter.capacity} after {result.decided:.2f} s")
                watcher = stack.enter_context(FrontendWatcher(ss.frontend))
            if watcher is not None and new and watcher.seen([new[0].name]) and new[0].succeeded is not None:
                break  # served (custom data may serve before the row says Succeeded) and Succeeded
            if time.perf_counter() - t0 > timeout:
                result.error = f"no new instance serving within {timeout:.0f} s (capacity {starter.capacity})"
                break
            time.sleep(0.05)
    c.delete(ss.setting, params=INSIGHTS)  # no further actions: the next round (or the end) starts clean
    first = min(starter.found.values(), key=lambda i: i.seen, default=None)
    if first is not None:
        result.succeeded = first.succeeded - t0 if first.succeeded is not None else None
        result.httpd = first.httpd - t0 if first.httpd is not None else None
        if watcher is not None and first.name in watcher.first:
            result.serving = watcher.first[first.name] - t0
    events = ss.autoscale_events(wall0 - 1)  # this round's only (whole seconds)
    ups = [e for e in events if "Scaleup" in (e.get("operationName") or {}).get("value", "")]
    if ups:
        result.description = str(ups[-1].get("description") or "")
    result.load = (l0, load1())
    return result


def reset(ss: ScaleSet, instance: str) -> None:
    """After an autoscale round: the busy loop stopped, the set back to its one instance."""
    ss.run_command(instance, UNBUSY)
    ss.scale(1)
    left = [i["instanceId"] for i in ss.instances()]
    if left != [instance]:
        raise RuntimeError(f"after the scale-in to 1 the set holds {left}, not instance {instance}")


# -- the table ----------------------------------------------------------------------------------------------
def fmt(v: float | None, unit: str = "s") -> str:
    return "—" if v is None else f"{v:.2f} {unit}" if unit else f"{v:.2f}"


def spread_of(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def loads(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.1f}→{pair[1]:.1f}"


def table(outs: list[ScaleOut], scale_ins: list[tuple[str, float]], tps: list[Throughput],
          autos: list[Autoscale], args: argparse.Namespace, env: dict[str, str], wrk_missing: bool) -> None:
    out = print
    out("| step | value | notes |")
    out("|---|---:|---|")
    for k, r in enumerate(outs, 1):
        head = f"scale-out 0 → {r.n}" + (f" (round {k})" if len(outs) > 1 else "")
        if r.error:
            out(f"| {head} | FAILED | {r.error} |")
        paths: dict[str, int] = {}
        for i in r.instances:
            paths[i.boot_path or "?"] = paths.get(i.boot_path or "?", 0) + 1
        boot = med([i.boot_seconds for i in r.instances])
        out(f"| {head}: PATCH → set Succeeded | {fmt(r.succeeded)} | PATCH answered in {fmt(r.patch)}; "
            f"bootPath {', '.join(f'{k2} ×{v}' for k2, v in sorted(paths.items()))}, kumo bootSeconds p50 "
            f"{fmt(boot)}; load {loads(r.load)} |")
        out(f"| {head}: PATCH → all {r.n} serving behind the frontend | **{fmt(r.serving)}** | "
            f"the frontend answered with every instance's hostname |")
        ok = [i for i in r.instances if i.succeeded is not None]
        out(f"| per instance p50 (min–max): PATCH → instance Succeeded | {spread_of([i.succeeded for i in ok])} | "
            f"{len(ok)} of {r.n} |")
        started = [i.httpd for i in r.instances if i.httpd is not None]
        rc = [i.httpd - i.succeeded for i in r.instances if i.httpd is not None and i.succeeded is not None]
        if started:
            out(f"| per instance: PATCH → httpd started (run-command answered) | {spread_of(started)} | "
                f"run-command alone p50 {fmt(med(rc))} |")
        served = [r.served[i.name] for i in r.instances if i.name in r.served]
        gap = [r.served[i.name] - i.succeeded for i in r.instances if i.name in r.served and i.succeeded is not None]
        out(f"| per instance: PATCH → first served through the frontend | {spread_of(served)} | "
            f"instance Succeeded → served p50 {fmt(med(gap))} ("
            f"{'the run-command' if started else 'the custom-data script running in the guest'}, then the "
            f"watchers' random pick of backend) |")
    for what, secs in scale_ins:
        out(f"| {what}: PATCH → set Succeeded, instances gone | {fmt(secs)} | |")
    if wrk_missing:
        out("| throughput | n/a | wrk is not installed (apt-get install wrk) |")
    for t in tps:
        lb, direct = Throughput.med(t.lb), Throughput.med(t.direct)
        plural = "s" if t.backends > 1 else ""
        settings = f"wrk -t{args.threads} -c{t.connections} -d{args.seconds}s, {len(t.lb)} interleaved rounds"
        out(f"| LB, {t.backends} backend{plural}, -c{t.connections}: req/s median (min..max) | {lb:,.0f} | "
            f"{min(x.rps for x in t.lb):,.0f}..{max(x.rps for x in t.lb):,.0f}; p50 latency "
            f"{fmt(med([x.p50_ms for x in t.lb]), 'ms')}; errors {sum(x.errors for x in t.lb)}; host CPU busy "
            f"{statistics.median(x.host_busy for x in t.lb):.0%}; {settings}; before: "
            f"{len([k for k in t.spread if k != '<error>'])} hostnames in {sum(t.spread.values())} GETs; "
            f"load {loads(t.load)} |")
        out(f"| direct to one instance (NAT rule to its port 80), -c{t.connections} | {direct:,.0f} | "
            f"{min(x.rps for x in t.direct):,.0f}..{max(x.rps for x in t.direct):,.0f}; p50 latency "
            f"{fmt(med([x.p50_ms for x in t.direct]), 'ms')}; errors {sum(x.errors for x in t.direct)}; host CPU "
            f"busy {statistics.median(x.host_busy for x in t.direct):.0%} |")
        note = "the same backend both ways: the load-balancing rule's own cost" if t.backends == 1 else \
            f"{t.backends} TCG guests against one"
        out(f"| **ratio LB / direct, {t.backends} backend{plural}, -c{t.connections}** | **{lb / direct:.3f}** | "
            f"{note} |")
    if autos:
        cfg = (f"Percentage CPU > {args.threshold:g} % over {args.window} of {args.grain} grains, cooldown "
               f"{args.cooldown}; evaluator every {env['autoscale every']}, metrics sampled every "
               f"{env['metrics every']}")
        done = [a for a in autos if a.available and a.decided is not None]
        if not autos[0].available:
            out(f"| autoscale reaction | n/a (autoscale not available) | {autos[0].reason} |")
        for a in autos:
            if a.available and a.decided is None:
                out(f"| autoscale reaction | FAILED | {a.error}; {cfg} |")
        if done:
            def row(what: str, values: list[float | None], note: str, bold: bool = False) -> None:
                got = [v for v in values if v is not None]
                value = spread_of(got) if len(got) > 1 else fmt(got[0] if got else None)
                out(f"| autoscale: load → {what} | {f'**{value}**' if bold else value} | "
                    f"{' / '.join(fmt(v) for v in values)} in the {len(values)} rounds{note} |")
            rounds = f", median (min–max) of {len(done)} rounds" if len(done) > 1 else ""
            row(f"capacity raised (the decision){rounds}", [a.decided for a in done],
                f"; {cfg}; load {', '.join(loads(a.load) for a in done)}")
            row("new instance Succeeded", [a.succeeded for a in done], "")
            row("new instance serving behind the frontend", [a.serving for a in done],
                f"; window {args.window} = {seconds_of(args.window):.0f} s; httpd started by "
                f"{'run-command' if args.start == 'run-command' else 'custom data'}"
                + "".join(f"; {a.error}" for a in done if a.error), bold=True)
            seen = [m.group(1) if (m := re.search(r" was ([\d.]+) ", a.description)) else "?" for a in done]
            if any(a.description for a in done):
                out(f"| autoscale's own reason (activity log) | | \"Percentage CPU Average over {args.window} was "
                    f"{' / '.join(seen)} > {args.threshold:g}: scale out from 1 to 2\" |")
    out("")
    info = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(),
            "memory": f"{meminfo_kib('MemTotal') / 1024 / 1024:.1f} GiB", **{k: v for k, v in env.items()
                                                                          if k not in ("autoscale every",
                                                                                       "metrics every")}}
    out(" ".join(f"{k}={v}" for k, v in info.items()))


def med(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def meminfo_kib(field: str) -> int:
    return next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith(field + ":"))


@contextlib.contextmanager
def ssh_key() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kumo-bench-vmsskey-"))
    try:
        yield new_ssh_key(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def golden_fallbacks(server: BenchServer) -> list[str]:
    """kumo's warnings of VMs that cold-booted though a golden snapshot could have served them."""
    log = server.data_dir / "kumo.log"
    if not log.exists():
        return []
    return [line.strip() for line in log.read_text(errors="replace").splitlines()
            if "golden snapshot" in line and ("cold boot" in line or "failed" in line)]


def stop_kumo(server: BenchServer, clean: bool) -> None:
    site = server.run_info().get("network_site") if (server.data_dir / "run.json").exists() else None
    with contextlib.suppress(Exception):
        server.stop()
    if not clean:
        say(f"the resource group could not be deleted: keeping {server.data_dir}")
        return
    shutil.rmtree(server.data_dir, ignore_errors=True)
    if site is not None:
        left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(f"kumo{site}-") or n.startswith(f"kumo{site}g")]
        if left:
            say(f"note: namespaces of kumo site {site} left after the group was deleted: {left}")
        if qemu_pids(f"kumo{site}v-"):
            say(f"note: QEMU processes of kumo site {site} are still running")


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def first_instance(ss: ScaleSet) -> str:
    return sorted((i["instanceId"] for i in ss.instances()), key=int)[0]


def steps(ss: ScaleSet, args: argparse.Namespace, n: int, outs: list[ScaleOut], scale_ins: list[tuple[str, float]],
          tps: list[Throughput]) -> str | None:
    """Steps 1 and 2 (the set is left at 1 instance); what failed, if anything (the table shows the rest)."""
    measure = not args.skip_throughput and shutil.which("wrk") is not None
    try:
        for k in range(args.scale_rounds):
            if k:
                say(f"scale-in {n} → 0")
                scale_ins.append((f"scale-in {n} → 0", ss.scale(0)))
            say(f"scale-out 0 → {n}, round {k + 1}/{args.scale_rounds}")
            outs.append(scale_out(ss, n, args.timeout, args.start == "run-command"))
            if outs[-1].error:
                raise RuntimeError(f"scale-out failed: {outs[-1].error}")
        first = first_instance(ss)
        if measure:
            say(f"throughput: {n} backends against instance {first} directly")
            tps += throughput(ss, first, n, args.rounds, args.seconds, args.connections, args.threads)
        say(f"scale-in {n} → 1")
        scale_ins.append((f"scale-in {n} → 1", ss.scale(1)))
        left = [i["instanceId"] for i in ss.instances()]
        if left != [first]:
            raise RuntimeError(f"after the scale-in to 1 the set holds {left}, not instance {first}")
        if measure:
            say(f"throughput: the load balancer over instance {first} alone against it directly")
            tps += throughput(ss, first, 1, args.rounds, args.seconds, args.connections, args.threads)
    except Exception as e:  # noqa: BLE001 - report what was measured, then clean up
        say(f"FAILED: {e}")
        return str(e)[:400]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=20, help="N: scale-out 0 → N, and the LB's backends")
    ap.add_argument("--scale-rounds", type=int, default=2, help="scale-outs 0 → N (back to 0 in between)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a scale-out may take to serve")
    ap.add_argument("--start", choices=["custom-data", "run-command"], default="custom-data",
                    help="how each instance's httpd starts: the model's custom data (a script kumo starts "
                    "through the guest agent at boot) or a run-command the benchmark sends once it is up")
    ap.add_argument("--rounds", type=int, default=5, help="wrk rounds per path (interleaved)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per wrk round")
    ap.add_argument("--connections", type=int, nargs="+", default=[16, 64], help="wrk -c (each, interleaved)")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t")
    ap.add_argument("--threshold", type=float, default=10, help="autoscale: Percentage CPU above which to scale out")
    ap.add_argument("--grain", default="PT5S")
    ap.add_argument("--window", default="PT10S")
    ap.add_argument("--cooldown", default="PT30S")
    ap.add_argument("--autoscale-rounds", type=int, default=3, help="autoscale reactions measured")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-autoscale", action="store_true")
    args = ap.parse_args()
    for d in (args.grain, args.window, args.cooldown):
        seconds_of(d)
    if os.geteuid() != 0:
        sys.exit("bench/vmss.py needs root (kumo's VMs and load balancers: network namespaces, taps, nftables)")
    for tool in ("qemu-system-x86_64", "nft", "ssh-keygen"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/vmss.py needs {tool}")
    wrk_missing = not args.skip_throughput and shutil.which("wrk") is None
    if wrk_missing:
        say("wrk is not installed (apt-get install wrk): the throughput step is skipped")
    signal.signal(signal.SIGTERM, interrupt)
    cores = os.cpu_count() or 1
    n = args.instances
    env = {"KUMO_VM_OVERCOMMIT": str(max(4, math.ceil((n + 1) / cores)))}  # +1: room while one goes
    period = float(os.environ.get("KUMO_AUTOSCALE_SECONDS", "5"))
    sample = float(os.environ.get("KUMO_METRICS_SAMPLE_SECONDS", "5"))
    outs: list[ScaleOut] = []
    scale_ins: list[tuple[str, float]] = []
    tps: list[Throughput] = []
    autos: list[Autoscale] = []
    fallbacks: list[str] = []
    load0 = os.getloadavg()
    accel = "?"
    failure: str | None = None
    with ssh_key() as key:
        say(f"starting kumo ({' '.join(f'{k}={v}' for k, v in env.items())})")
        server = start_bench_server(env)
        ss: ScaleSet | None = None
        clean = False
        try:
            info = server.run_info()
            if info.get("vms_unavailable"):
                sys.exit(f"kumo cannot run VMs here: {info['vms_unavailable']}")
            accel = str(info.get("vm_accelerator"))
            ss = ScaleSet(server, key)
            say("setup with az: the scale set (1 instance: the golden), NSG rule for 80, NAT rule direct80")
            t = time.perf_counter()
            ss.setup(args.start == "custom-data")  # a failure here ends the run: nothing to measure
            say(f"setup took {time.perf_counter() - t:.1f} s; frontend {ss.frontend}; scaling to 0")
            scale_ins.append(("scale-in 1 → 0 (setup)", ss.scale(0)))
            failure = steps(ss, args, n, outs, scale_ins, tps)
            if not args.skip_autoscale and failure is None:
                try:
                    first = first_instance(ss)
                    for k in range(args.autoscale_rounds):
                        if k:
                            reset(ss, first)
                        say(f"autoscale, round {k + 1}/{args.autoscale_rounds}")
                        auto = autoscale(ss, first, args.threshold, args.grain, args.window, args.cooldown, period,
                                         timeout=240, start_app=args.start == "run-command")
                        autos.append(auto)
                        say(f"autoscale: decided {fmt(auto.decided)}, serving {fmt(auto.serving)}"
                            f"{'; ' + (auto.error or auto.reason) if auto.error or auto.reason else ''}")
                        if not auto.available or auto.decided is None:
                            break
                except Exception as e:  # noqa: BLE001 - report what was measured, then clean up
                    say(f"FAILED: {e}")
                    failure = str(e)[:400]
        finally:
            fallbacks[:] = golden_fallbacks(server)
            for line in fallbacks:
                say(f"kumo.log: {line[:300]}")
            say("cleaning up")
            if ss is not None:
                try:
                    clean = ss.delete_group()
                except Exception as e:  # noqa: BLE001 - report and keep the data dir rather than orphan VMs
                    say(f"could not delete the resource group: {e}")
                ss.close()
            else:
                clean = True
            stop_kumo(server, clean)
    load_end = os.getloadavg()
    info_env = {"accelerator": accel, "kernel": platform.release(), "load": f"{load0[0]:.2f}→{load_end[0]:.2f}",
                "start": args.start, **env, "autoscale every": f"{period:g} s", "metrics every": f"{sample:g} s"}
    table(outs, scale_ins, tps, autos, args, info_env, wrk_missing)
    for line in fallbacks:
        print(f"kumo.log: {line[:400]}")
    if failure:
        print(f"\nFAILED: {failure}")
        sys.exit(1)


if __name__ == "__main__":
    main()
