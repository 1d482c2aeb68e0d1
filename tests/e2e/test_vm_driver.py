"""The VM driver on the real host: the tiny image (`kumo vm-images build`) booted by QEMU (TCG here),
reached over the serial console, the guest agent, SSH (user-mode networking with a host port forward,
and a tap on a bridge in a network namespace made for the test), re-adopted by a second driver,
powered down and removed. Every QEMU process, state dir and namespace is checked to be gone after."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.drivers.vms import NicSpec, PortForward, QemuDriver, VmSpec
from kumo.images import vm as vm_images
from tests.conftest import free_port
from tests.vmlib import qemu_pids

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"),
                                 reason="VMs need root and qemu-system-x86 (scripts/setup.sh installs it)")]

PREFIX = f"kvmt{uuid.uuid4().hex[:4]}"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]


def _qemu_pids() -> list[int]:
    """QEMU processes whose command line names this run's prefix."""
    return qemu_pids(PREFIX)


@pytest.fixture(scope="module")
def image() -> vm_images.BuildResult:
    """The tiny image: the default directory's when it can be (a second or so when up to date)."""
    out = vm_images.default_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError:
        out = Path(tempfile.mkdtemp(prefix="kumo-vmimg-"))
    return vm_images.build(out, say=lambda _line: None)


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kvm", dir="/tmp"))  # short: socket paths must fit 107 bytes
    yield d
    assert not _qemu_pids(), "a QEMU process of this test survived"
    shutil.rmtree(d, ignore_errors=True)


def _spec(image: vm_images.BuildResult, vid: str, append: str = "", **kw) -> VmSpec:
    return VmSpec(id=vid, kernel=str(image.directory / "vmlinuz"), initrd=str(image.directory / "initrd.img"),
                  append=f"{vm_images.BOOT_APPEND} {append}".strip(), memory_mib=128, **kw)


async def _ssh(argv_prefix: list[str], key: Path, target: str, command: str, port: int = 22,
               timeout: float = 20) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*argv_prefix, "ssh", *SSH_OPTS, "-i", str(key), "-p", str(port), target, command],
                              capture_output=True, text=True, timeout=timeout)
    return await asyncio.to_thread(run)


async def _wait_ssh(argv_prefix: list[str], key: Path, target: str, port: int, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        r = await _ssh(argv_prefix, key, target, "true", port)
        if r.returncode == 0:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no SSH to {target}:{port} within {timeout}s: {r.stderr.strip()}")
        await asyncio.sleep(0.2)


def test_image_layout_and_cache(image: vm_images.BuildResult, tmp_path: Path) -> None:
    """The manifest is what the marketplace lists; a second build is a quick no-op."""
    from kumo.compute.marketplace import ImageCatalog

    cat = ImageCatalog(image.directory.parent)
    found = cat.find("kumo", "tiny", "1", "latest")
    assert found is not None and found.alias == "Tiny" and found.urn == "kumo:tiny:1:1.0.0"
    assert found.file("kernel") and found.file("kernel").stat().st_size > 1_000_000  # type: ignore[union-attr]
    assert found.file("initrd") and found.file("initrd").is_file()  # type: ignore[union-attr]
    lines: list[str] = []
    t0 = time.monotonic()
    again = vm_images.build(image.directory.parent, say=lines.append)
    assert again.up_to_date and "up to date" in lines[0]
    assert time.monotonic() - t0 < 5


@pytest.mark.slow
async def test_boot_agent_ssh_readopt_powerdown(image: vm_images.BuildResult, root: Path, ssh_key: Path) -> None:
    """Three boots on user-mode networking (the first checked in full), with boot-to-marker and
    boot-to-SSH times (p50 printed)."""
    driver = QemuDriver(root, PREFIX, canary=(image.directory / "vmlinuz", image.directory / "initrd.img"))
    assert await driver.probe() is None
    accel = await driver.accelerator()
    assert accel in ("kvm", "tcg")
    assert (root / "accel.json").is_file()
    pubkey = __import__("base64").b64encode(ssh_key.with_suffix(".pub").read_bytes()).decode()
    markers, sshs = [], []
    for n in range(3):
        vid = f"{PREFIX}-u{n}"
        port = free_port()
        spec = _spec(image, vid, f"kumo.host=vm{n} kumo.ssh={pubkey}",
                     nics=(NicSpec("52:54:00:00:10:%02x" % n, forwards=(PortForward(port, 22),)),))
        t0 = time.monotonic()
        st = await driver.start(spec)
        assert st.running and st.pid
        assert (await driver.start(spec)).pid == st.pid  # idempotent
        await driver.wait_serial(vid, vm_images.READY_MARKER, 90)
        markers.append(time.monotonic() - t0)
        await _wait_ssh([], ssh_key, "root@127.0.0.1", port, 60)
        sshs.append(time.monotonic() - t0)
        if n == 0:
            log = await driver.serial_log(vid)
            assert f"{vm_images.READY_MARKER} host=vm0 ip=10.0.2.15/24" in log
            assert f"{vm_images.HOSTKEY_MARKER} ssh-ed25519 " in log
            await driver.wait_agent(vid, 30)
            assert await driver.agent_ping(vid)
            code, out, err = await driver.agent_exec(vid, ["uname", "-r"])
            assert (code, out.decode().strip(), err) == (0, image.kernel_version, b"")
            code, out, err = await driver.agent_exec(
                vid, ["sh", "-c", "tr a-z A-Z; echo oops >&2; exit 7"], input=b"hello agent\n")
            assert (code, out, err) == (7, b"HELLO AGENT\n", b"oops\n")
            with pytest.raises(TimeoutError):
                await driver.agent_exec(vid, ["sleep", "30"], timeout=1)
            code, out, _ = await driver.agent_exec(vid, ["hostname"])  # the agent still works after that
            assert (code, out) == (0, b"vm0\n")
            r = await _ssh([], ssh_key, "root@127.0.0.1", "hostname; id -u; uname -r", port)
            assert r.returncode == 0 and r.stdout.split() == ["vm0", "0", image.kernel_version], r.stderr

            # a second driver (a restarted kumo) re-adopts the running VM through its state dir
            other = QemuDriver(root, PREFIX)
            st2 = await other.status(vid)
            assert st2.state == "running" and st2.qmp_status == "running" and st2.pid == st.pid
            assert await other.list_ids() == [vid]
            assert (await other.start(spec)).pid == st.pid
            await other.close()

            assert await driver.powerdown(vid, timeout=30) == "acpi"
            assert (await driver.status(vid)).state == "stopped"
            assert "Power down" in await driver.serial_log(vid)
            assert await driver.powerdown(vid) == "not running"
        await driver.remove(vid)
        assert (await driver.status(vid)).state == "absent"
        assert not (root / vid).exists()
        await driver.remove(vid)  # idempotent
    await driver.close()
    assert await driver.list_ids() == []
    print(f"\nboot to marker: p50 {statistics.median(markers):.2f}s {[round(t, 2) for t in markers]}; "
          f"boot to SSH: p50 {statistics.median(sshs):.2f}s {[round(t, 2) for t in sshs]} ({accel})")


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace of our own with bridge br0 (10.99.0.1/24) and tap0 on it, as a VNet subnet has."""
    name = f"kumotest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "br0", "type", "bridge"],
                    ["ip", "addr", "add", "10.99.0.1/24", "dev", "br0"],
                    ["ip", "link", "set", "br0", "up"],
                    ["ip", "tuntap", "add", "tap0", "mode", "tap"],
                    ["ip", "link", "set", "tap0", "master", "br0"],
                    ["ip", "link", "set", "tap0", "up"]):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.slow
async def test_boot_on_tap_in_netns(image: vm_images.BuildResult, root: Path, ssh_key: Path, netns: str) -> None:
    """QEMU inside a namespace on a tap, static address from the cmdline, keys by fw_cfg; SSH from the netns."""
    driver = QemuDriver(root, PREFIX)
    vid = f"{PREFIX}-tap"
    spec = _spec(image, vid, "kumo.ip=10.99.0.20/24 kumo.gw=10.99.0.1 kumo.host=tapvm",
                 nics=(NicSpec("52:54:00:99:00:14", tap="tap0"),), netns=netns,
                 fw_cfg=((vm_images.FW_CFG_KEYS, str(ssh_key.with_suffix(".pub"))),))
    t0 = time.monotonic()
    await driver.start(spec)
    try:
        await driver.wait_serial(vid, vm_images.READY_MARKER, 90)
        marker = time.monotonic() - t0
        assert "ip=10.99.0.20/24" in await driver.serial_log(vid)
        into = ["ip", "netns", "exec", netns]
        await _wait_ssh(into, ssh_key, "root@10.99.0.20", 22, 60)
        ssh = time.monotonic() - t0
        r = await _ssh(into, ssh_key, "root@10.99.0.20", "hostname; ip -4 route show default")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "tapvm" and "via 10.99.0.1" in r.stdout
        code, out, _ = await driver.agent_exec(vid, ["ping", "-c", "1", "-W", "2", "10.99.0.1"])
        assert code == 0, out
        print(f"\ntap boot: marker {marker:.2f}s, SSH {ssh:.2f}s")
    finally:
        await driver.remove(vid)
        await driver.close()
