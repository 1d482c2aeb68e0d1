"""Virtual machines: QEMU processes with direct kernel boot, QMP and the guest agent (`spec.py` is the
contract, `qemu.py` the driver)."""

from kumo.drivers.vms.qemu import QemuDriver
from kumo.drivers.vms.spec import (ABSENT, AgentError, DiskSpec, NicSpec, PortForward, VmFailure, VmPaths,
                                   VmSpec, VmStatus)

__all__ = ["ABSENT", "AgentError", "DiskSpec", "NicSpec", "PortForward", "QemuDriver", "VmFailure", "VmPaths",
           "VmSpec", "VmStatus"]
