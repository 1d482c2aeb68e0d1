"""The container driver on the real host: runc under conmon, overlayfs rootfs, cgroup v1 limits.
Containers run a busybox rootfs built here from the host's busybox-static; every host object made
(mounts, cgroups, runc state, conmon processes, network namespaces) carries this run's prefix and is
checked to be gone afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kumo.drivers.containers import (
    ContainerRuntime,
    ContainerSpec,
    ExecProcess,
    Mount,
    RuntimeFailure,
    follow,
    read_log,
)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"),
                                 reason="containers need root and busybox-static (scripts/setup.sh installs them)")]

PREFIX = f"kumot{uuid.uuid4().hex[:4]}"
CGROUP = Path("/sys/fs/cgroup")
# Docker's default capabilities as the CapEff bitmask of /proc/self/status.
DOCKER_CAPS = 0x00000000a80425fb


@pytest.fixture(scope="module", autouse=True)
def _runc_and_conmon() -> None:
    problem = asyncio.run(ContainerRuntime.probe())
    assert problem is None, problem  # real or nothing: the message names the package


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox root filesystem used as the single (read-only) overlay layer."""
    root = tmp_path_factory.mktemp("layer") / "busybox"
    for d in ("bin", "etc", "www", "tmp", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nwww:x:33:\nstaff:x:50:www\nnogroup:x:65534:\n")
    (root / "www" / "index.html").write_text("hello from busybox\n")
    (root / "tmp").chmod(0o1777)
    return str(root)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("ctr")
    yield path

    async def cleanup() -> list[str]:
        rt = ContainerRuntime(path / "state", PREFIX)
        ids = await rt.list_ids()
        for cid in ids:
            await rt.remove(cid)
        return ids

    leftovers = asyncio.run(cleanup())
    assert_no_host_objects(path)
    assert not leftovers, f"tests left containers behind: {leftovers}"


@pytest.fixture
def rt(state_dir: Path) -> ContainerRuntime:
    return ContainerRuntime(state_dir / "state", PREFIX)


def assert_no_host_objects(state_dir: Path, cid: str = "") -> None:
    """No mount, cgroup, runc state or conmon process of this prefix (or of one id) is left."""
    name = cid or PREFIX
    mounts = Path("/proc/self/mountinfo").read_text()
    assert (f"/{cid}/rootfs" if cid else str(state_dir)) not in mounts
    for h in CGROUP.iterdir():
        if cid:
            assert not list((h / PREFIX).glob(f"*/{cid}")), f"cgroup of {cid} left in {h}"
        else:
            assert not (h / PREFIX).exists(), f"cgroup {h / PREFIX} left"
    runc = subprocess.run(["runc", f"--root={state_dir / 'state' / 'runc'}", "list", "-q"],
                          capture_output=True, text=True).stdout.split()
    assert not [i for i in runc if i.startswith(name)]
    assert not conmons(name)


def conmons(name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"conmon") and any(a.startswith(name.encode()) for a in argv):
            found.append(int(pid))
    return found


def spec(layer: str, state_dir: Path, name: str, *args: str, **kw: Any) -> ContainerSpec:
    cid = f"{PREFIX}{name}"
    kw.setdefault("group", "g1")
    return ContainerSpec(id=cid, layers=(layer,), args=args, log_path=str(state_dir / "logs" / f"{cid}.log"), **kw)


async def read_until_eof(fd: int, timeout: float = 10) -> bytes:
    """Everything from a pty master or socket until the other side is closed (EIO on a pty)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    out = bytearray()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ready.wait()
                ready.clear()
                try:
                    chunk = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: the pty's slave side is closed
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        loop.remove_reader(fd)
    return bytes(out)


async def run_to_end(rt: ContainerRuntime, s: ContainerSpec) -> str:
    await rt.start(s)
    st = await asyncio.wait_for(rt.wait(s.id), 30)
    assert st.state == "stopped"
    return await read_log(s.log_path)


async def test_exit_code_and_logs(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    s = spec(layer, state_dir, "logs", "sh", "-c",
             "echo out1; echo err1 >&2; sleep 0.05; echo out2; printf 'no-newline'; exit 3")
    try:
        await rt.start(s)
        st = await asyncio.wait_for(rt.wait(s.id), 30)
        assert (st.state, st.exit_code, st.oom_killed) == ("stopped", 3, False)
        assert st.started_at and st.finished_at and st.started_at <= st.finished_at
        log = await read_log(s.log_path)
        assert log.splitlines() == ["out1", "err1", "out2", "no-newline"]
        assert not log.endswith("\n")  # the last line really had no newline
        assert await read_log(s.log_path, tail=2) == "out2\nno-newline"
        stamped = (await read_log(s.log_path, tail=1, timestamps=True))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) no-newline", stamped), stamped
        # A stopped container stays stopped (its status is read from conmon's exit file).
        assert (await rt.status(s.id)).exit_code == 3
    finally:
        await rt.remove(s.id)
    assert (await rt.status(s.id)).state == "absent"
    assert os.path.exists(s.log_path)  # the log is the caller's to delete


async def test_env_cwd_user_and_etc_files(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    script = 'echo "$FOO|$(pwd)|$(id -u)|$(id -g)|$(id -G)|$HOME|$PATH|$(hostname)"; cat /etc/hosts /etc/resolv.conf'
    s = spec(layer, state_dir, "env", "sh", "-c", script, env=("FOO=bar baz",), cwd="/www", user="www",
             hostname="web-1")
    try:
        out = await run_to_end(rt, s)
    finally:
        await rt.remove(s.id)
    first, *rest = out.splitlines()
    foo, cwd, uid, gid, groups, home, path, hostname = first.split("|")
    assert (foo, cwd, uid, gid, hostname, home) == ("bar baz", "/www", "33", "33", "web-1", "/www")
    assert groups.split() == ["33", "50"]  # supplementary group from the image's /etc/group
    assert "/usr/bin" in path and "/bin" in path  # the default PATH, the image set none
    assert "127.0.0.1\tlocalhost" in rest and "127.0.1.1\tweb-1" in rest
    assert "nameserver 168.63.129.16" in rest

    for i, (user, want) in enumerate((("nobody:staff", "65534 50"), ("1234:5678", "1234 5678"), ("", "0 0"),
                                       ("33", "33 33"))):
        s = spec(layer, state_dir, f"user{i}", "sh", "-c", 'echo "$(id -u) $(id -g)"', user=user)
        try:
            assert (await run_to_end(rt, s)).strip() == want, user
        finally:
            await rt.remove(s.id)

    s = spec(layer, state_dir, "nouser", "true", user="mallory")
    try:
        with pytest.raises(RuntimeFailure, match="mallory"):
            await rt.start(s)
    finally:
        await rt.remove(s.id)


async def test_missing_executable_is_runc_error(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    s = spec(layer, state_dir, "noexe", "no-such-program", "x")
    try:
        with pytest.raises(RuntimeFailure, match='"no-such-program": executable file not found'):
            await rt.start(s)
        assert (await rt.status(s.id)).state == "absent"
        assert s.id in await rt.list_ids()  # the bundle stays for remove (or orphan cleanup) to find
    finally:
        await rt.remove(s.id)
    assert s.id not in await rt.list_ids()
    assert_no_host_objects(state_dir, s.id)


async def test_security_defaults(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    script = ("grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; echo nofile=$(ulimit -n); "
              "echo masked=$(cat /proc/timer_list /proc/keys | wc -c); "
              "echo 1 2>/dev/null > /proc/sys/vm/overcommit_memory && echo sys-writable; "
              "touch /sys/x 2>/dev/null || echo sys-ro; ls /dev; ip -o link | wc -l")
    s = spec(layer, state_dir, "sec", "sh", "-c", script)
    try:
        out = await run_to_end(rt, s)
    finally:
        await rt.remove(s.id)
    fields = dict(re.findall(r"^(\w+):\s+(\S+)$", out, re.M))
    assert int(fields["CapEff"], 16) == DOCKER_CAPS and int(fields["CapBnd"], 16) == DOCKER_CAPS
    assert fields["NoNewPrivs"] == "1"
    assert "nofile=20000" in out
    assert "masked=0" in out  # Docker's masked paths (both have content on the host)
    assert "sys-writable" not in out and "sys-ro" in out
    for dev in ("null", "zero", "urandom", "pts", "shm", "mqueue", "ptmx"):
        assert re.search(rf"^{dev}$", out, re.M), dev
    assert out.strip().endswith("1")  # a fresh network namespace: loopback only


async def test_memory_limit_oom(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    # PID 1 (sh) reads 100 MB into a variable: far over the 32 MiB limit, so the OOM killer takes it.
    s = spec(layer, state_dir, "oom", "sh", "-c",
             "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes; "
             "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
             memory_bytes=32 * 1024 * 1024)
    try:
        await rt.start(s)
        st = await asyncio.wait_for(rt.wait(s.id), 60)
        assert (st.exit_code, st.oom_killed) == (137, True)
        log = await read_log(s.log_path)
        assert log.split() == ["33554432", "33554432"]  # no swap on top either
        assert not Path("oom").exists()  # conmon's stray OOM marker lands in the bundle, not our cwd
    finally:
        await rt.remove(s.id)

    s = spec(layer, state_dir, "nooom", "sh", "-c", "head -c 10000000 /dev/zero | tail > /dev/null",
             memory_bytes=32 * 1024 * 1024)
    try:
        await rt.start(s)
        st = await asyncio.wait_for(rt.wait(s.id), 60)
        assert (st.exit_code, st.oom_killed) == (0, False)
    finally:
        await rt.remove(s.id)


async def test_pids_and_cpu_limits_and_shares(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    a = spec(layer, state_dir, "pids", "sh", "-c",
             "cat /sys/fs/cgroup/pids/pids.max; for i in $(seq 40); do sleep 30 & done; sleep 30",
             pids_limit=20, cpu_millicores=250, group="lim")
    b = spec(layer, state_dir, "cpu2", "sleep", "30", group="lim")
    try:
        await rt.start(a)
        await rt.start(b)
        rel = f"{PREFIX}/lim/{a.id}"
        assert (CGROUP / "cpu" / rel / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (CGROUP / "cpu" / rel / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (CGROUP / "cpu" / PREFIX / "lim" / "cpu.shares").read_text().strip() == str(2 * 1024)
        for _ in range(100):
            if "can't fork" in await read_log(a.log_path):
                break
            await asyncio.sleep(0.05)
        log = await read_log(a.log_path)
        assert log.startswith("20\n") and "can't fork" in log
        assert int((CGROUP / "pids" / rel / "pids.current").read_text()) <= 20
        memory, cpu_ns = await rt.usage(a.id)
        assert memory > 0 and cpu_ns > 0
        await rt.remove(b.id)
        assert (CGROUP / "cpu" / PREFIX / "lim" / "cpu.shares").read_text().strip() == "1024"
    finally:
        await rt.remove(a.id)
        await rt.remove(b.id)
    assert not (CGROUP / "cpu" / PREFIX / "lim").exists()  # the group's parent goes with its last container


async def test_stop_term_ignoring_pid1(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    # PID 1 of a pid namespace gets no default signal actions: sleep ignores TERM.
    s = spec(layer, state_dir, "stop", "sleep", "1000")
    t = spec(layer, state_dir, "stopterm", "sh", "-c", "trap 'exit 5' TERM; while :; do sleep 0.1; done")
    try:
        st = await rt.start(s)
        assert st.state == "running" and st.pid
        assert (await rt.start(s)).pid == st.pid  # starting a running container changes nothing
        t0 = time.monotonic()
        st = await rt.stop(s.id, grace=1.0)
        elapsed = time.monotonic() - t0
        assert (st.state, st.exit_code) == ("stopped", 137)
        assert 1.0 <= elapsed < 3.0, elapsed

        await rt.start(t)
        t0 = time.monotonic()
        st = await rt.stop(t.id, grace=10)
        assert (st.state, st.exit_code) == ("stopped", 5)
        assert time.monotonic() - t0 < 3  # it exited on TERM: no waiting out the grace period
    finally:
        await rt.remove(s.id)
        await rt.remove(t.id)


async def test_restart_keeps_upper_dir(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    s = spec(layer, state_dir, "restart", "sh", "-c", "cat /state 2>/dev/null; date +%N >> /state")
    try:
        await run_to_end(rt, s)
        out = await run_to_end(rt, s)  # start of a stopped container: run again on the same upper dir
        assert len(out.split()) == 1
        assert "state" not in os.listdir(layer)  # the layer itself is untouched
    finally:
        await rt.remove(s.id)


async def test_exec_with_and_without_tty(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    s = spec(layer, state_dir, "exec", "sleep", "1000", env=("FROM_IMAGE=1",), user="www")
    proc: ExecProcess | None = None
    try:
        await rt.start(s)
        proc = await rt.exec(s.id, ["sh", "-c", "stty size; tty; echo $TERM $FROM_IMAGE $(id -u)"],
                             tty=True, rows=33, cols=101)
        out = (await read_until_eof(proc.fd)).decode()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        lines = out.replace("\r", "").splitlines()
        assert lines[0] == "33 101" and lines[1].startswith("/dev/pts/") and lines[2] == "xterm 1 33", out
        proc.close()

        # Resizing reaches the container's own terminal.
        proc = await rt.exec(s.id, ["sh", "-c", "stty size; read x; stty size"], tty=True, rows=10, cols=20)
        await asyncio.sleep(0.5)
        proc.resize(40, 120)
        await asyncio.sleep(0.5)
        os.write(proc.fd, b"go\r")
        out = (await read_until_eof(proc.fd)).decode().replace("\r", "")
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert out.startswith("10 20\n") and out.rstrip().endswith("40 120"), out
        proc.close()

        # Without a tty: one socket for stdin, stdout and stderr; the exit code is the process's.
        proc = await rt.exec(s.id, ["sh", "-c", "read x; echo got $x; echo oops >&2; exit 4"], tty=False,
                             env=("EXTRA=1",))
        os.write(proc.fd, b"hello\n")
        out = (await read_until_eof(proc.fd)).decode()
        assert sorted(out.splitlines()) == ["got hello", "oops"]  # stdout and stderr: no order between them
        assert await asyncio.wait_for(proc.wait(), 10) == 4
        proc.close()

        # kill() ends a process that would run for long.
        proc = await rt.exec(s.id, ["sleep", "1000"], tty=False)
        await asyncio.sleep(0.3)
        proc.kill()
        assert await asyncio.wait_for(proc.wait(), 10) == 137
        proc.close()
        proc = None

        code, out = await rt.run(s.id, ["sh", "-c", "echo $EXTRA-$FROM_IMAGE; cat /etc/hostname; exit 2"],
                                 env=("EXTRA=x",))
        assert (code, out) == (2, f"x-1\n{s.id}\n")
        with pytest.raises(TimeoutError):
            await rt.run(s.id, ["sleep", "100"], timeout=0.5)
        code, out = await rt.run(s.id, ["sh", "-c", "ps -o args | grep -c '^sleep'"])
        assert out.strip() == "1"  # PID 1 only: the timed-out exec was killed
    finally:
        if proc is not None:
            proc.kill()
            proc.close()
        await rt.remove(s.id)
    with pytest.raises(RuntimeFailure, match="not running"):
        await rt.exec(s.id, ["true"], tty=False)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"kumotest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


async def test_shared_network_namespace(rt: ContainerRuntime, layer: str, state_dir: Path, netns: str) -> None:
    server = spec(layer, state_dir, "web", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www", netns=netns)
    client = spec(layer, state_dir, "client", "sh", "-c",
                  "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.2; done;"
                  " exit 1", netns=netns)
    outsider = spec(layer, state_dir, "outsider", "wget", "-q", "-T", "2", "-O", "-", "http://127.0.0.1:8080/")
    try:
        assert (await rt.start(server)).state == "running"
        assert (await run_to_end(rt, client)) == "hello from busybox\n"
        assert (await rt.status(client.id)).exit_code == 0
        await rt.start(outsider)  # its own fresh netns: nothing listens there
        assert (await asyncio.wait_for(rt.wait(outsider.id), 30)).exit_code != 0
        # Raw TCP too: nc in the server's container reaches the same listener.
        code, out = await rt.run(server.id, ["sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080"])
        assert code == 0 and out.startswith("HTTP/1.") and out.endswith("hello from busybox\n"), out
    finally:
        for s in (server, client, outsider):
            await rt.remove(s.id)


async def test_readoption_by_a_second_runtime(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    s = spec(layer, state_dir, "adopt", "sh", "-c", "read x < /dev/null; sleep 1.5; exit 9")
    long = spec(layer, state_dir, "adopt2", "sleep", "1000")
    try:
        first = await rt.start(s)
        await rt.start(long)
        again = ContainerRuntime(rt.root, PREFIX)  # a restarted kumo: nothing in memory
        st = await again.status(s.id)
        assert (st.state, st.pid) == ("running", first.pid)
        assert st.started_at == first.started_at
        assert set(await again.list_ids()) >= {s.id, long.id}
        t0 = time.monotonic()
        st = await asyncio.wait_for(again.wait(s.id), 10)
        assert (st.state, st.exit_code) == ("stopped", 9)
        assert time.monotonic() - t0 > 0.5
        code, out = await again.run(long.id, ["echo", "adopted"])
        assert (code, out) == (0, "adopted\n")
        st = await again.stop(long.id, grace=0.2)
        assert st.exit_code == 137
        assert (await rt.status(long.id)).exit_code == 137
    finally:
        await rt.remove(s.id)
        await rt.remove(long.id)


async def test_remove_leaves_nothing(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    s = spec(layer, state_dir, "rm", "sleep", "1000", memory_bytes=64 * 1024 * 1024,
             mounts=(Mount(source=layer, destination="/layer", readonly=True), Mount("", "/scratch", kind="tmpfs")))
    await rt.start(s)
    script = "ls /layer/www; touch /layer/x 2>/dev/null || echo ro; touch /scratch/y && echo rw"
    code, out = await rt.run(s.id, ["sh", "-c", script])
    assert out.split() == ["index.html", "ro", "rw"]
    bundle = rt.bundle(s.id)
    assert f"{bundle}/rootfs" in Path("/proc/self/mountinfo").read_text()
    assert conmons(s.id) and (CGROUP / "memory" / PREFIX / "g1" / s.id).is_dir()
    await rt.remove(s.id)
    assert_no_host_objects(state_dir, s.id)
    assert not bundle.exists() and not (rt.root / "exits" / s.id).exists()
    assert not (rt.root / "sockets" / s.id).exists() and not (rt.root / "runc" / s.id).exists()
    assert (await rt.status(s.id)).state == "absent"
    await rt.remove(s.id)  # absent: a no-op
    assert s.id not in await rt.list_ids()


async def test_follow_live_output(rt: ContainerRuntime, layer: str, state_dir: Path) -> None:
    s = spec(layer, state_dir, "follow", "sh", "-c", "sleep 0.5; echo one; printf 'tw'; sleep 0.3; echo o; exit 0")
    stop = asyncio.Event()
    got: list[bytes] = []

    async def attach() -> None:
        async for chunk in follow(s.log_path, stop=stop, interval=0.05):
            got.append(chunk)

    task = asyncio.create_task(attach())
    try:
        await rt.start(s)
        await asyncio.wait_for(rt.wait(s.id), 10)
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        task.cancel()
        await rt.remove(s.id)
    assert b"".join(got) == b"one\ntwo\n"


async def test_start_again_after_crash_between_create_and_start(rt: ContainerRuntime, layer: str,
                                                                state_dir: Path) -> None:
    """kumo died after `runc create`: the next start (by a new kumo) starts the created container,
    and stop/remove also handle a container that was never started."""
    s = spec(layer, state_dir, "crash", "sleep", "1000")
    c = spec(layer, state_dir, "crash2", "sleep", "1000")
    try:
        for x in (s, c):  # what start() does up to the crash
            await asyncio.to_thread(rt._prepare, x)
            await rt._mount_rootfs(x)
            await asyncio.to_thread(rt._write_config, x)
            await rt._create(x.id, rt.bundle(x.id), x.log_path)
        again = ContainerRuntime(rt.root, PREFIX)
        assert (await again.status(s.id)).state == "created"
        st = await again.start(s)
        assert st.state == "running" and st.pid and st.started_at
        st = await asyncio.wait_for(again.stop(c.id, grace=1), 10)
        assert st.state == "stopped"
    finally:
        await rt.remove(s.id)
        await rt.remove(c.id)
    assert_no_host_objects(state_dir, c.id)
