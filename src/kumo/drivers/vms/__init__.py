"""Virtual machines: QEMU processes with direct kernel boot, QMP and the guest agent, and golden snapshots
cloned into running VMs (`spec.py` is the contract, `qemu.py` the driver)."""

from kumo.drivers.vms.qemu import QemuDriver
from kumo.drivers.vms.spec import (ABSENT, AgentError, DiskSpec, GoldenSnapshot, NicSpec, PortForward, VmFailure,
                                   VmPaths, VmSpec, VmStatus, clone_mismatches, clone_spec)

__all__ = ["ABSENT", "AgentError", "DiskSpec", "GoldenSnapshot", "NicSpec", "PortForward", "QemuDriver", "VmFailure",
           "VmPaths", "VmSpec", "VmStatus", "clone_mismatches", "clone_spec"]
