"""Soak, bounded: bench/soak.py's cycles at a small scale (40 container groups with 4 clients, 4 tiny VMs
with 2), asserting what must hold at any scale: no failed cycle, no host object or store row left behind,
kumo's idle fds back where they were. Latency and memory verdicts need the full run (`bench/soak.py`):
40 cycles on a shared 2-core machine are too few to judge a trend."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT, KumoServer, start_server, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def server() -> Iterator[KumoServer]:
    if os.geteuid() != 0:
        pytest.skip("the soak runs real containers and VMs: root needed")
    s = start_server()
    yield s
    stop_server(s)


def check(report: Any, *, mid_processes: int) -> None:
    """What the bounded soak asserts; the table goes to the captured output for a failing run."""
    bench.table(report)
    verdicts = report.verdicts()
    assert not report.errors, report.errors
    assert len(report.cycle_ends) == report.cycles
    # the census sees this kumo's objects while a resource runs (so "zero left" means something) …
    mid = report.counts_mid
    assert mid.get("processes", 0) >= mid_processes and mid.get("netns", 0) >= 1, mid
    # … and none of them, nor any resource or allocation row, once every cycle has been deleted
    assert verdicts["host leaks zero"][0], verdicts["host leaks zero"][1]
    assert not report.leaks, report.leaks
    assert verdicts["fds flat"][0], verdicts["fds flat"][1]


async def test_container_group_cycles_leave_nothing(server: KumoServer) -> None:
    """40 nginx groups with public IPs, created and deleted by 4 concurrent clients."""
    report = await bench.soak(server, "aci", 40, 4)
    check(report, mid_processes=2)  # conmon and nginx at least
    assert report.counts_mid["public IPs"] >= 1 and report.counts_mid["cgroups"] >= 1, report.counts_mid


async def test_tiny_vm_cycles_leave_nothing(server: KumoServer) -> None:
    """4 tiny VMs (public IP, NIC and OS disk marked Delete), 2 at a time, on one VNet."""
    info = json.loads((server.data_dir / "run.json").read_text())
    if info.get("vms_unavailable"):
        pytest.skip(f"no VMs on this host: {info['vms_unavailable']}")
    report = await bench.soak(server, "vm", 4, 2)
    check(report, mid_processes=1)  # its QEMU
