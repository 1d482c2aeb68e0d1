"""Fixtures the unit tests share."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.skip("needs root and nftables")
    name = f"kumo-unit-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
