"""Golden snapshots and clones in the VM driver, on the real host: the tiny image booted with its RAM in a
shared file, saved as a golden snapshot, and restored into two clones at once that come up running in a
fraction of a second, each re-identified through the guest agent, with copy-on-write RAM and disks of their
own. Every QEMU process, state dir, RAM file and disk is checked to be gone after."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.compute.marketplace import ImageCatalog, MarketplaceImage
from kumo.drivers.vms import (DiskSpec, GoldenSnapshot, NicSpec, PortForward, QemuDriver, VmFailure, VmSpec,
                              clone_mismatches, clone_spec)
from kumo.images import vm as vm_images
from tests.conftest import free_port
from tests.vmlib import qemu_pids

pytestmark = pytest.mark.e2e

PREFIX = f"ksnp{uuid.uuid4().hex[:4]}"
needs_qemu = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64")
                                or not shutil.which("qemu-img"),
                                reason="VMs need root, qemu-system-x86 and qemu-utils (scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def image() -> MarketplaceImage:
    """The built tiny image, found the way the marketplace finds it (this test does not build it)."""
    found = ImageCatalog(vm_images.default_dir()).find("kumo", "tiny", "1", "latest")
    if found is None or not found.file("kernel") or not found.file("initrd"):
        pytest.skip(f"the tiny VM image is not built in {vm_images.default_dir()} (run `kumo vm-images build`)")
    return found


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ksn", dir="/tmp"))  # short: socket paths must fit 107 bytes
    yield d
    assert not qemu_pids(PREFIX), "a QEMU process of this test survived"
    shutil.rmtree(d, ignore_errors=True)


def _spec(image: MarketplaceImage, vid: str, append: str = "", **kw) -> VmSpec:
    return VmSpec(id=vid, kernel=str(image.file("kernel")), initrd=str(image.file("initrd")),
                  append=f"{vm_images.BOOT_APPEND} {append}".strip(), memory_mib=128, **kw)


# ---- no QEMU needed ---------------------------------------------------------------------------------


def test_ram_file_argv_and_default(tmp_path: Path) -> None:
    """Anonymous RAM stays the default; ram_file gives a memory-backend-file the machine uses."""
    (tmp_path / "vmlinuz").write_bytes(b"k")
    d = QemuDriver(tmp_path / "r", "kvm-")
    plain = VmSpec(id="kvm-a", kernel=str(tmp_path / "vmlinuz"))
    argv = d.argv(plain, "tcg")
    assert argv[argv.index("-machine") + 1] == "q35" and "-object" not in argv and "-incoming" not in argv
    for shared, share in ((True, "on"), (False, "off")):
        argv = d.argv(dataclasses.replace(plain, ram_file="/x/r,am", ram_shared=shared, memory_mib=256), "tcg")
        assert argv[argv.index("-machine") + 1] == "q35,memory-backend=ram0"
        backend = f"memory-backend-file,id=ram0,size=256M,mem-path=/x/r,,am,share={share}"
        assert argv[argv.index("-object") + 1] == backend
    with pytest.raises(ValueError):
        d._validate(dataclasses.replace(plain, ram_file="relative/ram"))
    with pytest.raises(VmFailure):  # a directory would give QEMU an unlinked temporary file
        d._validate(dataclasses.replace(plain, ram_file=str(tmp_path)))
    (tmp_path / "small").write_bytes(b"x" * 4096)
    with pytest.raises(VmFailure):
        d._validate(dataclasses.replace(plain, ram_file=str(tmp_path / "small")))


async def test_clone_mismatches_and_golden_json(tmp_path: Path) -> None:
    g = VmSpec(id="kvm-g", kernel="/k", disks=(DiskSpec("/d/g.qcow2"),),
               nics=(NicSpec("52:54:00:00:00:01", forwards=(PortForward(2222, 22),)),
                     NicSpec("52:54:00:00:00:02", tap="tap1")),
               accel="tcg", ram_file="/g/ram", ram_shared=True, fw_cfg=(("opt/x", "/f"),))
    ok = dataclasses.replace(g, id="kvm-c", disks=(DiskSpec("/d/c.qcow2"),), append="other", netns="ns2",
                             nics=(NicSpec("52:54:00:00:00:03"), NicSpec("52:54:00:00:00:04", tap="tap9")),
                             ram_file=None, ram_shared=False, tb_size_mib=64, fw_cfg=())
    assert clone_mismatches(g, ok) == []
    bad = dataclasses.replace(ok, vcpus=2, memory_mib=256, machine="microvm", disks=(DiskSpec("/d/c.raw", "raw"),),
                              nics=(NicSpec("52:54:00:00:00:03", tap="tap0"), NicSpec("52:54:00:00:00:04", tap="t")))
    why = " | ".join(clone_mismatches(g, bad))
    for what in ("vcpus", "memory_mib", "machine", "disk 0", "NIC 0"):
        assert what in why
    assert "NIC 1" not in why
    assert clone_mismatches(g, dataclasses.replace(ok, nics=ok.nics[:1])) == ["1 NICs != golden's 2"]

    golden = GoldenSnapshot(directory="/s", state="/s/state.mig", ram_file="/s/ram", disks=g.disks, spec=g,
                            qemu_version="QEMU emulator version 7.2.22", saved_at=1.5)
    doc = json.loads(json.dumps(golden.to_dict()))
    assert doc["format"] == GoldenSnapshot.FORMAT
    assert GoldenSnapshot.from_dict(doc) == golden
    assert VmSpec.from_dict(json.loads(json.dumps(dataclasses.asdict(g)))) == g
    with pytest.raises(ValueError):
        GoldenSnapshot.from_dict({**doc, "format": "other"})
    assert clone_spec(ok, golden) == dataclasses.replace(ok, ram_file="/s/ram", ram_shared=False, accel="tcg")
    with pytest.raises(ValueError, match="vcpus"):  # refused before anything is started
        await QemuDriver(tmp_path, "kvm-").start_clone(bad, golden)
    assert not (tmp_path / "kvm-c").exists()


# ---- the real thing ---------------------------------------------------------------------------------


def _rollup(pid: int) -> dict[str, int]:
    """kB figures of /proc/<pid>/smaps_rollup (Rss, Pss, Pss_Anon, Pss_File, …)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def _sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def _ssh_banner(port: int, timeout: float) -> float:
    """Seconds until the guest's SSH server greets on 127.0.0.1:port (through the user-mode forward)."""
    t0 = time.monotonic()
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
            try:
                if (await asyncio.wait_for(reader.readline(), 3)).startswith(b"SSH-"):
                    return time.monotonic() - t0
            finally:
                writer.close()
        except (OSError, TimeoutError):
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no SSH banner on port {port} within {timeout}s")
        await asyncio.sleep(0.1)


async def _sh(driver: QemuDriver, vid: str, script: str) -> str:
    code, out, err = await driver.agent_exec(vid, ["sh", "-c", script])
    assert code == 0, (vid, script, out, err)
    return out.decode()


@needs_qemu
@pytest.mark.slow
async def test_golden_snapshot_two_clones(image: MarketplaceImage, root: Path) -> None:
    """Boot → golden snapshot → two clones at once: running and answering the agent in well under a
    second each (a boot takes seconds), separate identities, copy-on-write RAM and disks, a golden RAM file
    no clone changes, and the network plugged in only when asked."""
    driver = QemuDriver(root, PREFIX)
    gdir = root / "golden"
    gdir.mkdir()
    disk = root / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    gid = f"{PREFIX}-g"
    gspec = _spec(image, gid, "kumo.host=golden", disks=(DiskSpec(str(disk)),),
                  nics=(NicSpec("52:54:00:00:30:01", forwards=(PortForward(free_port(), 22),)),),
                  ram_file=str(gdir / "ram"), ram_shared=True)
    clones = [f"{PREFIX}-c{n}" for n in (1, 2)]
    try:
        t0 = time.monotonic()
        await driver.start(gspec)
        await driver.wait_agent(gid, 90)
        boot = time.monotonic() - t0
        await _sh(driver, gid, "echo golden > /tmp/who; printf golden-disk | dd of=/dev/vda conv=fsync 2>/dev/null")

        t0 = time.monotonic()
        golden = await driver.save_golden(gid, gdir)
        save = time.monotonic() - t0
        assert (await driver.status(gid)).state == "stopped"
        await driver.remove(gid)  # its disk stays: it is the snapshot's frozen disk now
        assert disk.is_file() and not (root / gid).exists()
        assert golden.ram_file == str(gdir / "ram") and golden.disks == gspec.disks
        assert golden.spec.accel in ("tcg", "kvm") and golden.spec.ram_file == golden.ram_file
        assert await driver.load_golden(gdir) == golden  # survives a restart of kumo
        state_size = os.path.getsize(golden.state)
        assert state_size < 4 << 20, "x-ignore-shared: the guest RAM must not be in the stream"
        ram_sha = await asyncio.to_thread(_sha, golden.ram_file)

        ports = [free_port(), free_port()]
        specs = []
        for n, (vid, port) in enumerate(zip(clones, ports, strict=True), 1):
            overlay = root / f"{vid}.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "qcow2", str(overlay)],
                           check=True)
            specs.append(_spec(image, vid, f"kumo.host=clone{n}", disks=(DiskSpec(str(overlay)),),
                               nics=(NicSpec(f"52:54:00:00:30:{n + 1:02x}", forwards=(PortForward(port, 22),)),)))

        async def restore(spec: VmSpec) -> tuple[float, float, int]:
            t0 = time.monotonic()
            st = await driver.start_clone(spec, golden)
            running = time.monotonic() - t0
            assert st.running and st.qmp_status == "running" and st.pid
            await driver.wait_agent(spec.id, 30)
            return running, time.monotonic() - t0, st.pid
        results = await asyncio.gather(*(restore(s) for s in specs))
        for (running, agent, _pid) in results:
            assert running < 5 and agent < 10, results

        # idempotent: a clone already running is left alone
        st = await driver.start_clone(specs[0], golden)
        assert st.running and st.pid == results[0][2]
        # a clone maps the RAM privately: it cannot be a golden's source
        with pytest.raises(VmFailure, match="ram_shared"):
            await driver.save_golden(clones[0], root / "nope")

        # what the golden had, both have; links are down until set_link
        for vid in clones:
            assert await _sh(driver, vid, "cat /tmp/who; hostname; cat /sys/class/net/eth0/carrier; "
                                          "cat /sys/class/net/eth0/address; head -c 11 /dev/vda") \
                == "golden\ngolden\n0\n52:54:00:00:30:01\ngolden-disk"

        # a new identity each, through the agent: hostname, MAC (virtio-net migrated the golden's), clock
        for n, (vid, spec) in enumerate(zip(clones, specs, strict=True), 1):
            mac = spec.nics[0].mac
            await _sh(driver, vid, f"hostname clone{n}; ip link set eth0 address {mac}")
            assert await _sh(driver, vid, "hostname; cat /sys/class/net/eth0/address") == f"clone{n}\n{mac}\n"
            await driver.agent_call(vid, "guest-set-time")  # from the RTC: the guest clock stood still while saved
            assert abs(int(await _sh(driver, vid, "date +%s")) - time.time()) < 3

        # copy-on-write: RAM (/tmp is the initramfs) and disk (each clone has its own overlay)
        await _sh(driver, clones[0], "echo one > /tmp/only-in-1; printf clone1-disk | dd of=/dev/vda conv=fsync "
                                     "2>/dev/null; echo 3 > /proc/sys/vm/drop_caches")
        assert await _sh(driver, clones[1], "ls /tmp; echo 3 > /proc/sys/vm/drop_caches; head -c 11 /dev/vda") \
            == "who\ngolden-disk"
        assert await _sh(driver, clones[0], "cat /tmp/only-in-1; head -c 11 /dev/vda") == "one\nclone1-disk"
        assert await asyncio.to_thread(_sha, golden.ram_file) == ram_sha, "a clone wrote to the golden's RAM file"

        # networking: plugged in on request, through this clone's own port forward
        t0 = time.monotonic()
        await driver.set_link(clones[0], 0, True)
        link = time.monotonic() - t0
        banner = await _ssh_banner(ports[0], 20)
        assert await _sh(driver, clones[0], "cat /sys/class/net/eth0/carrier") == "1\n"
        assert await _sh(driver, clones[1], "cat /sys/class/net/eth0/carrier") == "0\n"

        mem = {vid: _rollup(pid) for vid, (_r, _a, pid) in zip(clones, results, strict=True)}
        print(f"\ncold boot to agent {boot:.2f}s; save {save:.3f}s (state {state_size / 1e6:.2f} MB + RAM file "
              f"{os.stat(golden.ram_file).st_blocks * 512 / 1e6:.0f} MB)")
        for vid, (running, agent, _pid) in zip(clones, results, strict=True):
            m = mem[vid]
            print(f"{vid}: restore→running {running:.3f}s, restore→agent {agent:.3f}s; RSS {m['Rss'] / 1024:.0f} MB,"
                  f" PSS {m['Pss'] / 1024:.0f} MB (anon {m['Pss_Anon'] / 1024:.0f}, file {m['Pss_File'] / 1024:.0f})")
        print(f"set_link up → SSH banner through the clone's forward: {link + banner:.2f}s")
    finally:
        for vid in (gid, *clones):
            await driver.remove(vid)
        if (gdir / GoldenSnapshot.FILE).exists():
            await driver.remove_golden(await driver.load_golden(gdir))
        await driver.close()
    assert not gdir.exists() and await driver.list_ids() == []
