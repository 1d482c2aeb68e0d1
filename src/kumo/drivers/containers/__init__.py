"""The container driver: OCI containers run by runc under conmon, with overlayfs root filesystems
and cgroup v1 limits (see runtime.py)."""

from kumo.drivers.containers.logs import follow, read_log
from kumo.drivers.containers.runtime import ContainerRuntime, ExecProcess
from kumo.drivers.containers.spec import ContainerSpec, ContainerStatus, Mount, RuntimeFailure

__all__ = ["ContainerRuntime", "ContainerSpec", "ContainerStatus", "ExecProcess", "Mount", "RuntimeFailure",
           "follow", "read_log"]
