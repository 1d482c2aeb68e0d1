"""Which host backends this machine offers, probed (not assumed), for `kumo status`."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str
    purpose: str
    found: str | None  # where it was found, or None
    install: str  # what to install when missing


def _which(*names: str) -> str | None:
    for n in names:
        for d in (None, "/usr/sbin", "/sbin"):
            path = shutil.which(n, path=d) if d else shutil.which(n)
            if path:
                return path
    return None


def probe() -> list[Backend]:
    kvm = "/dev/kvm" if os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK) else None
    return [
        Backend("qemu", "virtual machines", _which("qemu-system-x86_64", "qemu-system-aarch64"),
                "apt-get install qemu-system-x86"),
        Backend("kvm", "hardware acceleration for VMs (else TCG)", kvm, "a host with /dev/kvm"),
        Backend("runc", "container instances", _which("runc"), "apt-get install runc"),
        Backend("conmon", "supervises each container (survives kumo restarts)", _which("conmon"),
                "apt-get install conmon"),
        Backend("nftables", "networking, NSGs, load balancers", _which("nft"), "apt-get install nftables"),
        Backend("iproute2", "network namespaces, bridges", _which("ip"), "apt-get install iproute2"),
    ]
