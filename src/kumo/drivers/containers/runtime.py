"""Containers on this host: runc under conmon, one overlayfs rootfs and one cgroup per container.

conmon (a small C supervisor) owns each container's stdio, writes its log in k8s-file format and its
exit code to `<root>/exits/<id>` (OOM to `<bundle>/persist/oom`), and outlives kumo. Everything kumo
needs to know about a container is therefore on disk or in `runc state`: a restarted kumo re-adopts
running containers by id, and every method is idempotent and safe to call again after a crash.

Layout under `root`: runc/ (runc --root), exits/, sockets/ (conmon attach links), logs/ (default log
files), c/<id>/ (bundle: config.json, rootfs/ mountpoint, upper/, work/, etc/, persist/, pid files)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import termios
import tempfile
import time
import tty as ttymod
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kumo.drivers import hostcmd
from kumo.drivers.containers import oci
from kumo.drivers.containers.spec import ABSENT, ContainerSpec, ContainerStatus, RuntimeFailure

CGROUP_ROOT = Path("/sys/fs/cgroup")
AZURE_DNS = "168.63.129.16"
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MAX_SHARES = 262144
LOG_SIZE_MAX = 16 << 20  # bytes of a container's log before conmon truncates it: no disk fills up


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)


def _runc_message(text: str) -> str:
    """runc's logrus lines (`time=... level=error msg="..."`) reduced to their messages."""
    msgs = []
    for m in re.finditer(r'msg="((?:[^"\\]|\\.)*)"', text):
        try:
            msgs.append(json.loads(f'"{m.group(1)}"'))
        except ValueError:
            msgs.append(m.group(1))
    return "; ".join(msgs) if msgs else text.strip()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _rmdir_cgroup(path: Path, timeout: float = 10) -> None:
    """Remove a container's cgroup (called in a thread). EBUSY means processes are still in it: a
    container killed a moment ago that the kernel has not reaped yet, or one that a runc killed with kumo
    left behind; they are the container's, so they get SIGKILL and the rmdir is tried again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"cannot remove cgroup {path}: {e.strerror}") from e
        try:
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        except OSError:
            pass
        time.sleep(0.1)


class ExecProcess:
    """A process run inside a container by `runc exec` (in the foreground, so its exit code is
    runc's). `fd` is bidirectional: the pty master with a tty, else our end of a socketpair that is
    the process's stdin, stdout and stderr (shutdown(SHUT_WR) on it closes the process's stdin).
    The caller reads and writes `fd` (non-blocking I/O via the event loop is fine) and closes it."""

    def __init__(self, proc: asyncio.subprocess.Process, fd: int, tty: bool, base: Path) -> None:
        self._proc, self.fd, self.tty = proc, fd, tty
        self._pid_file, self._spec_file = base.with_suffix(".pid"), base.with_suffix(".json")
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        """The host pid of the process inside the container (None until runc has started it)."""
        try:
            return int(self._pid_file.read_text())
        except (OSError, ValueError):
            return None

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size: our pty, then runc copies it to the container's pty on SIGWINCH."""
        if not self.tty:
            return
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if self.returncode is None:
            try:
                os.kill(self._proc.pid, signal.SIGWINCH)
            except ProcessLookupError:
                pass

    async def wait(self) -> int:
        """The exit code (128+signal when killed by one)."""
        rc = await self._proc.wait()
        self.returncode = rc
        self._pid_file.unlink(missing_ok=True)
        self._spec_file.unlink(missing_ok=True)
        return rc

    def kill(self) -> None:
        """SIGKILL the process in the container (runc cannot forward KILL; runc then exits with
        137). Before runc has started it, kill runc itself."""
        if self.returncode is not None:
            return
        try:
            os.kill(self.pid or self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ContainerRuntime:
    def __init__(self, root: Path | str, prefix: str, *, nameservers: tuple[str, ...] = (AZURE_DNS,)) -> None:
        if not _NAME.match(prefix) or len(prefix) > 20:
            raise ValueError(f"bad container prefix {prefix!r}")
        self.root, self.prefix, self.nameservers = Path(root).absolute(), prefix, nameservers
        self.runc = _which("runc") or "/usr/sbin/runc"
        self.conmon = _which("conmon") or "/usr/bin/conmon"
        self._locks: dict[str, asyncio.Lock] = {}
        self._cgroup_lock = asyncio.Lock()  # creating vs removing the shared parent cgroups

    # ---- paths and small helpers -------------------------------------------------------------------

    def bundle(self, cid: str) -> Path:
        return self.root / "c" / cid

    def _exit_file(self, cid: str) -> Path:
        return self.root / "exits" / cid

    def default_log_path(self, cid: str) -> Path:
        return self.root / "logs" / f"{cid}.log"

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def _check_id(self, cid: str) -> None:
        if not cid.startswith(self.prefix) or not _NAME.match(cid):
            raise ValueError(f"container id {cid!r} must start with {self.prefix!r} and be [A-Za-z0-9_.-]")

    async def _runc(self, *args: str, check: bool = True) -> str:
        try:
            return await hostcmd.run(self.runc, f"--root={self.root / 'runc'}", *args, check=check)
        except hostcmd.HostCommandError as e:
            raise RuntimeFailure(f"runc {args[0]}: {_runc_message(e.stderr)}") from e

    @staticmethod
    async def probe() -> str | None:
        """None when runc, conmon and overlayfs are usable here, else what to install or fix."""
        def check() -> str | None:
            if os.geteuid() != 0:
                return "containers need root (runc, overlayfs and cgroups)"
            missing = [pkg for pkg in ("runc", "conmon") if not _which(pkg)]
            if missing:
                return f"apt-get install {' '.join(missing)}"
            with open("/proc/filesystems") as f:
                if "overlay" not in f.read():
                    return "the kernel has no overlayfs (modprobe overlay)"
            if not (CGROUP_ROOT / "memory" / "cgroup.procs").exists():
                return "the cgroup v1 memory controller is not mounted at /sys/fs/cgroup/memory"
            return None
        return await asyncio.to_thread(check)

    # ---- state --------------------------------------------------------------------------------------

    async def _state(self, cid: str) -> dict[str, Any] | None:
        if not await asyncio.to_thread((self.root / "runc" / cid / "state.json").exists):
            return None  # runc keeps one dir per container: no need to spawn it (~15 ms) to know
        out = await hostcmd.run(self.runc, f"--root={self.root / 'runc'}", "state", cid, check=False)
        if not out.strip():
            return None  # "container does not exist"
        return json.loads(out)

    def _conmon_pid(self, cid: str) -> int | None:
        """conmon's pid if that process is alive and is conmon for `cid` (pids get reused)."""
        try:
            pid = int((self.bundle(cid) / "conmon.pid").read_text())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if not argv[0].endswith(b"conmon") or cid.encode() not in argv:
            return None  # a zombie has an empty cmdline
        return pid

    def _exit_info(self, cid: str) -> tuple[int | None, datetime | None, bool, datetime | None]:
        """(exit code, finished at, OOM killed, started at) from the files conmon and start wrote."""
        code = finished = started = None
        try:
            f = self._exit_file(cid)
            code, finished = int(f.read_text().strip()), _utc(f.stat().st_mtime)
        except (OSError, ValueError):
            pass
        try:
            started = datetime.fromisoformat((self.bundle(cid) / "started").read_text().strip())
        except (OSError, ValueError):
            pass
        return code, finished, (self.bundle(cid) / "persist" / "oom").exists(), started

    async def status(self, cid: str) -> ContainerStatus:
        """What the host says about `cid`, also for containers started by an earlier kumo."""
        state = await self._state(cid)
        if state is None:
            return ABSENT
        status = state.get("status")
        if status == "created":
            return ContainerStatus("created", pid=state.get("pid") or None)
        code, finished, oom, started = await asyncio.to_thread(self._exit_info, cid)
        if status in ("running", "paused", "pausing"):
            return ContainerStatus("running", pid=state.get("pid") or None, started_at=started)
        if code is None:
            # Just exited: conmon writes the exit file once it has reaped the container.
            pid = await asyncio.to_thread(self._conmon_pid, cid)
            if pid is not None and await hostcmd.wait_pid(pid, 5.0):
                code, finished, oom, started = await asyncio.to_thread(self._exit_info, cid)
        return ContainerStatus("stopped", exit_code=code, oom_killed=oom, started_at=started, finished_at=finished)

    async def wait(self, cid: str) -> ContainerStatus:
        """Return once the container has exited (or is absent): waits on conmon's pidfd, or on the
        container's init when its conmon is gone."""
        while True:
            st = await self.status(cid)
            if st.state == "stopped" and (supervisor := await asyncio.to_thread(self._conmon_pid, cid)):
                # conmon exits once it has written all of the container's output to the log
                await hostcmd.wait_pid(supervisor, timeout=2.0)
            if st.state in ("stopped", "absent"):
                return st
            pid = await asyncio.to_thread(self._conmon_pid, cid) or st.pid
            if pid:
                await hostcmd.wait_pid(pid)
            else:
                await asyncio.sleep(0.5)

    async def list_ids(self) -> list[str]:
        """Every container of this prefix known to runc or with a bundle (for orphan cleanup)."""
        out = await hostcmd.run(self.runc, f"--root={self.root / 'runc'}", "list", "--format=json", check=False)
        ids = {c["id"] for c in (json.loads(out) if out.strip() else None) or []}
        bundles = self.root / "c"
        ids |= set(await asyncio.to_thread(lambda: os.listdir(bundles) if bundles.is_dir() else []))
        return sorted(i for i in ids if i.startswith(self.prefix))

    # ---- start --------------------------------------------------------------------------------------

    async def start(self, spec: ContainerSpec) -> ContainerStatus:
        """Run `spec`; returns once it runs (or has already exited: stopped, with its exit code).
        A running container is returned as is; a stopped one is run again on its kept upper dir."""
        self._check_id(spec.id)
        if not _NAME.match(spec.group):
            raise ValueError(f"bad container group {spec.group!r}")
        if not spec.layers:
            raise RuntimeFailure(f"{spec.id}: no image layers")
        async with self._lock(spec.id):
            st = await self.status(spec.id)
            if st.state == "running":
                return st
            if st.state == "created":  # a start interrupted after create: just start it
                return await self._start_created(spec.id)
            if st.state == "stopped":
                await self._runc("delete", "--force", spec.id)
            bundle = self.bundle(spec.id)
            await asyncio.to_thread(self._prepare, spec)
            await self._mount_rootfs(spec)
            await asyncio.to_thread(self._write_config, spec)
            async with self._cgroup_lock:
                await self._create(spec.id, bundle, spec.log_path or str(self.default_log_path(spec.id)))
                await asyncio.to_thread(self._set_shares, spec.group)
            return await self._start_created(spec.id)

    async def _start_created(self, cid: str) -> ContainerStatus:
        started = datetime.now(UTC)
        try:
            await self._runc("start", cid)
        except RuntimeFailure:
            st = await self.status(cid)
            if st.state != "stopped":  # already exited is fine: report its exit code
                raise
            return st
        await asyncio.to_thread((self.bundle(cid) / "started").write_text, started.isoformat())
        return await self.status(cid)

    def _prepare(self, spec: ContainerSpec) -> None:
        bundle = self.bundle(spec.id)
        for d in (self.root / "runc", self.root / "exits", self.root / "sockets", self.root / "logs",
                  bundle / "rootfs", bundle / "upper", bundle / "work", bundle / "etc", bundle / "persist",
                  bundle / "exec"):
            d.mkdir(parents=True, exist_ok=True)
        Path(spec.log_path or self.default_log_path(spec.id)).parent.mkdir(parents=True, exist_ok=True)
        for name, text in oci.etc_files(spec.hostname or spec.id, self.nameservers).items():
            (bundle / "etc" / name).write_text(text)
        # Stale records of an earlier run must not be read as this run's.
        for stale in (self._exit_file(spec.id), bundle / "persist" / "oom", bundle / "persist" / "exit",
                      bundle / "started", bundle / "pid", bundle / "conmon.pid"):
            stale.unlink(missing_ok=True)

    async def _mount_rootfs(self, spec: ContainerSpec) -> None:
        bundle = self.bundle(spec.id)
        rootfs = bundle / "rootfs"
        if await asyncio.to_thread(os.path.ismount, rootfs):
            await self._umount(rootfs)  # the layers may have changed since
        for layer in spec.layers:
            if not await asyncio.to_thread(os.path.isdir, layer):
                raise RuntimeFailure(f"{spec.id}: image layer {layer} is missing")
            if ":" in layer or "," in layer:
                raise RuntimeFailure(f"{spec.id}: layer path {layer} contains ':' or ','")
        # The options show in the container's own /proc/mounts, and the kernel keeps the paths as given:
        # relative to a common base (the data dir), mounted from there, they name no host path.
        base = os.path.commonpath([*spec.layers, str(bundle)])
        lower = ":".join(os.path.relpath(layer, base) for layer in spec.layers)
        upper, work = (os.path.relpath(bundle / d, base) for d in ("upper", "work"))
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        try:
            await hostcmd.run("env", "-C", base, "mount", "-t", "overlay", "overlay", "-o", opts, str(rootfs))
        except hostcmd.HostCommandError as e:
            raise RuntimeFailure(f"{spec.id}: mounting the overlay rootfs failed: {e.stderr}") from e

    async def _umount(self, path: Path) -> None:
        try:
            await hostcmd.run("umount", str(path))
        except hostcmd.HostCommandError:
            await hostcmd.run("umount", "--lazy", str(path))  # busy: detach it now, freed when unused

    def _cgroups_path(self, spec: ContainerSpec) -> str:
        return f"/{self.prefix}/{spec.group}/{spec.id}"

    def _write_config(self, spec: ContainerSpec) -> dict[str, Any]:
        bundle = self.bundle(spec.id)
        user = oci.resolve_user(bundle / "rootfs", spec.user)
        cfg = oci.config(spec, rootfs=bundle / "rootfs", etc=bundle / "etc", cgroups_path=self._cgroups_path(spec),
                         user=user, memsw=(CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists())
        tmp = bundle / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=1))
        tmp.replace(bundle / "config.json")
        return cfg

    async def _create(self, cid: str, bundle: Path, log_path: str) -> None:
        """`runc create` under a fresh conmon; returns when the container exists (its init waits
        for `runc start`). conmon reports over the _OCI_SYNCPIPE: {"data": pid} or {"data": -1,
        "message": runc's error}."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        argv = [self.conmon, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid, "-r", self.runc,
                "-b", str(bundle), "-p", str(bundle / "pid"), "-P", str(bundle / "conmon.pid"),
                "--exit-dir", str(self.root / "exits"), "--persist-dir", str(bundle / "persist"),
                "-l", f"k8s-file:{log_path}", "--log-size-max", str(LOG_SIZE_MAX),
                "--socket-dir-path", str(self.root / "sockets"),
                "--runtime-arg", f"--root={self.root / 'runc'}"]
        env = {"PATH": os.environ.get("PATH", _SBIN_PATH), "_OCI_SYNCPIPE": str(write_fd)}
        # conmon's own messages go to a file, never a pipe: the daemonized conmon keeps it open.
        # cwd = the bundle: on OOM conmon also creates a file "oom" in its working directory.
        with open(bundle / "conmon.log", "ab") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=bundle,
                    pass_fds=(write_fd,), start_new_session=True)
            finally:
                os.close(write_fd)
        try:
            await proc.wait()  # conmon forks and its parent returns at once
            reply = await self._read_sync(read_fd, 60.0)
        finally:
            os.close(read_fd)
        if reply is None:
            tail = await asyncio.to_thread(lambda: (bundle / "conmon.log").read_text(errors="replace")[-500:])
            raise RuntimeFailure(f"{cid}: conmon exited ({proc.returncode}) without creating the container: "
                                 f"{tail.strip()}")
        if reply.get("data", -1) < 0:
            raise RuntimeFailure(f"{cid}: {_runc_message(str(reply.get('message', 'runc create failed')))}")

    @staticmethod
    async def _read_sync(fd: int, timeout: float) -> dict[str, Any] | None:
        """The first JSON line conmon writes to the sync pipe; None at EOF (conmon died)."""
        loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        buf = bytearray()
        got = asyncio.Event()
        loop.add_reader(fd, got.set)
        try:
            async with asyncio.timeout(timeout):
                while b"\n" not in buf:
                    await got.wait()
                    got.clear()
                    try:
                        chunk = os.read(fd, 4096)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        return None
                    buf += chunk
        except TimeoutError:
            raise RuntimeFailure(f"conmon did not report within {timeout:.0f}s") from None
        finally:
            loop.remove_reader(fd)
        return json.loads(bytes(buf).split(b"\n", 1)[0])

    # ---- cgroups ------------------------------------------------------------------------------------

    def _hierarchies(self) -> list[Path]:
        try:
            return [p for p in CGROUP_ROOT.iterdir() if p.is_dir()]
        except OSError:
            return []

    def _set_shares(self, group: str) -> None:
        """Weight the parents by their containers (1024 each): otherwise a whole group competes
        for CPU like a single process (facts §5)."""
        cpu = CGROUP_ROOT / "cpu" / self.prefix

        def count(d: Path) -> int:
            try:
                return sum(1 for e in os.scandir(d) if e.is_dir())
            except OSError:
                return 0

        def write(d: Path, n: int) -> None:
            try:
                (d / "cpu.shares").write_text(str(min(_MAX_SHARES, 1024 * max(1, n))))
            except OSError:
                pass

        total = 0
        for g in (cpu.iterdir() if cpu.is_dir() else []):
            if g.is_dir():
                n = count(g)
                total += n
                if g.name == group:
                    write(g, n)
        if cpu.is_dir():
            write(cpu, total)

    def _remove_cgroups(self, cid: str, group: str | None) -> None:
        for h in self._hierarchies():
            base = h / self.prefix
            groups = [base / group] if group else ([g for g in base.iterdir() if g.is_dir()] if base.is_dir() else [])
            for g in groups:
                _rmdir_cgroup(g / cid)
            for d in (*groups, base):  # parents only once empty (rmdir refuses otherwise)
                try:
                    d.rmdir()
                except OSError:
                    pass
        if group:
            self._set_shares(group)

    def _group_of(self, cid: str) -> str | None:
        try:
            path = json.loads((self.bundle(cid) / "config.json").read_text())["linux"]["cgroupsPath"]
            return path.strip("/").split("/")[1]
        except (OSError, ValueError, KeyError, IndexError):
            memory = CGROUP_ROOT / "memory" / self.prefix
            return next((g.name for g in memory.glob(f"*/{cid}")), None) if memory.is_dir() else None

    async def usage(self, cid: str) -> tuple[int, int]:
        """(memory in use without inactive page cache, as `docker stats`; CPU time in ns)."""
        def read() -> tuple[int, int]:
            group = self._group_of(cid)
            rel = f"{self.prefix}/{group}/{cid}"
            try:
                mem = int((CGROUP_ROOT / "memory" / rel / "memory.usage_in_bytes").read_text())
                stat = (CGROUP_ROOT / "memory" / rel / "memory.stat").read_text()
                cpu = int((CGROUP_ROOT / "cpuacct" / rel / "cpuacct.usage").read_text())
            except (OSError, ValueError) as e:
                raise RuntimeFailure(f"{cid}: no cgroup to read usage from") from e
            inactive = re.search(r"^total_inactive_file (\d+)$", stat, re.M)
            return max(0, mem - (int(inactive.group(1)) if inactive else 0)), cpu
        return await asyncio.to_thread(read)

    # ---- stop and remove ----------------------------------------------------------------------------

    async def _kill(self, cid: str, sig: str) -> None:
        await self._runc("kill", cid, sig, check=False)  # fails harmlessly when it has just exited

    async def stop(self, cid: str, grace: float = 10) -> ContainerStatus:
        """SIGTERM, up to `grace` seconds to exit, then SIGKILL. Returns the final status."""
        st = await self.status(cid)
        if st.state not in ("running", "created"):
            return st
        await self._kill(cid, "TERM")
        try:
            return await asyncio.wait_for(self.wait(cid), grace)
        except TimeoutError:
            await self._kill(cid, "KILL")
            return await self.wait(cid)

    async def remove(self, cid: str) -> None:
        """Stop (SIGKILL) and delete the container with its rootfs mount, bundle, upper dir, exit
        record and cgroups (and the group's parent cgroup once empty). The log file is kept."""
        self._check_id(cid)
        async with self._lock(cid):
            st = await self.status(cid)
            bundle = self.bundle(cid)
            if st.state in ("running", "created"):
                await self._kill(cid, "KILL")
                await asyncio.wait_for(self.wait(cid), 30)
            if st.state != "absent":
                await self._runc("delete", "--force", cid)
            pid = await asyncio.to_thread(self._conmon_pid, cid)
            if pid and not await hostcmd.wait_pid(pid, 5.0):
                os.kill(pid, signal.SIGKILL)  # ours, checked by its cmdline
                await hostcmd.wait_pid(pid, 5.0)
            group = await asyncio.to_thread(self._group_of, cid)
            rootfs = bundle / "rootfs"
            if await asyncio.to_thread(os.path.ismount, rootfs):
                await self._umount(rootfs)

            def clean() -> None:
                shutil.rmtree(bundle, ignore_errors=True)
                if bundle.exists():
                    raise RuntimeFailure(f"{cid}: could not remove {bundle}")
                self._exit_file(cid).unlink(missing_ok=True)
                (self.root / "sockets" / cid).unlink(missing_ok=True)
            # cgroups before the bundle: the bundle is what finds this container again after a crash
            async with self._cgroup_lock:
                await asyncio.to_thread(self._remove_cgroups, cid, group)
            await asyncio.to_thread(clean)
        self._locks.pop(cid, None)

    async def prune_cgroups(self) -> None:
        """Remove this prefix's group cgroups that no container is in any more (rmdir refuses the others):
        a group whose last container went while kumo was down to a crash."""
        def prune() -> None:
            for h in self._hierarchies():
                base = h / self.prefix
                for g in (list(base.iterdir()) if base.is_dir() else []):
                    try:
                        g.rmdir()
                    except OSError:
                        pass
        async with self._cgroup_lock:
            await asyncio.to_thread(prune)

    # ---- exec ---------------------------------------------------------------------------------------

    def _exec_argv(self, cid: str, argv: tuple[str, ...] | list[str], tty: bool, env: tuple[str, ...] | list[str],
                   size: tuple[int, int], base: Path) -> list[str]:
        """runc exec of a process spec derived from the container's own (user, env, cwd, capabilities,
        rlimits): `argv`, `env` on top, and with a tty its size from birth (runc resizes the pty only
        after the process started, so a fast `stty size` would see 0x0 without consoleSize)."""
        if not argv:
            raise ValueError("exec needs a command")
        process = json.loads((self.bundle(cid) / "config.json").read_text())["process"]
        overrides = {e.partition("=")[0] for e in env}
        process["env"] = [e for e in process.get("env", []) if e.partition("=")[0] not in overrides] + list(env)
        process["args"], process["terminal"] = list(argv), tty
        if tty:
            process["consoleSize"] = {"height": size[0], "width": size[1]}
        base.with_suffix(".json").write_text(json.dumps(process))
        return [self.runc, f"--root={self.root / 'runc'}", "exec", f"--process={base.with_suffix('.json')}",
                f"--pid-file={base.with_suffix('.pid')}", *(["--tty"] if tty else []), cid]

    async def exec(self, cid: str, argv: tuple[str, ...] | list[str], *, tty: bool, rows: int = 24, cols: int = 80,
                   env: tuple[str, ...] | list[str] = ()) -> ExecProcess:
        """Start `argv` in the running container (same namespaces and cgroups). With `tty` it gets a
        real pseudo-terminal of rows x cols: runc runs in the foreground with a pty of ours as its
        stdio and relays it to the container's own pty (and the size, on SIGWINCH)."""
        st = await self.status(cid)
        if st.state != "running":
            raise RuntimeFailure(f"{cid}: container is not running ({st.state})")
        base = self.bundle(cid) / "exec" / uuid.uuid4().hex[:12]
        env = list(env)
        if tty and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")
        args = await asyncio.to_thread(self._exec_argv, cid, argv, tty, env, (rows, cols), base)
        if tty:
            ours, theirs = os.openpty()
            ttymod.setraw(theirs)
            fcntl.ioctl(ours, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        else:
            a, b = socket.socketpair()
            ours, theirs = a.detach(), b.detach()
        try:
            proc = await asyncio.create_subprocess_exec(*args, stdin=theirs, stdout=theirs, stderr=theirs,
                                                        start_new_session=True)
        except BaseException:
            os.close(ours)
            raise
        finally:
            os.close(theirs)
        return ExecProcess(proc, ours, tty, base)

    async def run(self, cid: str, argv: tuple[str, ...] | list[str], timeout: float = 30,
                  env: tuple[str, ...] | list[str] = ()) -> tuple[int, str]:
        """Run `argv` in the container without a tty: (exit code, stdout and stderr interleaved).
        Raises TimeoutError (after killing it) when it runs longer than `timeout` seconds."""
        st = await self.status(cid)
        if st.state != "running":
            raise RuntimeFailure(f"{cid}: container is not running ({st.state})")
        base = self.bundle(cid) / "exec" / uuid.uuid4().hex[:12]
        args = await asyncio.to_thread(self._exec_argv, cid, argv, False, env, (0, 0), base)
        # Output to a file, not a pipe: a daemon started by argv could hold a pipe open forever.
        with tempfile.TemporaryFile() as out:
            proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
            handle = ExecProcess(proc, -1, False, base)
            try:
                rc = await asyncio.wait_for(handle.wait(), timeout)
            except TimeoutError:
                handle.kill()
                await handle.wait()
                raise TimeoutError(f"{cid}: {' '.join(argv)[:100]} ran longer than {timeout}s") from None

            def read() -> str:
                out.seek(0)
                return out.read().decode(errors="replace")
            return rc, await asyncio.to_thread(read)
