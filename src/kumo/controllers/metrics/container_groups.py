"""Metrics of container groups, from the group's cgroup and its network namespace.

A group's containers live in cgroups under `/<runtime prefix>/g<hash of the group's key>` (cgroup v1, see
drivers/containers/runtime.py), so that parent cgroup counts all of them, init containers and exec
sessions included: CpuUsage is its `cpuacct.usage` growth over the round in millicores, MemoryUsage its
memory in use (less inactive page cache). The group's containers share one network namespace; its links'
counters, read through `/proc/<pid>/net/dev` of any process in the group, give the bytes per second the
group received and transmitted (loopback traffic between its containers is not counted)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kumo.controllers.metrics import procfs
from kumo.controllers.metrics.base import Deltas, MetricDefinition, MetricSource, Tick, Values
from kumo.controllers.network import short_hash
from kumo.drivers.containers.runtime import CGROUP_ROOT

if TYPE_CHECKING:
    from kumo.controllers.container_groups.controller import ContainerController

GROUP_TYPE = "microsoft.containerinstance/containergroups"
CPU, MEMORY = "CpuUsage", "MemoryUsage"
RECEIVED, TRANSMITTED = "NetworkBytesReceivedPerSecond", "NetworkBytesTransmittedPerSecond"
_SUPPORTED = ("None", "Average", "Minimum", "Maximum")

# Azure's definitions (Microsoft.ContainerInstance/containerGroups)
DEFINITIONS = (
    MetricDefinition(CPU, "CPU Usage", "Count", "Average", "CPU usage on all cores in millicores.", _SUPPORTED),
    MetricDefinition(MEMORY, "Memory Usage", "Bytes", "Average", "Total memory usage in byte.", _SUPPORTED),
    MetricDefinition(RECEIVED, "Network Bytes Received Per Second", "Bytes", "Average",
                     "The network bytes received per second.", _SUPPORTED),
    MetricDefinition(TRANSMITTED, "Network Bytes Transmitted Per Second", "Bytes", "Average",
                     "The network bytes transmitted per second.", _SUPPORTED),
)


@dataclass(frozen=True)
class _Reading:
    identity: tuple[int, int | None]  # (the cgroup's inode, the namespace's inode)
    memory: int
    counters: dict[str, float]


def _read_group(prefix: str, key: str) -> _Reading | None:
    rel = f"{prefix}/g{short_hash(key)}"
    usage = procfs.cgroup_v1_usage(CGROUP_ROOT, rel)
    if usage is None:
        return None
    cgroup, cpu_seconds, memory = usage
    counters = {"cpu": cpu_seconds}
    pid = procfs.cgroup_v1_pid(CGROUP_ROOT, rel)
    netns = procfs.netns_inode(pid) if pid is not None else None
    links = procfs.net_dev(pid) if pid is not None else None
    if links is not None:
        counters["rx"] = float(sum(rx for name, (rx, _tx) in links.items() if name != "lo"))
        counters["tx"] = float(sum(tx for name, (_rx, tx) in links.items() if name != "lo"))
    return _Reading((cgroup, netns), memory, counters)


def _read_groups(prefix: str, keys: list[str]) -> dict[str, _Reading]:
    """Every group's counters (in a worker thread: a few small cgroup and /proc reads per group)."""
    readings = {}
    for key in keys:
        reading = _read_group(prefix, key)
        if reading is not None:
            readings[key] = reading
    return readings


class ContainerGroupSource(MetricSource):
    resource_type = GROUP_TYPE
    namespace = "Microsoft.ContainerInstance/containerGroups"
    definitions = DEFINITIONS

    def __init__(self, containers: "ContainerController") -> None:
        self.containers = containers
        self.deltas = Deltas()

    async def collect(self, tick: Tick) -> Values:
        runtime = self.containers.runtime
        if runtime is None or self.containers.unavailable:
            return {}
        keys = [g.key for g in await tick.rows(GROUP_TYPE)]
        readings = await asyncio.to_thread(_read_groups, runtime.prefix, keys)
        self.deltas.forget(set(readings))
        values: Values = {}
        for key, reading in readings.items():
            measured = {MEMORY: float(reading.memory)}
            got = self.deltas.update(key, reading.identity, tick.mono, reading.counters)
            if got is not None:
                seconds, grown = got
                for metric, counter, scale in ((CPU, "cpu", 1000.0), (RECEIVED, "rx", 1.0), (TRANSMITTED, "tx", 1.0)):
                    if counter in grown:
                        measured[metric] = scale * grown[counter] / seconds
            values[key] = measured
        return values
