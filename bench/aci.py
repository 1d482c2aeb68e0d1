"""Container instances speed: PUT to a group answering HTTP, a cold image pull, and memory per idle group,
each against podman / skopeo + umoci on the same machine in the same run.

1. Start latency: container groups (nginx, busybox httpd; images cached) created over ARM's REST API, timed
   from the PUT to the first HTTP 200 from the group's public IP on port 80, interleaved with
   `podman run -d -p` of the same image (pulled from kumo's catalog registry into podman storage first),
   timed to the first HTTP 200 on its published port. p50/p90 and the ratio.
2. Cold pull of the catalog's `python` image (Debian + python3): `kumo.images.store.ImageStore.pull` into
   an empty store, against `skopeo copy docker://… oci:` + `umoci unpack`, both from kumo's catalog
   registry over HTTPS; plus kumo's pull through the API (PUT → Running on an empty store, minus the
   same PUT with the image cached).
3. Memory per idle group: N busybox `sleep` groups; kumo's RSS growth and the groups' conmon processes,
   per group, and separately the containers' own memory (cgroup memory.usage_in_bytes).

Starts its own kumo (temporary data dir, free port, root needed). podman runs with its own storage and
config under a temporary dir, inside a network namespace made for the benchmark (its CNI bridge and
port-forwarding rules live there, never in the host's firewall). Everything is removed at the end.
Progress goes to stderr, the table to stdout. Usage: .venv/bin/python bench/aci.py [--groups 20]
[--memory-groups 20] [--pull-rounds 3] [--images nginx busybox]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import KumoServer, start_server  # noqa: E402
from tests.e2e.acilib import container, group_body  # noqa: E402

ACI = {"api-version": "2024-05-01-preview"}
RG_API = {"api-version": "2024-11-01"}
CLONE_NEWNET = 0x40000000
HTTPD = ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"]
COMMANDS: dict[str, list[str] | None] = {"nginx": None, "busybox": HTTPD}  # None: the image's own CMD
PULL_IMAGE = "python"
MIB = 1024 * 1024


def say(msg: str) -> None:
    print(f"[aci] {msg}", file=sys.stderr, flush=True)


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    """Nearest rank, as in bench/network.py: the 18th of 20."""
    return sorted(values)[max(0, math.ceil(len(values) * 0.9) - 1)]


def http_ok(host: str, port: int, timeout: float = 0.5) -> bool:
    """One plain HTTP/1.0 GET /: did the answer start with a 200 status line?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
            head = s.recv(16)
            return head.startswith(b"HTTP/1.") and head[9:12] == b"200"
    except OSError:
        return False


def wait_http(host: str, port: int, t0: float, timeout: float = 60) -> float:
    """Seconds from `t0` (perf_counter) to the first HTTP 200, polling every 5 ms."""
    while True:
        if http_ok(host, port):
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"http://{host}:{port}/ did not answer 200 within {timeout:.0f} s")
        time.sleep(0.005)


def proc_kib(pid: int, field: str, name: str = "status") -> int:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def conmons(marker: str) -> list[int]:
    """conmon processes whose command line names `marker` (a data dir, a podman root)."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"conmon") and marker.encode() in b" ".join(argv):
            found.append(int(p.name))
    return found


def memory_of(pids: list[int]) -> tuple[int, int]:
    """Summed RSS and PSS of `pids`, KiB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            rss += proc_kib(pid, "VmRSS")
            pss += proc_kib(pid, "Pss", "smaps_rollup")
    return rss, pss


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


# -- kumo --------------------------------------------------------------------------------------------------
class Kumo:
    """Container groups in one resource group of a kumo of the benchmark's own, driven over REST."""

    def __init__(self, server: KumoServer) -> None:
        self.server = server
        self.c = server.http()
        self.c.timeout = 60
        self.rg = f"/subscriptions/{server.identity['subscription_id']}/resourceGroups/benchaci"
        self.live: set[str] = set()
        self.c.put(self.rg, params=RG_API, json={"location": "local"}).raise_for_status()

    @property
    def site(self) -> str:
        return (self.server.data_dir / "network-site").read_text().strip()

    def path(self, name: str) -> str:
        return f"{self.rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}"

    def put(self, name: str, image: str, command: list[str] | None, public: bool) -> tuple[str, dict[str, Any]]:
        web = container("c", command, image=image, ports=(80,) if public else (), cpu=1, memory=0.5)
        body = group_body(web, public_ports=(80,) if public else ())
        path = self.path(name)
        r = self.c.put(path, params=ACI, json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"PUT {name}: {r.status_code} {r.text}")
        self.live.add(path)
        return path, r.json()

    def public_ip(self, path: str, answer: dict[str, Any]) -> str:
        ip = (answer["properties"].get("ipAddress") or {}).get("ip")
        while not ip:  # not in the PUT's answer: the first GETs name it
            time.sleep(0.01)
            ip = (self.get(path)["properties"].get("ipAddress") or {}).get("ip")
        return str(ip)

    def get(self, path: str) -> dict[str, Any]:
        r = self.c.get(path, params=ACI)
        r.raise_for_status()
        return r.json()

    def running(self, path: str) -> bool:
        g = self.get(path)
        props = g["properties"]
        if props.get("provisioningState") == "Failed":
            raise RuntimeError(f"{path} failed: {json.dumps(props.get('instanceView'))} "
                               f"{[c['properties'].get('instanceView') for c in props['containers']]}")
        views = [(c["properties"].get("instanceView") or {}).get("currentState") or {} for c in props["containers"]]
        return all(v.get("state") == "Running" for v in views)

    def wait_running(self, path: str, t0: float, timeout: float = 300, poll: float = 0.02) -> float:
        while not self.running(path):
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{path} not Running after {timeout:.0f} s")
            time.sleep(poll)
        return time.perf_counter() - t0

    def delete(self, paths: list[str]) -> list[float]:
        """DELETE each group (one after another) and wait for its 404; seconds each."""
        took = []
        for path in paths:
            t0 = time.perf_counter()
            r = self.c.delete(path, params=ACI)
            if r.status_code not in (200, 202, 204):
                raise RuntimeError(f"DELETE {path}: {r.status_code} {r.text}")
            while self.c.get(path, params=ACI).status_code != 404:
                if time.perf_counter() - t0 > 120:
                    raise TimeoutError(f"{path} was not deleted within 120 s")
                time.sleep(0.02)
            took.append(time.perf_counter() - t0)
            self.live.discard(path)
        return took

    def close(self) -> None:
        """Delete the groups still here, then the resource group."""
        try:
            self.delete(sorted(self.live))
            r = self.c.delete(self.rg, params=RG_API)
            if r.status_code in (200, 202):
                for _ in range(600):
                    if self.c.get(self.rg, params=RG_API).status_code == 404:
                        break
                    time.sleep(0.1)
        finally:
            self.c.close()


def stop_kumo(server: KumoServer, clean: bool) -> None:
    site = (server.data_dir / "network-site").read_text().strip() if (server.data_dir / "network-site").exists() \
        else None
    server.stop()
    if not clean:
        say(f"groups could not all be deleted: keeping {server.data_dir} (runc state and mounts live there)")
        return
    shutil.rmtree(server.data_dir, ignore_errors=True)
    if site is not None:
        left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(f"kumo{site}-")]
        if left:
            say(f"note: kumo left namespaces of its site after all groups were deleted: {left}")


# -- podman ------------------------------------------------------------------------------------------------
class Podman:
    """podman with its own storage/config under `root`, run inside the network namespace `netns` (a CNI
    bridge and port forwarding of its own there); HTTP checks run in a thread that joined the namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.netns = f"kumobench{os.getpid()}"
        self.pre_cni = Path("/var/lib/cni").exists()
        self.pre_cgroups = {str(p) for p in Path("/sys/fs/cgroup").glob("*/libpod_parent")}
        for sub in ("net", "tmp", "ipam"):
            (root / sub).mkdir(parents=True)
        (root / "containers.conf").write_text(f"""[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "{root}/tmp"
[network]
network_backend = "cni"
network_config_dir = "{root}/net"
default_network = "kumobench"
""")
        (root / "storage.conf").write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/graph"\n'
                                           f'runroot = "{root}/run"\n')
        (root / "net" / "kumobench.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "kumobench", "plugins": [
                {"type": "bridge", "bridge": "kbpod0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": f"{root}/ipam", "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": "10.89.77.0/24", "gateway": "10.89.77.1"}]]}},
                {"type": "portmap", "capabilities": {"portMappings": True}}, {"type": "firewall"}]}))
        self.env = {**os.environ, "CONTAINERS_CONF": f"{root}/containers.conf",
                    "CONTAINERS_STORAGE_CONF": f"{root}/storage.conf"}
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        self.pool = ThreadPoolExecutor(1, initializer=self._enter_netns)
        self.names: list[str] = []

    def _enter_netns(self) -> None:
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    def argv(self, *args: str) -> list[str]:
        """In the namespace through nsenter (not `ip netns exec`, which remounts /sys and hides cgroups)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "podman", *args]

    def run(self, *args: str) -> str:
        proc = subprocess.run(self.argv(*args), env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def pull(self, ref: str) -> None:
        # Pulling needs kumo's registry on the host's loopback: outside the namespace.
        proc = subprocess.run(["podman", "pull", "-q", "--tls-verify=false", f"docker://{ref}"], env=self.env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"podman pull {ref}: {proc.stderr.strip()}")

    def start(self, name: str, port: int, ref: str, command: list[str] | None) -> float:
        """`podman run -d -p port:80` to the first HTTP 200 on 127.0.0.1:port in the namespace."""
        self.names.append(name)
        with tempfile.TemporaryFile() as err:  # never a pipe: a detached container could inherit it
            t0 = time.perf_counter()
            proc = subprocess.Popen(self.argv("run", "-d", "--name", name, "-p", f"{port}:80", "--cpus", "1",
                                              "--memory", "512m", ref, *(command or [])),
                                    env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            try:
                took = self.pool.submit(wait_http, "127.0.0.1", port, t0).result()
            finally:
                rc = proc.wait()
            if rc != 0:
                err.seek(0)
                raise RuntimeError(f"podman run {name}: {err.read().decode(errors='replace').strip()}")
        return took

    def remove(self, names: list[str]) -> None:
        if names:
            self.run("rm", "-f", "-t", "0", *names)
        for n in names:
            self.names.remove(n)

    def close(self) -> None:
        self.pool.shutdown()
        with contextlib.suppress(Exception):
            self.run("rm", "-f", "-t", "0", "-a")
        with contextlib.suppress(Exception):
            subprocess.run(["podman", "rmi", "-a", "-f"], env=self.env, capture_output=True, timeout=120)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mountpoint = line.split()[4]
            if mountpoint.startswith(str(self.root) + "/"):
                subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        for parent in Path("/sys/fs/cgroup").glob("*/libpod_parent"):  # podman's conmon cgroups, if ours
            if str(parent) not in self.pre_cgroups:
                for d in sorted((d for d in parent.rglob("*") if d.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    parent.rmdir()
        cni = Path("/var/lib/cni")  # libcni's result cache: podman's CNI backend always writes it
        for f in cni.glob("results/kumobench-*"):
            f.unlink(missing_ok=True)
        if not self.pre_cni:
            for d in (cni / "results", cni):
                with contextlib.suppress(OSError):
                    d.rmdir()


# -- 1. PUT → HTTP 200 -------------------------------------------------------------------------------------
def start_latency(kumo: Kumo, podman: Podman, image: str, n: int, reuse_rounds: int = 1) -> dict[str, Any]:
    command = COMMANDS[image]
    ref = f"localhost:{kumo.server.port}/library/{image}:latest"
    say(f"{image}: warm-up (one group and one podman container, kept until the end of the round)")
    t0 = time.perf_counter()
    path, answer = kumo.put(f"warm-{image}", image, command, public=True)
    wait_http(kumo.public_ip(path, answer), 80, t0)
    paths, names = [path], [f"kb-warm-{image}"]
    podman.start(names[0], 8999, ref, command)
    k_times, k_put, p_times = [], [], []
    for i in range(n):  # interleaved, so load from elsewhere hits both alike
        t0 = time.perf_counter()
        path, answer = kumo.put(f"{image}{i}", image, command, public=True)
        k_put.append(time.perf_counter() - t0)
        k_times.append(wait_http(kumo.public_ip(path, answer), 80, t0))
        paths.append(path)
        names.append(f"kb-{image}-{i}")
        p_times.append(podman.start(names[-1], 8000 + i, ref, command))
        say(f"{image} {i + 1}/{n}: kumo {k_times[-1] * 1000:.0f} ms, podman {p_times[-1] * 1000:.0f} ms")
    conmon_rss, conmon_pss = memory_of(conmons(str(podman.root)))
    # A group that gets the public IP of a group deleted just before (kumo hands out the lowest free one).
    reused = []
    for j in range(reuse_rounds):
        kumo.delete([paths.pop()])
        t0 = time.perf_counter()
        path, answer = kumo.put(f"{image}-again{j}", image, command, public=True)
        reused.append(wait_http(kumo.public_ip(path, answer), 80, t0, timeout=180))
        paths.append(path)
        say(f"{image}: group on a just-freed public IP {reused[-1] * 1000:.0f} ms")
    say(f"{image}: deleting {len(paths)} groups and {len(names)} podman containers")
    deletes = kumo.delete(paths)
    podman.remove(names)
    return {"kumo": k_times, "podman": p_times, "put": k_put, "delete": deletes, "reused": reused,
            "podman_conmon": (conmon_rss / len(names), conmon_pss / len(names))}


# -- 2. cold pull ------------------------------------------------------------------------------------------
async def kumo_pull(server: KumoServer, root: Path) -> tuple[float, int]:
    from kumo.images.registry_client import RegistryClient
    from kumo.images.store import ImageStore

    client = RegistryClient(mirrors={"docker.io": server.endpoint}, ca_bundle=server.ca_bundle)
    try:
        store = ImageStore(root, client)
        t0 = time.perf_counter()
        image = await store.pull(PULL_IMAGE)
        took = time.perf_counter() - t0
    finally:
        await client.aclose()
    return took, image.size


def skopeo_umoci(port: int, root: Path) -> tuple[float, float]:
    root.mkdir()
    t0 = time.perf_counter()
    run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://localhost:{port}/library/{PULL_IMAGE}:latest",
         f"oci:{root}/oci:img"])
    t1 = time.perf_counter()
    run(["umoci", "unpack", "--image", f"{root}/oci:img", str(root / "bundle")])
    return t1 - t0, time.perf_counter() - t1


def cold_pull(kumo: Kumo, tmp: Path, rounds: int) -> dict[str, Any]:
    server = kumo.server
    say(f"cold pull of {PULL_IMAGE} through the API: PUT → Running on kumo's empty store, then again cached")
    api = []
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        path, _ = kumo.put(f"pull-{label}", PULL_IMAGE, ["sleep", "3600"], public=False)
        api.append(kumo.wait_running(path, t0))
        kumo.delete([path])
        say(f"  {label}: {api[-1]:.2f} s")
    k_times, s_copy, s_unpack = [], [], []
    size = unpacked_k = unpacked_s = 0
    for r in range(rounds):  # interleaved
        root = tmp / f"store{r}"
        took, size = asyncio.run(kumo_pull(server, root))
        k_times.append(took)
        unpacked_k = du_bytes(root / "layers")
        shutil.rmtree(root)
        root = tmp / f"skopeo{r}"
        copy_s, unpack_s = skopeo_umoci(server.port, root)
        s_copy.append(copy_s)
        s_unpack.append(unpack_s)
        unpacked_s = du_bytes(root / "bundle" / "rootfs")
        shutil.rmtree(root)
        say(f"pull round {r + 1}/{rounds}: kumo {took:.2f} s, skopeo copy {copy_s:.2f} s + umoci unpack "
            f"{unpack_s:.2f} s")
    return {"api_cold": api[0], "api_warm": api[1], "kumo": k_times, "copy": s_copy, "unpack": s_unpack,
            "size": size, "unpacked_kumo": unpacked_k, "unpacked_skopeo": unpacked_s}


# -- 3. memory per idle group ------------------------------------------------------------------------------
def cgroup_usage(site: str) -> int:
    path = Path(f"/sys/fs/cgroup/memory/kumo{site}/memory.usage_in_bytes")
    return int(path.read_text()) if path.exists() else 0


def idle_memory(kumo: Kumo, n: int) -> dict[str, Any]:
    server = kumo.server
    pid = server.pid()
    say(f"memory: warm-up group, then {n} idle busybox groups")
    t0 = time.perf_counter()
    path, _ = kumo.put("idle-warm", "busybox", ["sleep", "3600"], public=False)
    kumo.wait_running(path, t0)
    kumo.delete([path])
    time.sleep(2)
    rss0 = proc_kib(pid, "VmRSS")
    cg0 = cgroup_usage(kumo.site)
    t0 = time.perf_counter()
    paths = [kumo.put(f"idle{i}", "busybox", ["sleep", "3600"], public=False)[0] for i in range(n)]
    for p in paths:
        kumo.wait_running(p, t0, poll=0.1)
    create_s = time.perf_counter() - t0
    time.sleep(3)  # let the runners settle (first probes, log followers)
    rss1 = proc_kib(pid, "VmRSS")
    cg1 = cgroup_usage(kumo.site)
    pids = conmons(str(server.data_dir))
    conmon_rss, conmon_pss = memory_of(pids)
    say(f"memory: kumo RSS {rss0 / 1024:.1f} → {rss1 / 1024:.1f} MiB, {len(pids)} conmon, "
        f"cgroup {cg0 / MIB:.1f} → {cg1 / MIB:.1f} MiB; deleting")
    kumo.delete(paths)
    time.sleep(2)
    rss2 = proc_kib(pid, "VmRSS")
    return {"n": n, "conmons": len(pids), "create_s": create_s, "kumo_kib": (rss1 - rss0) / n,
            "conmon_rss_kib": conmon_rss / n, "conmon_pss_kib": conmon_pss / n, "cgroup_b": (cg1 - cg0) / n,
            "rss0": rss0, "rss1": rss1, "rss2": rss2}


# -- the table ---------------------------------------------------------------------------------------------
def table(starts: dict[str, dict[str, Any]], pull: dict[str, Any] | None, mem: dict[str, Any] | None,
          n: int) -> None:
    out = print
    if starts:
        out(f"PUT → first HTTP 200 on port 80, {n} each, interleaved, image cached")
        out(f"{'image':<8} {'system':<42} {'p50 ms':>8} {'p90 ms':>8}")
        for image, s in starts.items():
            k, p = s["kumo"], s["podman"]
            out(f"{image:<8} {'kumo (ARM PUT over HTTPS, public IP)':<42} {p50(k) * 1000:>8.0f} {p90(k) * 1000:>8.0f}")
            out(f"{image:<8} {'podman run -d -p (CNI bridge)':<42} {p50(p) * 1000:>8.0f} {p90(p) * 1000:>8.0f}")
            out(f"{image:<8} {'ratio kumo / podman':<42} {p50(k) / p50(p):>8.2f} {p90(k) / p90(p):>8.2f}")
        for image, s in starts.items():
            out(f"{image:<8} {'  kumo: PUT answered (201)':<42} {p50(s['put']) * 1000:>8.0f} "
                f"{p90(s['put']) * 1000:>8.0f}")
            out(f"{image:<8} {'  kumo: DELETE → 404, one after another':<42} {p50(s['delete']) * 1000:>8.0f} "
                f"{p90(s['delete']) * 1000:>8.0f}")
            r = s["reused"]
            if r:
                out(f"{image:<8} {f'  kumo: on a just-freed public IP ({len(r)}x)':<42} {p50(r) * 1000:>8.0f} "
                    f"{max(r) * 1000:>8.0f}")
        out("")
    if pull:
        k, c, u = pull["kumo"], pull["copy"], pull["unpack"]
        total = [a + b for a, b in zip(c, u, strict=True)]
        out(f"Cold pull of the catalog's {PULL_IMAGE} image ({pull['size'] / 1e6:.0f} MB compressed, "
            f"{pull['unpacked_kumo'] / 1e6:.0f} MB unpacked), {len(k)} rounds, median (range)")
        out(f"{'kumo ImageStore.pull (download, verify, unpack)':<52} {p50(k):>7.2f} s  ({min(k):.2f}..{max(k):.2f})")
        out(f"{'skopeo copy docker:// → oci: + umoci unpack':<52} {p50(total):>7.2f} s  "
            f"({min(total):.2f}..{max(total):.2f})")
        out(f"{'  of which skopeo copy / umoci unpack':<52} {p50(c):>7.2f} s / {p50(u):.2f} s")
        out(f"{'ratio kumo / (skopeo + umoci)':<52} {p50(k) / p50(total):>7.2f}")
        out(f"{'kumo through the API: PUT → Running, cold − warm':<52} "
            f"{pull['api_cold'] - pull['api_warm']:>7.2f} s  (cold {pull['api_cold']:.2f}, "
            f"warm {pull['api_warm']:.2f})")
        out("")
    if mem:
        n_mem = mem["n"]
        overhead = mem["kumo_kib"] + mem["conmon_rss_kib"]
        out(f"Memory per idle group ({n_mem} busybox `sleep` groups, {mem['conmons']} conmon; "
            f"all Running {mem['create_s']:.1f} s after the first PUT)")
        out(f"{'kumo RSS growth per group':<52} {mem['kumo_kib'] / 1024:>7.2f} MiB  "
            f"({mem['rss0'] / 1024:.1f} → {mem['rss1'] / 1024:.1f} MiB; {mem['rss2'] / 1024:.1f} after delete)")
        out(f"{'conmon per group, RSS (PSS)':<52} {mem['conmon_rss_kib'] / 1024:>7.2f} MiB  "
            f"({mem['conmon_pss_kib'] / 1024:.2f} MiB)")
        out(f"{'kumo overhead per idle group (kumo + conmon RSS)':<52} {overhead / 1024:>7.2f} MiB")
        out(f"{'containers own memory per group (memcg usage)':<52} {mem['cgroup_b'] / MIB:>7.2f} MiB")
        for image, s in starts.items():
            rss, pss = s["podman_conmon"]
            out(f"{f'  for reference, podman: conmon per {image} container':<52} {rss / 1024:>7.2f} MiB  "
                f"({pss / 1024:.2f} MiB PSS)")


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kumo-bench-aci-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_catalog(server: KumoServer) -> None:
    """The catalog registry answers once kumo's start-up import of the OCI layout is done."""
    import httpx

    url = f"{server.endpoint}/v2/library/nginx/manifests/latest"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"}
    for _ in range(600):
        if httpx.get(url, headers=accept, verify=server.tls()).status_code == 200:
            return
        time.sleep(0.1)
    sys.exit(f"kumo's catalog registry does not serve library/nginx:latest after 60 s (see {server.data_dir}/kumo.log; "
             "does /var/cache/kumo/catalog/index.json exist? `kumo catalog build` makes it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=20, help="groups (and podman containers) per image for step 1")
    ap.add_argument("--memory-groups", type=int, default=20, help="idle groups for step 3")
    ap.add_argument("--pull-rounds", type=int, default=3)
    ap.add_argument("--images", nargs="+", default=["nginx", "busybox"], choices=sorted(COMMANDS))
    ap.add_argument("--skip", nargs="*", default=[], choices=["start", "pull", "memory"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/aci.py needs root (kumo's container groups, podman, network namespaces)")
    for tool in ("podman", "skopeo", "umoci", "nsenter", "conmon", "runc"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/aci.py needs {tool}")
    starts: dict[str, dict[str, Any]] = {}
    pull = mem = None
    with temp_dir() as tmp:
        say("starting kumo")
        # the warm-up group and the group on a freed IP come on top of --groups; ACI's default quota is 20
        os.environ["KUMO_CONTAINER_GROUP_QUOTA"] = str(max(args.groups, args.memory_groups) + 5)
        server = start_server()
        kumo: Kumo | None = None
        podman: Podman | None = None
        clean = False
        try:
            wait_catalog(server)
            kumo = Kumo(server)
            if "start" not in args.skip:
                podman = Podman(tmp / "podman")
                for image in args.images:
                    say(f"podman pull {image} from kumo's catalog registry")
                    podman.pull(f"localhost:{server.port}/library/{image}:latest")
                for image in args.images:
                    starts[image] = start_latency(kumo, podman, image, args.groups)
            if "memory" not in args.skip:
                mem = idle_memory(kumo, args.memory_groups)
            if "pull" not in args.skip:
                pull = cold_pull(kumo, tmp, args.pull_rounds)
        finally:
            say("cleaning up")
            if podman is not None:
                podman.close()
            if kumo is not None:
                try:
                    kumo.close()
                    clean = not kumo.live
                except Exception as e:  # noqa: BLE001 - report and keep the data dir rather than orphan containers
                    say(f"could not delete every group: {e}")
            else:
                clean = True
            stop_kumo(server, clean)
    table(starts, pull, mem, args.groups)


if __name__ == "__main__":
    main()
