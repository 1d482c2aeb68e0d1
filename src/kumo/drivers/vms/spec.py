"""The VM driver's contract: what one QEMU virtual machine must be (built by the controller from the
store and the image manifest) and what the host says it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


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
