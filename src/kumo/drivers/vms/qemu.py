"""Virtual machines on this host: one `qemu-system-x86_64` process per VM, direct kernel boot.

QEMU runs in its own session with its stdio in files, so it outlives kumo; everything kumo needs to know
about a VM is in its state dir `<root>/<id>/` (spec.json, qemu.pid, the QMP and guest-agent sockets, the
serial log), so a restarted kumo re-adopts running VMs by id, and every method is idempotent.

* QMP (the `qemu.qmp` library) is used with one short connection per operation: the monitor serves one
  client at a time, and short connections let any process (a second driver, a restarted kumo, a human with
  `qmp-shell`) talk to it between operations. A per-VM lock serialises this process's operations.
* The guest agent (QGA) gets one persistent connection per VM (its chardev serves one client, and a
  reconnect right after a close can stall), resynchronised with `guest-sync-delimited` when opened and
  after any error. qemu.qmp is not used for it: QGA sends no greeting and needs the 0xFF resync.
* Accelerator: `accelerator()` boots a canary VM with KVM (`-cpu host`) and falls back to TCG when it
  does not reach the readiness marker in time; the answer is cached in `<root>/accel.json`. On PVM hosts
  (kvm_pvm, no vmx/svm) stock kernels cannot run under KVM at all (QEMU aborts at once), so TCG it is.
* Golden snapshots (the fast path to a running VM; a TCG boot takes seconds to minutes): a VM started with
  its RAM in a file (`VmSpec.ram_file`, `ram_shared=True`) is saved by `save_golden` as a ~1 MB device
  state (migration with `x-ignore-shared`: the RAM stays in its file) plus that RAM file and its disks;
  `start_clone` restores it into a new VM in ~0.1 s, mapping the RAM file privately (copy-on-write, so
  clones share the host page cache). QEMU 7.2 has no `file:` migration URI, hence `exec:cat`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from kumo.drivers import hostcmd
from kumo.drivers.vms.spec import (ABSENT, AgentError, GoldenSnapshot, VmFailure, VmPaths, VmSpec, VmStatus,
                                   clone_mismatches, clone_spec)

log = logging.getLogger("kumo.vms")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SOCKET_PATH_MAX = 107  # sun_path
QGA_PORT = "org.qemu.guest_agent.0"
READY_MARKER = "KUMO-VM-READY"  # what kumo's images print when booted (kumo.images.vm)
CANARY_TIMEOUT = 15.0
QMP_TIMEOUT = 5.0

Accel = Literal["kvm", "tcg"]


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)


def _proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, …), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _host_tsc_khz() -> int | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def _opt(value: str) -> str:
    """A value inside a QEMU -option list: commas are doubled."""
    return value.replace(",", ",,")


class _Agent:
    """One connection to a VM's guest-agent socket. Callers hold `lock` around each exchange."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._synced = False
        self._next_id = int(time.time() * 1000) % 1_000_000_000

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None
        self._synced = False

    async def _sync(self, timeout: float) -> None:
        """guest-sync-delimited: the agent answers 0xFF + {"return": id}; whatever precedes it (stale
        replies, the parse error the 0xFF itself provokes) is dropped."""
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self.path), limit=64 << 20), timeout)
            except (OSError, TimeoutError) as e:
                raise AgentError(f"cannot connect to the guest agent socket {self.path}: {e}") from e
        assert self._reader is not None
        self._next_id += 1
        sync_id = self._next_id
        msg = {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
        self._writer.write(b"\xff" + json.dumps(msg).encode() + b"\n")
        await self._writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                await self._reader.readuntil(b"\xff")
                line = await self._reader.readline()
                try:
                    if json.loads(line).get("return") == sync_id:
                        break
                except ValueError:
                    continue
        self._synced = True

    async def call(self, command: str, arguments: dict[str, Any] | None, timeout: float) -> Any:
        try:
            if not self._synced:
                await self._sync(timeout)
            assert self._reader is not None and self._writer is not None
            msg: dict[str, Any] = {"execute": command}
            if arguments is not None:
                msg["arguments"] = arguments
            self._writer.write(json.dumps(msg).encode() + b"\n")
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                while True:
                    line = (await self._reader.readline()).strip(b"\xff \r\n")
                    if not line:
                        if self._reader.at_eof():
                            raise AgentError("the guest agent connection closed")
                        continue
                    try:
                        reply = json.loads(line)
                    except ValueError:
                        continue
                    break
        except TimeoutError:
            await self.close()  # the reply may still come: start over with a fresh sync
            raise AgentError(f"guest agent: no answer to {command} within {timeout:.0f}s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            await self.close()
            raise AgentError(f"guest agent connection failed during {command}: {e}") from e
        if "error" in reply:
            err = reply["error"]
            raise AgentError(f"guest agent: {command}: {err.get('class')}: {err.get('desc')}")
        return reply.get("return")


class QemuDriver:
    def __init__(self, root: Path | str, prefix: str, *, canary: tuple[Path | str, Path | str] | None = None) -> None:
        """`root`: where the VMs' state dirs live (kept short: socket paths must fit 107 bytes);
        `prefix`: every VM id starts with it; `canary`: (kernel, initrd) of an image that prints
        `KUMO-VM-READY` (kumo tiny), booted once by accelerator() to see whether KVM works."""
        if not _NAME.match(prefix) or len(prefix) > 20:
            raise ValueError(f"bad VM prefix {prefix!r}")
        self.root, self.prefix = Path(root).absolute(), prefix
        if "," in str(self.root):
            raise ValueError(f"VM root {self.root} must not contain ','")
        self.canary = (Path(canary[0]), Path(canary[1])) if canary else None
        self.qemu = _which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
        self._locks: dict[str, asyncio.Lock] = {}
        self._agents: dict[str, _Agent] = {}
        self._accel: Accel | None = None
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._version: tuple[tuple[int, int], str] | None = None  # ((size, mtime_ns) of the binary, --version)

    # ---- paths and helpers --------------------------------------------------------------------------

    def paths(self, vid: str) -> VmPaths:
        d = self.root / vid
        return VmPaths(state_dir=d, qmp=d / "qmp.sock", qga=d / "qga.sock", serial=d / "serial.log",
                       pidfile=d / "qemu.pid", stderr=d / "qemu.log", spec=d / "spec.json", argv=d / "argv.json")

    def _lock(self, vid: str) -> asyncio.Lock:
        return self._locks.setdefault(vid, asyncio.Lock())

    def _check_id(self, vid: str) -> None:
        if not vid.startswith(self.prefix) or not _NAME.match(vid):
            raise ValueError(f"VM id {vid!r} must start with {self.prefix!r} and be [A-Za-z0-9_.-]")
        if len(str(self.paths(vid).qmp)) > SOCKET_PATH_MAX:
            raise ValueError(f"VM state dir {self.root / vid} is too long for its sockets (max 107 bytes)")

    def _pid(self, vid: str) -> int | None:
        """QEMU's pid from the pidfile if that process lives and is QEMU for this VM (pids get reused)."""
        p = self.paths(vid)
        try:
            pid = int(p.pidfile.read_text())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if _proc_state(pid) in (None, "Z", "X") or str(p.qmp).encode() not in b" ".join(argv):
            return None
        return pid

    async def probe(self) -> str | None:
        """None when VMs can run here, else what to install or fix. Also settles the accelerator."""
        if not Path(self.qemu).is_file():
            return "apt-get install qemu-system-x86"
        await self.accelerator()
        return None

    # ---- accelerator --------------------------------------------------------------------------------

    def _accel_key(self) -> dict[str, Any]:
        flags = ""
        with contextlib.suppress(OSError):
            m = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
            flags = " ".join(sorted(f for f in (m.group(1).split() if m else []) if f in ("vmx", "svm")))
        version = subprocess.run([self.qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        return {"qemu": version, "host_kernel": os.uname().release, "virt_flags": flags,
                "pvm": Path("/sys/module/kvm_pvm").exists(),
                "canary": [str(p) for p in self.canary] if self.canary else None}

    async def accelerator(self, *, refresh: bool = False) -> Accel:
        """`kvm` when a canary VM really boots under KVM here, else `tcg`; cached in <root>/accel.json."""
        if self._accel and not refresh:
            return self._accel
        cache = self.root / "accel.json"
        key = await asyncio.to_thread(self._accel_key)
        if not refresh:
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(await asyncio.to_thread(cache.read_text))
                if doc.get("key") == key and doc.get("accel") in ("kvm", "tcg"):
                    self._accel = doc["accel"]
                    return doc["accel"]
        accel, why = await self._canary(key)
        log.info("VM accelerator: %s (%s)", accel, why)
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(cache.write_text, json.dumps({"key": key, "accel": accel, "why": why}, indent=1))
        self._accel = accel
        return accel

    async def _canary(self, key: dict[str, Any]) -> tuple[Accel, str]:
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "tcg", "no usable /dev/kvm"
        if key["pvm"] and not key["virt_flags"]:  # measured: QEMU aborts or the guest hangs (facts §1)
            return "tcg", "/dev/kvm is PVM (kvm_pvm, no vmx/svm): stock guest kernels cannot run under it"
        if self.canary is None:
            if key["virt_flags"]:
                return "kvm", f"{key['virt_flags']} present (no canary image to verify)"
            return "tcg", "no vmx/svm flags and no canary image to try KVM with"
        vid = f"{self.prefix}canary"
        spec = VmSpec(id=vid, kernel=str(self.canary[0]), initrd=str(self.canary[1]),
                      append="console=ttyS0 panic=-1 quiet", accel="kvm", memory_mib=128)
        t0 = time.monotonic()
        try:
            await self.start(spec)
            await self.wait_serial(vid, READY_MARKER, CANARY_TIMEOUT)
            return "kvm", f"canary booted under KVM in {time.monotonic() - t0:.1f}s"
        except (VmFailure, TimeoutError) as e:
            return "tcg", f"canary failed under KVM: {str(e)[:300]}"
        finally:
            await self.remove(vid)

    # ---- QMP ----------------------------------------------------------------------------------------

    async def _connect(self, vid: str) -> QMPClient:
        """A QMP connection. The socket file appears when QEMU binds it, a moment before it accepts: under
        a burst of starts a first connect can be refused, so it is retried (the caller's timeout bounds it)."""
        while True:
            qmp = QMPClient(vid)
            try:
                await qmp.connect(str(self.paths(vid).qmp))
                return qmp
            except Exception as e:  # qemu.qmp wraps the OSError in its ConnectError
                if not isinstance(e.__cause__ or e, ConnectionRefusedError):
                    raise
            await asyncio.sleep(0.05)

    async def _qmp(self, vid: str, command: str, arguments: dict[str, Any] | None = None,
                   timeout: float = QMP_TIMEOUT) -> Any:
        """One QMP command on a connection of its own (QMP serves one client at a time)."""
        qmp: QMPClient | None = None
        try:
            async with asyncio.timeout(timeout):
                qmp = await self._connect(vid)
                return await qmp.execute(command, arguments)
        finally:
            if qmp is not None:
                with contextlib.suppress(Exception):
                    await qmp.disconnect()

    @contextlib.asynccontextmanager
    async def _qmp_session(self, vid: str, timeout: float = QMP_TIMEOUT) -> AsyncIterator[QMPClient]:
        """One QMP connection for a sequence of commands that belong together (the caller holds the lock)."""
        async with asyncio.timeout(timeout):
            qmp = await self._connect(vid)
        try:
            yield qmp
        finally:
            with contextlib.suppress(Exception):
                await qmp.disconnect()

    @staticmethod
    async def _exec(qmp: QMPClient, command: str, arguments: dict[str, Any] | None = None,
                    timeout: float = QMP_TIMEOUT) -> Any:
        async with asyncio.timeout(timeout):
            return await qmp.execute(command, arguments)

    async def _wait_migration(self, qmp: QMPClient, vid: str, timeout: float) -> dict[str, Any]:
        """Poll query-migrate (on either end) until the migration completed; VmFailure if it failed."""
        t0 = time.monotonic()
        while True:
            info = await self._exec(qmp, "query-migrate")
            status = info.get("status")
            if status == "completed":
                return info
            if status in ("failed", "cancelled"):
                raise VmFailure(f"{vid}: migration {status}: {info.get('error-desc', '')}")
            if time.monotonic() - t0 > timeout:
                raise VmFailure(f"{vid}: migration not completed after {timeout:.0f}s (status {status})")
            await asyncio.sleep(0.01)

    # ---- state --------------------------------------------------------------------------------------

    async def status(self, vid: str) -> VmStatus:
        """What the host says about `vid`, also for VMs started by an earlier process (or driver)."""
        p = self.paths(vid)
        if not await asyncio.to_thread(p.state_dir.is_dir):
            return ABSENT
        pid = await asyncio.to_thread(self._pid, vid)
        if pid is None:
            return VmStatus("stopped")
        async with self._lock(vid):
            try:
                st = await self._qmp(vid, "query-status")
            except (QMPError, OSError, TimeoutError) as e:
                if await asyncio.to_thread(self._pid, vid) is None:
                    return VmStatus("stopped")
                log.debug("%s: QMP query-status failed: %s", vid, e)
                return VmStatus("unresponsive", pid=pid)
        return self._status_of(pid, str(st.get("status")))

    @staticmethod
    def _status_of(pid: int, qs: str) -> VmStatus:
        state = "running" if qs == "running" else "shutdown" if qs in ("shutdown", "guest-panicked") else "paused"
        return VmStatus(state, pid=pid, qmp_status=qs)  # type: ignore[arg-type]

    async def list_ids(self) -> list[str]:
        """Every VM of this prefix with a state dir (for orphan cleanup)."""
        def ls() -> list[str]:
            if not self.root.is_dir():
                return []
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and e.name.startswith(self.prefix))
        return await asyncio.to_thread(ls)

    async def serial_log(self, vid: str, max_bytes: int | None = None) -> str:
        """The serial console so far ("" when none); with max_bytes, its tail."""
        def read() -> str:
            try:
                with open(self.paths(vid).serial, "rb") as f:
                    if max_bytes is not None:
                        f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
                    return f.read().decode(errors="replace")
            except OSError:
                return ""
        return await asyncio.to_thread(read)

    async def wait_serial(self, vid: str, text: str, timeout: float) -> float:
        """Wait until `text` is in the serial log; returns the seconds waited. TimeoutError after
        `timeout`, VmFailure at once when QEMU has exited."""
        t0 = time.monotonic()
        path = self.paths(vid).serial
        needle = text.encode()

        def found() -> bool:
            try:
                return needle in path.read_bytes()
            except OSError:
                return False
        while True:
            if await asyncio.to_thread(found):
                return time.monotonic() - t0
            if await asyncio.to_thread(self._pid, vid) is None:
                tail = await self._stderr_tail(vid)
                raise VmFailure(f"{vid}: QEMU exited before {text!r} appeared on the serial console"
                                + (f": {tail}" if tail else ""))
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{vid}: {text!r} not on the serial console after {timeout:.0f}s")
            await asyncio.sleep(0.05)

    async def _stderr_tail(self, vid: str) -> str:
        def read() -> str:
            try:
                return self.paths(vid).stderr.read_text(errors="replace")[-800:].strip()
            except OSError:
                return ""
        return await asyncio.to_thread(read)

    # ---- start --------------------------------------------------------------------------------------

    def argv(self, spec: VmSpec, accel: Accel) -> list[str]:
        """The QEMU command line for `spec` (without the `nsenter` for its netns)."""
        p = self.paths(spec.id)
        pci = spec.machine == "q35"
        dev = (lambda kind: f"{kind}-pci") if pci else (lambda kind: f"{kind}-device")
        append = spec.append
        if accel == "tcg" and spec.machine == "microvm" and "tsc_early_khz=" not in append:
            khz = _host_tsc_khz()
            if khz:  # microvm under TCG cannot calibrate the TSC without it (it hangs 3 boots in 4)
                append = f"{append} tsc_early_khz={khz}".strip()
        machine = spec.machine
        if spec.ram_file:  # the RAM block is then "ram0" (not "pc.ram"): golden and clones both use this
            machine += ",memory-backend=ram0"
        args = [self.qemu, "-name", f"guest={spec.id},debug-threads=on", "-nodefaults", "-no-user-config",
                "-display", "none", "-machine", machine,
                "-accel", f"tcg,tb-size={spec.tb_size_mib}" if accel == "tcg" else "kvm",
                "-cpu", "max" if accel == "tcg" else "host",
                "-smp", str(spec.vcpus), "-m", f"{spec.memory_mib}M",
                "-kernel", spec.kernel, "-append", append,
                "-chardev", f"file,id=serial0,path={_opt(str(p.serial))}", "-serial", "chardev:serial0",
                "-qmp", f"unix:{_opt(str(p.qmp))},server=on,wait=off",
                "-device", f"{dev('virtio-serial')},id=vser0",
                "-chardev", f"socket,id=qga0,path={_opt(str(p.qga))},server=on,wait=off",
                "-device", f"virtserialport,bus=vser0.0,chardev=qga0,name={QGA_PORT}",
                "-device", dev("virtio-rng")]
        if spec.ram_file:
            args += ["-object", f"memory-backend-file,id=ram0,size={spec.memory_mib}M,mem-path={_opt(spec.ram_file)}"
                                f",share={'on' if spec.ram_shared else 'off'}"]
        if spec.initrd:
            args += ["-initrd", spec.initrd]
        for i, d in enumerate(spec.disks):
            args += ["-drive", f"file={_opt(d.path)},if=none,id=disk{i},format={d.format}"
                               f",readonly={'on' if d.readonly else 'off'}",
                     "-device", f"{dev('virtio-blk')},drive=disk{i}"]
        for i, n in enumerate(spec.nics):
            if n.tap:
                netdev = f"tap,id=net{i},ifname={n.tap},script=no,downscript=no"
            else:
                netdev = f"user,id=net{i}" + "".join(
                    f",hostfwd={f.protocol}:{f.host_addr}:{f.host_port}-:{f.guest_port}" for f in n.forwards)
            args += ["-netdev", netdev, "-device", f"{dev('virtio-net')},netdev=net{i},mac={n.mac}"]
        for name, path in spec.fw_cfg:
            args += ["-fw_cfg", f"name={_opt(name)},file={_opt(path)}"]
        return args

    def _validate(self, spec: VmSpec) -> None:
        self._check_id(spec.id)
        if spec.vcpus < 1 or spec.memory_mib < 64:
            raise ValueError(f"{spec.id}: needs at least 1 vCPU and 64 MiB")
        for n in spec.nics:
            if not _MAC.match(n.mac):
                raise ValueError(f"{spec.id}: bad MAC {n.mac!r} (lower-case aa:bb:cc:dd:ee:ff)")
            if n.tap is not None and (not _NAME.match(n.tap) or len(n.tap) > 15):
                raise ValueError(f"{spec.id}: bad tap name {n.tap!r}")
        for path in (spec.kernel, spec.initrd, *(d.path for d in spec.disks), *(f for _n, f in spec.fw_cfg)):
            if path and not os.path.isfile(path):
                raise VmFailure(f"{spec.id}: {path} does not exist")
        if spec.netns and not os.path.exists(f"/run/netns/{spec.netns}"):
            raise VmFailure(f"{spec.id}: network namespace {spec.netns} does not exist")
        if spec.ram_file:
            ram = Path(spec.ram_file)
            if not ram.is_absolute():
                raise ValueError(f"{spec.id}: ram_file {ram} must be an absolute path")
            if ram.is_dir() or not ram.parent.is_dir():  # a directory would get an unlinked temporary file
                raise VmFailure(f"{spec.id}: ram_file {ram} must be a file in an existing directory")
            size = ram.stat().st_size if ram.exists() else 0
            if 0 < size < spec.memory_mib << 20:
                raise VmFailure(f"{spec.id}: ram_file {ram} holds {size} bytes, less than {spec.memory_mib} MiB")

    async def start(self, spec: VmSpec) -> VmStatus:
        """Start QEMU for `spec`; returns once its QMP monitor answers (the guest is booting). A VM
        already running is returned as is; a stopped one is started again (its serial log restarts)."""
        await asyncio.to_thread(self._validate, spec)
        accel = spec.accel or await self.accelerator()
        async with self._lock(spec.id):
            pid = await asyncio.to_thread(self._pid, spec.id)
            if pid is not None:
                return VmStatus("running", pid=pid)
            return await self._spawn(spec, accel)

    async def _spawn(self, spec: VmSpec, accel: Accel, extra: tuple[str, ...] = ()) -> VmStatus:
        """Start QEMU (the caller holds the VM's lock and knows it is not running); returns once QMP is up."""
        p = self.paths(spec.id)
        await self._close_agent(spec.id)
        argv = self.argv(spec, accel) + list(extra)
        full = (["nsenter", f"--net=/run/netns/{spec.netns}", "--"] if spec.netns else []) + argv

        def prepare() -> None:
            p.state_dir.mkdir(parents=True, exist_ok=True)
            for stale in (p.qmp, p.qga, p.pidfile, p.serial):
                stale.unlink(missing_ok=True)
            p.spec.write_text(json.dumps(dataclasses.asdict(spec), indent=1))
            p.argv.write_text(json.dumps(full))
        await asyncio.to_thread(prepare)
        # stdio to a file, never a pipe: QEMU outlives us. Its own session: no signals from our tty.
        with open(p.stderr, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *full, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, cwd=p.state_dir,
                start_new_session=True)
        self._children[proc.pid] = proc  # asyncio reaps it when it exits while we run
        await asyncio.to_thread(p.pidfile.write_text, f"{proc.pid}\n")
        try:
            async with asyncio.timeout(30):
                while not await asyncio.to_thread(p.qmp.exists):
                    if proc.returncode is not None:
                        break
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        if proc.returncode is not None or not p.qmp.exists():
            if proc.returncode is None:
                await self._signal(proc.pid, signal.SIGKILL)
            await proc.wait()
            tail = await self._stderr_tail(spec.id)
            raise VmFailure(f"{spec.id}: QEMU exited ({proc.returncode}) at start: {tail}")
        return VmStatus("running", pid=proc.pid)

    # ---- stop and remove ----------------------------------------------------------------------------

    async def _signal(self, pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    async def powerdown(self, vid: str, timeout: float = 30) -> str:
        """ACPI power button; if QEMU has not exited within `timeout`, QMP `quit`; then SIGKILL.
        Returns how it ended: "acpi", "quit", "kill", or "not running"."""
        pid = await asyncio.to_thread(self._pid, vid)
        if pid is None:
            return "not running"
        await self._close_agent(vid)
        async with self._lock(vid):
            with contextlib.suppress(QMPError, OSError, TimeoutError):
                await self._qmp(vid, "system_powerdown")
            if await hostcmd.wait_pid(pid, timeout):
                return "acpi"
            with contextlib.suppress(QMPError, OSError, TimeoutError):
                await self._qmp(vid, "quit")
            if await hostcmd.wait_pid(pid, 5):
                return "quit"
            await self._signal(pid, signal.SIGKILL)
            await hostcmd.wait_pid(pid, 10)
            return "kill"

    async def kill(self, vid: str) -> None:
        """SIGKILL QEMU (the guest gets no warning); returns once it is gone."""
        await self._close_agent(vid)
        pid = await asyncio.to_thread(self._pid, vid)
        if pid is None:
            return
        await self._signal(pid, signal.SIGKILL)
        if not await hostcmd.wait_pid(pid, 10):
            raise VmFailure(f"{vid}: QEMU (pid {pid}) survived SIGKILL")
        child = self._children.pop(pid, None)
        if child is not None:
            await child.wait()

    async def remove(self, vid: str) -> None:
        """Kill QEMU if it runs and delete the VM's state dir (sockets, logs, spec). Idempotent."""
        self._check_id(vid)
        await self.kill(vid)
        async with self._lock(vid):
            d = self.paths(vid).state_dir
            await asyncio.to_thread(shutil.rmtree, d, True)
            if await asyncio.to_thread(d.exists):
                raise VmFailure(f"{vid}: could not remove {d}")
        self._locks.pop(vid, None)

    async def close(self) -> None:
        """Drop this driver's guest-agent connections (the VMs keep running)."""
        for vid in list(self._agents):
            await self._close_agent(vid)

    # ---- guest agent --------------------------------------------------------------------------------

    async def _close_agent(self, vid: str) -> None:
        agent = self._agents.pop(vid, None)
        if agent is not None:
            async with agent.lock:
                await agent.close()

    def _agent(self, vid: str) -> _Agent:
        agent = self._agents.get(vid)
        if agent is None:
            agent = self._agents[vid] = _Agent(self.paths(vid).qga)
        return agent

    async def agent_call(self, vid: str, command: str, arguments: dict[str, Any] | None = None,
                         timeout: float = 10) -> Any:
        """One guest-agent command's "return" value; AgentError when the agent fails or is silent."""
        if await asyncio.to_thread(self._pid, vid) is None:
            raise VmFailure(f"{vid}: VM is not running")
        agent = self._agent(vid)
        async with agent.lock:
            return await agent.call(command, arguments, timeout)

    async def agent_ping(self, vid: str, timeout: float = 5) -> bool:
        """True when the guest agent answers guest-ping within `timeout` seconds."""
        try:
            await self.agent_call(vid, "guest-ping", None, timeout)
            return True
        except AgentError:
            return False

    async def wait_agent(self, vid: str, timeout: float) -> float:
        """Wait until the guest agent answers; returns the seconds waited (TimeoutError after `timeout`)."""
        t0 = time.monotonic()
        while not await self.agent_ping(vid, timeout=min(2.0, max(0.5, timeout - (time.monotonic() - t0)))):
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{vid}: the guest agent did not answer within {timeout:.0f}s")
            await asyncio.sleep(0.2)
        return time.monotonic() - t0

    async def agent_exec(self, vid: str, argv: list[str] | tuple[str, ...], input: bytes | str | None = None,
                         timeout: float = 30) -> tuple[int, bytes, bytes]:
        """Run `argv` in the guest through the agent (guest-exec, then guest-exec-status until it
        exits): (exit code, stdout, stderr); killed by a signal gives 128+signal. TimeoutError (after
        killing it in the guest) when it runs longer than `timeout` seconds."""
        if not argv:
            raise ValueError("agent_exec needs a command")
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if input is not None:
            data = input.encode() if isinstance(input, str) else input
            args["input-data"] = base64.b64encode(data).decode()
        started = await self.agent_call(vid, "guest-exec", args)
        gpid = started["pid"]
        t0 = time.monotonic()
        delay = 0.02
        while True:
            st = await self.agent_call(vid, "guest-exec-status", {"pid": gpid})
            if st.get("exited"):
                break
            if time.monotonic() - t0 > timeout:
                with contextlib.suppress(AgentError):
                    await self.agent_call(vid, "guest-exec", {"path": "kill", "arg": ["-9", str(gpid)]})
                raise TimeoutError(f"{vid}: {' '.join(argv)[:100]} ran longer than {timeout}s in the guest")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        code = st.get("exitcode")
        if code is None:
            code = 128 + int(st.get("signal", 0))
        return (int(code), base64.b64decode(st.get("out-data", "")), base64.b64decode(st.get("err-data", "")))

    # ---- golden snapshots and clones ----------------------------------------------------------------

    async def qemu_version(self) -> str:
        """`qemu-system-x86_64 --version`'s first line (a restore needs the QEMU that saved), cached per binary."""
        st = await asyncio.to_thread(os.stat, self.qemu)
        key = (st.st_size, st.st_mtime_ns)
        if self._version is None or self._version[0] != key:
            proc = await asyncio.create_subprocess_exec(self.qemu, "--version", stdout=subprocess.PIPE,
                                                        stderr=subprocess.DEVNULL)
            out, _ = await proc.communicate()
            self._version = (key, out.decode(errors="replace").split("\n")[0].strip())
        return self._version[1]

    async def save_golden(self, vid: str, dest: Path | str, *, timeout: float = 120) -> GoldenSnapshot:
        """Save running VM `vid` as a golden snapshot in directory `dest`, for start_clone; QEMU quits.

        The VM must have been started with `ram_file` and `ram_shared=True`: its RAM is then already in
        that file, so with `x-ignore-shared` the migration stream written to `<dest>/state.mig` holds only
        the device state (~1 MB, tens of ms). The VM is stopped first (so clones come up paused and are
        `cont`inued by start_clone) and quits after, which flushes its disks. Then:
        * the RAM file moves to `<dest>/ram` unless it is in `dest` already (put it there to avoid a copy
          across filesystems);
        * the VM's disks are referenced where they are: they are the snapshot's frozen disks, the backing
          files of every clone's overlay. The caller must never write to them again: do not start this VM
          again on them (remove() it: that deletes its state dir, never its disks).
        RAM file, state and disks are fsynced, then `<dest>/golden.json` is written (load_golden reads it
        back after a restart). On failure before the stream is complete the VM runs on (`cont`)."""
        self._check_id(vid)
        dest = Path(dest).absolute()
        p = self.paths(vid)
        pid = await asyncio.to_thread(self._pid, vid)
        if pid is None:
            raise VmFailure(f"{vid}: VM is not running")
        try:
            spec = VmSpec.from_dict(json.loads(await asyncio.to_thread(p.spec.read_text)))
        except (OSError, ValueError, TypeError) as e:
            raise VmFailure(f"{vid}: cannot read the spec it was started from ({p.spec}): {e}") from e
        if not spec.ram_file or not spec.ram_shared:
            raise VmFailure(f"{vid}: a golden snapshot needs a VM started with ram_file and ram_shared=True")
        spec = dataclasses.replace(spec, accel=spec.accel or await self.accelerator())
        version = await self.qemu_version()
        state = dest / "state.mig"

        def prepare() -> None:
            dest.mkdir(parents=True, exist_ok=True)
            if (dest / GoldenSnapshot.FILE).exists():
                raise VmFailure(f"{dest} already holds a golden snapshot")
            state.unlink(missing_ok=True)
        await asyncio.to_thread(prepare)
        await self._close_agent(vid)  # no agent exchange half done in the saved guest
        t0 = time.monotonic()
        async with self._lock(vid):
            try:
                async with self._qmp_session(vid) as qmp:
                    await self._exec(qmp, "migrate-set-capabilities", {"capabilities": [
                        {"capability": "x-ignore-shared", "state": True}]})
                    await self._exec(qmp, "stop")
                    try:
                        await self._exec(qmp, "migrate", {"uri": f"exec:cat > {shlex.quote(str(state))}"})
                        await self._wait_migration(qmp, vid, timeout)
                    except BaseException:
                        with contextlib.suppress(Exception):  # the VM was fine before: let it run on
                            await self._exec(qmp, "cont")
                        await asyncio.to_thread(state.unlink, True)
                        raise
                    with contextlib.suppress(QMPError, OSError, TimeoutError):
                        await self._exec(qmp, "quit")
            except (QMPError, OSError, TimeoutError) as e:
                raise VmFailure(f"{vid}: saving a golden snapshot failed: {e}") from e
            if not await hostcmd.wait_pid(pid, 30):
                await self._reap(pid)
            child = self._children.pop(pid, None)
            if child is not None:
                await child.wait()
        log.info("%s: saved as golden snapshot %s in %.2fs", vid, dest, time.monotonic() - t0)
        return await self._finish_golden(spec, dest, state, version)

    async def _finish_golden(self, spec: VmSpec, dest: Path, state: Path, version: str) -> GoldenSnapshot:
        assert spec.ram_file
        ram = Path(spec.ram_file)
        if ram.parent != dest:
            target = dest / "ram"
            try:
                await asyncio.to_thread(os.replace, ram, target)
                moved = True
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise VmFailure(f"cannot move {ram} to {target}: {e}") from e
                moved = False
            if not moved:  # another filesystem
                proc = await asyncio.create_subprocess_exec("cp", "--sparse=always", "--", str(ram), str(target),
                                                            stderr=subprocess.PIPE)
                _, err = await proc.communicate()
                if proc.returncode != 0:
                    raise VmFailure(f"cannot copy {ram} to {target}: {err.decode(errors='replace').strip()}")
                await asyncio.to_thread(ram.unlink)
            ram = target
        golden = GoldenSnapshot(directory=str(dest), state=str(state), ram_file=str(ram), disks=spec.disks,
                                spec=spec, qemu_version=version, saved_at=time.time())

        def persist() -> None:
            for path in (ram, state, *(Path(d.path) for d in spec.disks)):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            tmp = dest / (GoldenSnapshot.FILE + ".tmp")
            tmp.write_text(json.dumps(golden.to_dict(), indent=1))
            os.replace(tmp, dest / GoldenSnapshot.FILE)
            fd = os.open(dest, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        await asyncio.to_thread(persist)
        return golden

    async def load_golden(self, dest: Path | str) -> GoldenSnapshot:
        """The golden snapshot save_golden wrote in `dest` (VmFailure when there is none or a file is gone)."""
        def read() -> GoldenSnapshot:
            try:
                golden = GoldenSnapshot.from_dict(json.loads((Path(dest) / GoldenSnapshot.FILE).read_text()))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise VmFailure(f"no usable golden snapshot in {dest}: {e}") from e
            for f in (golden.state, golden.ram_file, *(d.path for d in golden.disks)):
                if not os.path.isfile(f):
                    raise VmFailure(f"golden snapshot {dest}: {f} is missing")
            return golden
        return await asyncio.to_thread(read)

    async def remove_golden(self, golden: GoldenSnapshot) -> None:
        """Delete the snapshot's directory (state, RAM file, golden.json), never its disks (the caller's).
        Running clones keep their mapping of the RAM file; restoring more needs the directory."""
        await asyncio.to_thread(shutil.rmtree, golden.directory, True)

    async def start_clone(self, spec: VmSpec, golden: GoldenSnapshot, *, link_down: bool = True,
                          timeout: float = 60) -> VmStatus:
        """Start VM `spec` from a golden snapshot: the guest resumes where the golden was saved, running.

        `spec` must describe the golden's machine (clone_mismatches says what must match and what may
        differ). Its disks must be fresh qcow2 overlays whose backing files are the golden's frozen disks,
        in the same order (`qemu-img create -f qcow2 -b <golden.disks[i].path> -F <format> <overlay>`, one
        per clone, never shared): the guest's page cache believes the disk is exactly as it was at the save.
        Its RAM is the golden's RAM file mapped privately (share=off, copy-on-write: clones share the page
        cache of what they only read); `spec.ram_file`/`ram_shared` are ignored. QEMU starts with
        `-incoming defer`, loads the device state, then (with `link_down`) unplugs every NIC so the clone
        is not on the network with the golden's identity (MAC, IP, host keys), and `cont`inues. The caller
        re-identifies the guest through the agent, then set_link(vid, i, True). Idempotent: a clone already
        restored is returned as is; one left half restored (QEMU still waiting for its state) starts over."""
        why = clone_mismatches(golden.spec, spec)
        if why:
            raise ValueError(f"{spec.id} cannot be a clone of {golden.directory}: {'; '.join(why)}")
        version = await self.qemu_version()
        if version != golden.qemu_version:
            raise VmFailure(f"golden snapshot {golden.directory} was saved by {golden.qemu_version!r}, "
                            f"this QEMU is {version!r}")
        spec = clone_spec(spec, golden)
        accel = spec.accel or await self.accelerator()
        await asyncio.to_thread(self._validate, spec)
        if not await asyncio.to_thread(os.path.isfile, golden.state):
            raise VmFailure(f"golden snapshot {golden.directory}: {golden.state} is missing")
        vid = spec.id
        async with self._lock(vid):
            pid = await asyncio.to_thread(self._pid, vid)
            if pid is not None:
                try:
                    qs = str((await self._qmp(vid, "query-status")).get("status"))
                except (QMPError, OSError, TimeoutError) as e:
                    raise VmFailure(f"{vid}: QEMU runs but its QMP monitor did not answer: {e}") from e
                if qs not in ("inmigrate", "prelaunch"):
                    return self._status_of(pid, qs)
                await self._reap(pid)  # a restore interrupted half way: start over
            t0 = time.monotonic()
            st = await self._spawn(spec, accel, ("-incoming", "defer"))
            assert st.pid is not None
            try:
                async with self._qmp_session(vid) as qmp:
                    await self._exec(qmp, "migrate-set-capabilities", {"capabilities": [
                        {"capability": "x-ignore-shared", "state": True}]})
                    await self._exec(qmp, "migrate-incoming", {"uri": f"exec:cat {shlex.quote(golden.state)}"})
                    await self._wait_migration(qmp, vid, timeout)
                    if link_down:  # after the load: the migrated virtio-net state carries the golden's link
                        for i in range(len(spec.nics)):
                            await self._exec(qmp, "set_link", {"name": f"net{i}", "up": False})
                    await self._exec(qmp, "cont")  # the golden was stopped when saved: it restores paused
                    qs = str((await self._exec(qmp, "query-status")).get("status"))
            except (QMPError, OSError, TimeoutError, VmFailure) as e:
                exited = await asyncio.to_thread(self._pid, vid) is None  # QEMU quits on a stream it cannot load
                await self._reap(st.pid)
                tail = await self._stderr_tail(vid)
                why = "QEMU exited while loading it" if exited else str(e)
                raise VmFailure(f"{vid}: restoring golden snapshot {golden.directory} failed: {why}"
                                + (f": {tail}" if tail else "")) from e
        log.info("%s: restored from %s in %.2fs (%s)", vid, golden.directory, time.monotonic() - t0, qs)
        return self._status_of(st.pid, qs)

    async def _reap(self, pid: int) -> None:
        """SIGKILL a QEMU of ours and wait until it is gone."""
        await self._signal(pid, signal.SIGKILL)
        await hostcmd.wait_pid(pid, 10)
        child = self._children.pop(pid, None)
        if child is not None:
            await child.wait()

    async def _qmp_running(self, vid: str, command: str, arguments: dict[str, Any]) -> None:
        """One QMP command to a running VM; VmFailure (with QEMU's reason) otherwise."""
        if await asyncio.to_thread(self._pid, vid) is None:
            raise VmFailure(f"{vid}: VM is not running")
        async with self._lock(vid):
            try:
                await self._qmp(vid, command, arguments)
            except QMPError as e:
                raise VmFailure(f"{vid}: {command} {arguments}: {e}") from e

    async def set_link(self, vid: str, nic_index: int, up: bool) -> None:
        """Plug (`up`) or unplug NIC `nic_index`'s cable: the guest sees the virtio-net link change."""
        await self._qmp_running(vid, "set_link", {"name": f"net{nic_index}", "up": up})

    async def block_resize(self, vid: str, disk_index: int, size_bytes: int) -> None:
        """Grow disk `disk_index` (its file and what the guest sees: virtio-blk tells the guest its new
        capacity). A clone's disk starts at its golden's size and is grown this way."""
        await self._qmp_running(vid, "block_resize", {"device": f"disk{disk_index}", "size": size_bytes})
