"""What kumo's image builders share (the container catalog in `catalog/`, VM images in `vm/`): their
error, finding host tools and the libraries a binary needs, atomic writes, and one build at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


class BuildError(Exception):
    """An image that cannot be built here (a missing tool or package, no root, an unreachable mirror)."""


def which(name: str, *candidates: str) -> str:
    """A host tool: the first executable candidate path, else `name` on PATH (and in the sbin dirs)."""
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not found:
        raise BuildError(f"{name} not found: install the Debian package that provides it (scripts/setup.sh does)")
    return found


def shared_libraries(*binaries: str) -> list[str]:
    """The absolute paths `ldd` names for these binaries (the loader included), sorted."""
    libs: set[str] = set()
    for binary in binaries:
        proc = subprocess.run(["ldd", binary], capture_output=True, text=True)
        if proc.returncode != 0:
            if "not a dynamic executable" in proc.stdout + proc.stderr:
                continue
            raise BuildError(f"ldd {binary}: {proc.stderr.strip() or proc.stdout.strip()}")
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise BuildError(f"{binary} needs a missing library: {line.strip()}")
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                libs.add(m.group(1))
    return sorted(libs)


def run(*argv: str, cwd: Path | None = None) -> str:
    """A quick host command whose output a builder needs; BuildError with its stderr when it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} not found: install it (scripts/setup.sh does)") from None
    if proc.returncode != 0:
        raise BuildError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """One build at a time per output directory (two set-ups, or a set-up and a test)."""
    with open(out / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
