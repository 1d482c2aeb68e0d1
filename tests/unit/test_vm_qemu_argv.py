"""The QEMU driver's command lines and spec checks (no QEMU is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kumo.drivers.vms import DiskSpec, NicSpec, PortForward, QemuDriver, VmFailure, VmSpec


def _spec(tmp_path: Path, **kw) -> VmSpec:
    (tmp_path / "vmlinuz").write_bytes(b"k")
    return VmSpec(id="kvm-a", kernel=str(tmp_path / "vmlinuz"), append="console=ttyS0", **kw)


def test_argv_q35_tcg(tmp_path: Path) -> None:
    d = QemuDriver(tmp_path / "r", "kvm-")
    spec = _spec(tmp_path, vcpus=2, memory_mib=256, disks=(DiskSpec("/x/d.qcow2"),),
                 nics=(NicSpec("52:54:00:00:00:01", tap="tap1"),
                       NicSpec("52:54:00:00:00:02", forwards=(PortForward(2222, 22),))),
                 fw_cfg=(("opt/kumo/authorized_keys", "/k"),))
    argv = d.argv(spec, "tcg")
    joined = " ".join(argv)
    assert "-accel tcg,tb-size=16" in joined and "-cpu max" in joined and "-machine q35" in joined
    assert "-smp 2 -m 256M" in joined
    assert "tap,id=net0,ifname=tap1,script=no,downscript=no" in argv
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01" in argv
    assert "user,id=net1,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0" in argv
    assert f"unix:{tmp_path / 'r' / 'kvm-a' / 'qmp.sock'},server=on,wait=off" in argv
    assert "name=opt/kumo/authorized_keys,file=/k" in argv
    assert "file=/x/d.qcow2,if=none,id=disk0,format=qcow2,readonly=off" in argv
    assert "tsc_early_khz" not in joined


def test_argv_microvm_and_kvm(tmp_path: Path) -> None:
    d = QemuDriver(tmp_path, "kvm-")
    argv = d.argv(_spec(tmp_path, machine="microvm"), "tcg")
    assert "virtio-serial-device,id=vser0" in argv
    assert "tsc_early_khz=" in argv[argv.index("-append") + 1]
    argv = d.argv(_spec(tmp_path), "kvm")
    assert argv[argv.index("-accel") + 1] == "kvm" and argv[argv.index("-cpu") + 1] == "host"


def test_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        QemuDriver(tmp_path, "bad prefix")
    with pytest.raises(ValueError):
        QemuDriver(tmp_path / "a,b", "kvm-")
    d = QemuDriver(tmp_path, "kvm-")
    with pytest.raises(ValueError):
        d._validate(VmSpec(id="other", kernel=str(tmp_path / "vmlinuz")))
    with pytest.raises(ValueError):
        d._validate(_spec(tmp_path, nics=(NicSpec("52:54:00:00:00:0G"),)))
    with pytest.raises(VmFailure):
        d._validate(VmSpec(id="kvm-b", kernel=str(tmp_path / "missing")))
    with pytest.raises(ValueError):  # the QMP socket path would not fit sun_path
        QemuDriver(tmp_path / ("x" * 100), "kvm-")._validate(_spec(tmp_path))


async def test_absent_vm(tmp_path: Path) -> None:
    d = QemuDriver(tmp_path, "kvm-")
    assert (await d.status("kvm-none")).state == "absent"
    assert await d.powerdown("kvm-none") == "not running"
    await d.remove("kvm-none")
    assert await d.list_ids() == []
    assert await d.serial_log("kvm-none") == ""
