"""The VM driver's contract: what one QEMU virtual machine must be (built by the controller from the
store and the image manifest) and what the host says it is."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


class VmFailure(Exception):
    """The host could not do what was asked: the message says why (often QEMU's own error text)."""


class AgentError(VmFailure):
    """The guest agent did not answer, or answered with an error."""


@dataclass(frozen=True)
class DiskSpec:
    path: str  # host file
    format: Literal["raw", "qcow2"] = "qcow2"
    readonly: bool = False


@dataclass(frozen=True)
class PortForward:
    """User-mode networking only: host_addr:host_port on the host -> guest_port in the guest."""

    host_port: int
    guest_port: int
    host_addr: str = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True)
class NicSpec:
    """A virtio NIC: on a tap QEMU opens by name (in the VM's netns: a VNet's tap endpoint), or on
    QEMU's user-mode network (slirp: no root, no bridge; guest 10.0.2.15 by DHCP) with port forwards."""

    mac: str  # 52:54:00:xx:xx:xx
    tap: str | None = None  # None: user-mode networking
    forwards: tuple[PortForward, ...] = ()


@dataclass(frozen=True)
class VmSpec:
    id: str  # must start with the driver's prefix; also the state dir name and QEMU's -name
    kernel: str  # direct kernel boot: host paths of the kernel and initrd
    initrd: str | None = None
    append: str = ""  # kernel cmdline
    vcpus: int = 1
    memory_mib: int = 128
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    accel: Literal["kvm", "tcg"] | None = None  # None: what QemuDriver.accelerator() found works here
    machine: Literal["q35", "microvm"] = "q35"
    netns: str | None = None  # run QEMU inside this named network namespace (/run/netns/<name>)
    fw_cfg: tuple[tuple[str, str], ...] = ()  # (name, host file): e.g. ("opt/kumo/authorized_keys", path)
    tb_size_mib: int = 16  # TCG translation cache (QEMU's default is 1 GiB of address space)
    # Guest RAM from a host file (memory-backend-file) instead of anonymous memory: what a golden snapshot
    # needs (QemuDriver.save_golden). `ram_shared`: share=on, the guest's writes land in the file (the golden's
    # source VM); off: a private copy-on-write mapping of it (what start_clone uses).
    ram_file: str | None = None
    ram_shared: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VmSpec:
        """The inverse of dataclasses.asdict (spec.json, golden.json); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["disks"] = tuple(DiskSpec(**x) for x in d.get("disks", ()))
        kw["nics"] = tuple(NicSpec(**{**n, "forwards": tuple(PortForward(**f) for f in n.get("forwards", ()))})
                           for n in d.get("nics", ()))
        kw["fw_cfg"] = tuple(tuple(x) for x in d.get("fw_cfg", ()))
        return cls(**kw)


def clone_mismatches(golden: VmSpec, clone: VmSpec) -> list[str]:
    """Why `clone` cannot restore a golden snapshot saved from `golden` (empty: it can).

    The migration stream holds the state of every device, keyed by its place on the bus, and the guest's
    RAM is the golden's; so the machine, vCPUs, memory, accelerator and the device list must be the same:
    as many disks, each of the same format and read-only-ness, and as many NICs, each of the same kind (a
    user-mode NIC carries slirp state in the stream: a tap in its place fails the load with "Unknown savevm
    section or instance 'slirp'"; a vCPU more fails it too). What may differ (tried): the id, the disk
    paths (a fresh overlay on the golden's frozen disk), tap names, MACs, port forwards, the netns,
    tb_size_mib, kernel/initrd/append/fw_cfg (read at boot: the clone keeps the golden's cmdline and sees
    the clone's only after a reboot), ram_file/ram_shared (the golden's file is used, privately).
    A clone starts with the golden's MAC (virtio-net migrates the one the guest uses): the clone's own
    reaches the guest when it sets it (`ip link set eth0 address …`) or reboots."""
    why = []
    for f in ("machine", "vcpus", "memory_mib"):
        if getattr(golden, f) != getattr(clone, f):
            why.append(f"{f} {getattr(clone, f)!r} != golden's {getattr(golden, f)!r}")
    if clone.accel is not None and golden.accel is not None and clone.accel != golden.accel:
        why.append(f"accel {clone.accel} != golden's {golden.accel}")
    if len(golden.disks) != len(clone.disks):
        why.append(f"{len(clone.disks)} disks != golden's {len(golden.disks)}")
    for i, (g, c) in enumerate(zip(golden.disks, clone.disks, strict=False)):
        if (g.format, g.readonly) != (c.format, c.readonly):
            why.append(f"disk {i}: {c.format}/readonly={c.readonly} != golden's {g.format}/readonly={g.readonly}")
    if len(golden.nics) != len(clone.nics):
        why.append(f"{len(clone.nics)} NICs != golden's {len(golden.nics)}")
    for i, (gn, cn) in enumerate(zip(golden.nics, clone.nics, strict=False)):
        if (gn.tap is None) != (cn.tap is None):
            why.append(f"NIC {i}: {'tap' if cn.tap else 'user-mode'} != golden's {'tap' if gn.tap else 'user-mode'}")
    return why


@dataclass(frozen=True)
class GoldenSnapshot:
    """A VM saved for cloning (QemuDriver.save_golden): its device state (`state`, the migration stream
    without guest RAM, ~1 MB), its RAM image (`ram_file`) and the disks that match that RAM (`disks`: the
    backing files of every clone's overlay). Written as `<directory>/golden.json` (load_golden reads it).
    Nothing here may change while clones exist: a clone maps `ram_file` privately, so a write to that file
    shows through in every clone's pages not yet written by the clone, and its disks are the clones' backing files."""

    directory: str
    state: str
    ram_file: str
    disks: tuple[DiskSpec, ...]
    spec: VmSpec  # the VM it was saved from (accel resolved)
    qemu_version: str  # a restore needs the same QEMU
    saved_at: float  # time.time()

    FILE = "golden.json"
    FORMAT = "kumo-vm-golden/1"

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GoldenSnapshot:
        if d.get("format") != cls.FORMAT:
            raise ValueError(f"not a {cls.FORMAT} document: format {d.get('format')!r}")
        return cls(directory=d["directory"], state=d["state"], ram_file=d["ram_file"],
                   disks=tuple(DiskSpec(**x) for x in d["disks"]), spec=VmSpec.from_dict(d["spec"]),
                   qemu_version=d["qemu_version"], saved_at=float(d["saved_at"]))


@dataclass(frozen=True)
class VmPaths:
    """Everything of one VM on the host lives in its state dir `<root>/<id>/`."""

    state_dir: Path
    qmp: Path  # QMP monitor socket
    qga: Path  # guest agent (virtio-serial org.qemu.guest_agent.0) socket
    serial: Path  # the serial console, written by QEMU
    pidfile: Path
    stderr: Path  # QEMU's own stdout and stderr
    spec: Path  # the VmSpec it was started from, as JSON
    argv: Path  # the command line, for debugging


State = Literal["running", "paused", "shutdown", "stopped", "absent", "unresponsive"]


@dataclass(frozen=True)
class VmStatus:
    """`running`/`paused`/`shutdown`: QEMU runs and QMP says so (`shutdown`: the guest powered off but
    QEMU waits, which kumo's QEMU never does); `stopped`: state dir without a live QEMU; `absent`: no
    state dir; `unresponsive`: QEMU lives but its QMP socket did not answer in time (another client?)."""

    state: State
    pid: int | None = None
    qmp_status: str | None = None  # QMP query-status "status": running, paused, prelaunch, shutdown, …

    @property
    def running(self) -> bool:
        return self.state == "running"


ABSENT = VmStatus("absent")


def clone_spec(spec: VmSpec, golden: GoldenSnapshot) -> VmSpec:
    """What start_clone runs (and records as the VM's spec.json) for `spec`: the golden's RAM file mapped
    privately and the golden's accelerator. Compare a running clone's spec.json with this, not with `spec`."""
    return dataclasses.replace(spec, ram_file=golden.ram_file, ram_shared=False, accel=golden.spec.accel or spec.accel)
