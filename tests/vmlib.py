"""Helpers for VM tests: the QEMU processes a test started (found by a marker in their command line) and
SSH keys for logging in to guests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def new_ssh_key(directory: Path) -> Path:
    """A passphrase-less ed25519 key pair `directory/id` (+ `.pub`); returns the private key's path."""
    key = directory / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kumo-test", "-f", str(key)], check=True)
    return key


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
