"""The container driver's contract: what one container must be (built by the controller from the
store and the image config) and what the host says it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal


class RuntimeFailure(Exception):
    """The host could not do what was asked: the message says why (often runc's own error text)."""


@dataclass(frozen=True)
class Mount:
    source: str  # a host path (bind) or ignored (tmpfs)
    destination: str  # absolute path inside the container
    readonly: bool = False
    kind: Literal["bind", "tmpfs"] = "bind"


@dataclass(frozen=True)
class ContainerSpec:
    id: str  # must start with the runtime's prefix; also the runc id and the cgroup leaf
    group: str  # container group: the parent cgroup /<prefix>/<group>
    layers: tuple[str, ...]  # overlay lowerdirs, top-most first
    args: tuple[str, ...]  # entrypoint + cmd, already combined
    env: tuple[str, ...] = ()  # "K=V"
    cwd: str = "/"
    user: str = ""  # image config User: "", "uid", "uid:gid", "name", "name:group" (resolved in the rootfs)
    hostname: str = ""  # "" = the id
    netns: str | None = None  # a path like /run/netns/X to join; None = a fresh netns with loopback only
    memory_bytes: int | None = None
    cpu_millicores: int | None = None  # -> CFS quota over a 100 ms period
    pids_limit: int | None = None
    mounts: tuple[Mount, ...] = ()
    log_path: str = ""  # conmon's k8s-file log; "" = <bundle>/ctr.log


State = Literal["created", "running", "stopped", "absent"]


@dataclass(frozen=True)
class ContainerStatus:
    state: State
    pid: int | None = None  # host pid of the container's init while it runs
    exit_code: int | None = None  # 128+signal when killed (137 for SIGKILL / OOM)
    oom_killed: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


ABSENT = ContainerStatus("absent")
