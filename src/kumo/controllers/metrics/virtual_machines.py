"""Metrics of virtual machines and scale sets, measured from the outside of each guest's QEMU process.

* Percentage CPU: the CPU time of QEMU's vCPU threads (`CPU 0/KVM`, `CPU 1/TCG`, … — QEMU runs with
  `debug-threads=on`) over the round's wall time × the VM's vCPUs. Under TCG this is the host time spent
  running the guest's code, which is what the guest's load costs here.
* Network In/Out Total: the byte counters of the VM's taps, read through `/proc/<qemu pid>/net/dev` (QEMU runs
  in its VNet's namespace, where the taps are). The host's side of a tap counts the other way round: what
  it receives the guest sent (Network Out), what it transmits the guest received (Network In).
* Disk Read/Write Bytes: `/proc/<qemu pid>/io` read_bytes/write_bytes, the bytes QEMU made the host's
  storage read or write for the guest's disks (guest reads served from the host's page cache do not count).
* A scale set's values are those of its instances in the same round: the average of their Percentage CPU,
  the sums of their bytes."""

from __future__ import annotations

import asyncio
import json
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kumo.controllers.metrics import procfs
from kumo.controllers.metrics.base import Deltas, MetricDefinition, MetricSource, Tick, Values

if TYPE_CHECKING:
    from kumo.controllers.virtual_machines.controller import VmController
    from kumo.drivers.vms import QemuDriver

VM_TYPE = "microsoft.compute/virtualmachines"
SCALE_SET_TYPE = "microsoft.compute/virtualmachinescalesets"
VCPU_THREADS = ("CPU ", "ALL CPUs")  # one thread per vCPU; single-threaded TCG has one for all

CPU = "Percentage CPU"
NET_IN, NET_OUT = "Network In Total", "Network Out Total"
DISK_READ, DISK_WRITE = "Disk Read Bytes", "Disk Write Bytes"

# Azure's definitions (Microsoft.Compute/virtualMachines; scale sets have the same names and units)
DEFINITIONS = (
    MetricDefinition(CPU, CPU, "Percent", "Average",
                     "The percentage of allocated compute units that are currently in use by the Virtual Machine(s)"),
    MetricDefinition(NET_IN, NET_IN, "Bytes", "Total",
                     "The number of bytes received on all network interfaces by the Virtual Machine(s) "
                     "(Incoming Traffic)"),
    MetricDefinition(NET_OUT, NET_OUT, "Bytes", "Total",
                     "The number of bytes out on all network interfaces by the Virtual Machine(s) (Outgoing Traffic)"),
    MetricDefinition(DISK_READ, DISK_READ, "Bytes", "Total", "Bytes read from disk during monitoring period"),
    MetricDefinition(DISK_WRITE, DISK_WRITE, "Bytes", "Total", "Bytes written to disk during monitoring period"),
)


@dataclass(frozen=True)
class _Reading:
    pid: int
    vcpus: int
    counters: dict[str, float]


class VirtualMachineSource(MetricSource):
    resource_type = VM_TYPE
    namespace = "Microsoft.Compute/virtualMachines"
    definitions = DEFINITIONS

    def __init__(self, vms: "VmController") -> None:
        self.vms = vms
        self.deltas = Deltas()
        self._shapes: dict[str, tuple[int, int, tuple[str, ...]]] = {}  # vid -> (pid, vCPUs, taps)

    async def collect(self, tick: Tick) -> Values:
        driver = self.vms.driver
        if driver is None:
            return {}
        ids = {vm.key: self.vms.vm_id(vm.key) for vm in await tick.rows(VM_TYPE)}
        readings = await asyncio.to_thread(self._read_all, driver, ids)
        self.deltas.forget(set(readings))
        values: Values = {}
        for key, reading in readings.items():
            got = self.deltas.update(key, reading.pid, tick.mono, reading.counters)
            if got is None:
                continue
            seconds, grown = got
            measured = {}
            if "cpu" in grown and reading.vcpus:
                measured[CPU] = min(100.0, 100.0 * grown["cpu"] / (seconds * reading.vcpus))
            for metric, counter in ((NET_IN, "tap_tx"), (NET_OUT, "tap_rx"), (DISK_READ, "read"),
                                    (DISK_WRITE, "write")):
                if counter in grown:
                    measured[metric] = grown[counter]
            values[key] = measured
        return values

    def _read_all(self, driver: "QemuDriver", ids: dict[str, str]) -> dict[str, _Reading]:
        """Every running VM's counters (in a worker thread: a few small /proc reads per VM)."""
        readings = {}
        for key, vid in ids.items():
            reading = self._read(driver, vid)
            if reading is not None:
                readings[key] = reading
        for vid in [v for v in self._shapes if v not in ids.values()]:
            del self._shapes[vid]
        return readings

    def _read(self, driver: "QemuDriver", vid: str) -> _Reading | None:
        pid = driver._pid(vid)  # the live QEMU of this VM (the driver checks the pidfile against /proc)
        if pid is None:
            return None
        shape = self._shapes.get(vid)
        if shape is None or shape[0] != pid:
            try:  # what QEMU was started with (the driver's record of it): vCPUs and taps
                spec = json.loads(driver.paths(vid).spec.read_text())
            except (OSError, ValueError):
                return None
            shape = self._shapes[vid] = (pid, int(spec.get("vcpus") or 0),
                                         tuple(n["tap"] for n in spec.get("nics") or () if n.get("tap")))
        cpu = procfs.threads_cpu_seconds(pid, VCPU_THREADS)
        if cpu is None or cpu[1] == 0:
            return None
        counters = {"cpu": cpu[0]}
        links = procfs.net_dev(pid) or {}
        taps = shape[2]
        if taps and all(t in links for t in taps):
            counters["tap_rx"] = float(sum(links[t][0] for t in taps))
            counters["tap_tx"] = float(sum(links[t][1] for t in taps))
        io = procfs.io(pid) or {}
        if "read_bytes" in io and "write_bytes" in io:
            counters["read"], counters["write"] = float(io["read_bytes"]), float(io["write_bytes"])
        return _Reading(pid, shape[1] or cpu[1], counters)


class ScaleSetSource(MetricSource):
    """A scale set's metrics from its instances' values of the same round: each instance is a VM row whose
    `properties.virtualMachineScaleSet.id` names the set. Runs after VirtualMachineSource."""

    resource_type = SCALE_SET_TYPE
    namespace = "Microsoft.Compute/virtualMachineScaleSets"
    definitions = DEFINITIONS

    async def collect(self, tick: Tick) -> Values:
        sets = await tick.rows(SCALE_SET_TYPE)
        if not sets:
            return {}
        members: dict[str, list[str]] = {}
        for vm in await tick.rows(VM_TYPE):
            ref = ((vm.body.get("properties") or {}).get("virtualMachineScaleSet") or {}).get("id")
            if isinstance(ref, str):
                members.setdefault(ref.lower(), []).append(vm.key)
        values: Values = {}
        for scale_set in sets:
            measured = [tick.values[k] for k in members.get(scale_set.key, ()) if k in tick.values]
            combined = {}
            for d in DEFINITIONS:
                xs = [m[d.name] for m in measured if d.name in m]
                if xs:
                    combined[d.name] = statistics.fmean(xs) if d.unit == "Percent" else float(sum(xs))
            if combined:
                values[scale_set.key] = combined
        return values
