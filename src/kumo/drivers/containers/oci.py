"""Building a container's OCI runtime config (config.json) in-process, and resolving the image's
User against the container's own /etc/passwd and /etc/group."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumo.drivers.containers.spec import ContainerSpec, RuntimeFailure

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOFILE_MAX = 20000  # the host's hard limit; root here lacks CAP_SYS_RESOURCE to go higher

# Docker's default capability set, and nothing more.
CAPABILITIES = tuple("CAP_" + c for c in (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"))
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_BASE_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
)


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups from the image's /etc/group
    home: str


def in_root(root: Path, rel: str) -> Path:
    """`rel` inside `root` with symlinks resolved as if `root` were `/`: reading an image's
    /etc/passwd must never follow a link out to the host's files."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    cur, hops = root, 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / part
        if nxt.is_symlink():
            hops += 1
            if hops > 40:
                raise RuntimeFailure(f"too many symlinks resolving {rel} in the image")
            target = os.readlink(nxt)
            if target.startswith("/"):
                cur = root
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        cur = nxt
    return cur


def _table(root: Path, rel: str) -> list[list[str]]:
    try:
        text = in_root(root, rel).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, user: str) -> User:
    """The image config's User ("", uid, uid:gid, name, name:group) as numbers, Docker's way."""
    passwd = [e for e in _table(rootfs, "etc/passwd") if len(e) >= 7 and e[2].isdigit() and e[3].isdigit()]
    groups = [e for e in _table(rootfs, "etc/group") if len(e) >= 4 and e[2].isdigit()]
    name, _, group = (user or "0").partition(":")
    if name.isdigit():
        entry = next((e for e in passwd if int(e[2]) == int(name)), None)
        uid = int(name)
    else:
        entry = next((e for e in passwd if e[0] == name), None)
        if entry is None:
            raise RuntimeFailure(f"unable to find user {name}: no matching entries in the image's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in groups if e[0] == group), None)
            if g is None:
                raise RuntimeFailure(f"unable to find group {group}: no matching entries in the image's /etc/group")
            gid = int(g[2])
    extra: tuple[int, ...] = ()
    if entry:
        extra = tuple(sorted({int(g[2]) for g in groups if entry[0] in g[3].split(",") and int(g[2]) != gid}))
    return User(uid, gid, extra, entry[5] if entry and entry[5] else "/")


def environment(spec: ContainerSpec, user: User, hostname: str) -> list[str]:
    env = list(spec.env)
    keys = {e.partition("=")[0] for e in env}
    if "PATH" not in keys:
        env.insert(0, DEFAULT_PATH)
    if "HOSTNAME" not in keys:
        env.append(f"HOSTNAME={hostname}")
    if "HOME" not in keys:
        env.append(f"HOME={user.home}")
    return env


def nofile_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return NOFILE_MAX if hard == resource.RLIM_INFINITY else min(NOFILE_MAX, hard)


def _user_mount(m: Any) -> dict[str, Any]:
    if not m.destination.startswith("/"):
        raise RuntimeFailure(f"mount destination {m.destination!r} must be an absolute path")
    if m.kind == "tmpfs":
        return {"destination": m.destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "ro" if m.readonly else "rw"]}
    if not os.path.exists(m.source):
        raise RuntimeFailure(f"mount source {m.source} does not exist")
    return {"destination": m.destination, "type": "bind", "source": m.source,
            "options": ["rbind", "rprivate", "ro" if m.readonly else "rw"]}


def config(spec: ContainerSpec, *, rootfs: Path, etc: Path, cgroups_path: str, user: User,
           memsw: bool) -> dict[str, Any]:
    """The OCI config for `spec`; `etc` holds the generated hostname, hosts and resolv.conf."""
    hostname = spec.hostname or spec.id
    nofile = nofile_limit()
    caps = list(CAPABILITIES)
    mounts = [dict(m) for m in _BASE_MOUNTS]
    for name in ("hostname", "hosts", "resolv.conf"):
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": str(etc / name),
                       "options": ["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"]})
    mounts += [_user_mount(m) for m in spec.mounts]
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.memory_bytes:
        # memory+swap equal to memory: no swap (when the kernel accounts swap at all).
        resources["memory"] = {"limit": spec.memory_bytes, **({"swap": spec.memory_bytes} if memsw else {})}
    if spec.cpu_millicores:
        resources["cpu"] = {"period": 100000, "quota": max(1000, spec.cpu_millicores * 100)}
    if spec.pids_limit:
        resources["pids"] = {"limit": spec.pids_limit}
    proc_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.groups:
        proc_user["additionalGids"] = list(user.groups)
    netns: dict[str, Any] = {"type": "network"}
    if spec.netns:
        netns["path"] = spec.netns
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": proc_user,
            "args": list(spec.args),
            "env": environment(spec, user, hostname),
            "cwd": spec.cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, netns],
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def etc_files(hostname: str, nameservers: tuple[str, ...]) -> dict[str, str]:
    return {
        "hostname": f"{hostname}\n",
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n",
        "resolv.conf": "".join(f"nameserver {ns}\n" for ns in nameservers),
    }
