"""Reading the kernel's counters: /proc (process CPU time, a namespace's links, a process's I/O) and cgroup v1
files. Blocking but fast; callers run them in `asyncio.to_thread`, a whole sampling round per call."""

from __future__ import annotations

import os
import re
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _read(path: Path | str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # gone between listing and reading: a process or cgroup that just ended
        return None


def stat_cpu_seconds(stat: str) -> float:
    """utime + stime of a `/proc/<pid>[/task/<tid>]/stat` line, in seconds. The name field may hold spaces
    and parentheses, so fields are counted after its last ')': utime and stime are fields 14 and 15."""
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def threads_cpu_seconds(pid: int, prefixes: tuple[str, ...]) -> tuple[float, int] | None:
    """The CPU seconds of a process's threads whose name (`comm`) starts with one of `prefixes`, and how many
    there are (QEMU's vCPU threads are "CPU 0/KVM", "CPU 1/TCG", …). None when the process is gone."""
    task = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task)
    except OSError:
        return None
    total, count = 0.0, 0
    for tid in tids:
        comm = _read(f"{task}/{tid}/comm")
        if comm is None or not comm.startswith(prefixes):
            continue
        stat = _read(f"{task}/{tid}/stat")
        if stat is not None:
            total += stat_cpu_seconds(stat)
            count += 1
    return total, count


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """`/proc/net/dev` → {link: (received bytes, transmitted bytes)} as that namespace's host side counts."""
    links = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if sep and len(fields) >= 9:
            links[name.strip()] = (int(fields[0]), int(fields[8]))
    return links


def net_dev(pid: int) -> dict[str, tuple[int, int]] | None:
    """The links of the network namespace process `pid` is in, with their byte counters."""
    text = _read(f"/proc/{pid}/net/dev")
    return None if text is None else parse_net_dev(text)


def parse_io(text: str) -> dict[str, int]:
    """`/proc/<pid>/io` → its fields (read_bytes, write_bytes: what reached or came from storage)."""
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if value.strip().isdigit():
            fields[name.strip()] = int(value)
    return fields


def io(pid: int) -> dict[str, int] | None:
    text = _read(f"/proc/{pid}/io")
    return None if text is None else parse_io(text)


_INACTIVE_FILE = re.compile(r"^total_inactive_file (\d+)$", re.M)


def cgroup_v1_usage(root: Path, rel: str) -> tuple[int, float, int] | None:
    """(identity, CPU seconds, memory bytes) of cgroup `rel` in the v1 hierarchies under `root`; None when
    it does not exist. CPU is `cpuacct.usage` (hierarchical: every descendant's time counts, also of children
    since removed); memory is `memory.usage_in_bytes` less the inactive page cache, as `docker stats` and
    the container driver's `usage` count it. The identity (the cgroup directory's inode) changes when the
    cgroup is made again, so counters are not compared across that."""
    cpuacct = root / "cpuacct" / rel
    try:
        identity = os.stat(cpuacct).st_ino
    except OSError:
        return None
    cpu, mem, stat = (_read(cpuacct / "cpuacct.usage"), _read(root / "memory" / rel / "memory.usage_in_bytes"),
                      _read(root / "memory" / rel / "memory.stat"))
    if cpu is None or mem is None or stat is None:
        return None
    inactive = _INACTIVE_FILE.search(stat)
    return identity, int(cpu) / 1e9, max(0, int(mem) - (int(inactive.group(1)) if inactive else 0))


def cgroup_v1_pid(root: Path, rel: str) -> int | None:
    """A process in cgroup `rel` or a descendant of it (the memory hierarchy), or None when it holds none."""
    for directory, _dirs, _files in os.walk(root / "memory" / rel):  # nothing at all when it does not exist
        procs = _read(Path(directory) / "cgroup.procs")
        if procs and procs.split():
            return int(procs.split()[0])
    return None


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None
