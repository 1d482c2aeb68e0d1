"""Helpers for VM tests: the QEMU processes a test started, found by a marker in their command line."""

from __future__ import annotations

from pathlib import Path


def qemu_pids(marker: str) -> list[int]:
    """QEMU processes whose command line contains `marker` (a VM id or a test run's prefix)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd and marker.encode() in cmd:
                pids.append(int(d.name))
    return pids
