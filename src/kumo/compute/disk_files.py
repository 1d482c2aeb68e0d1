"""qcow2 files for managed disks, snapshots and images, made with `qemu-img` in asyncio subprocesses
(the loop never blocks on a copy). Every file that is created is written under a temporary name
beside its final one and renamed into place, so a crash leaves no half-written disk under a name a
resource owns; the temporary names start with `.tmp-`, which the disk controller's sweep removes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

GIB = 1 << 30
QEMU_IMG = "qemu-img"
TMP_PREFIX = ".tmp-"


class DiskFileError(Exception):
    """qemu-img could not do what was asked; the message says why (often qemu-img's own words)."""


def available() -> str | None:
    """None when qemu-img is installed, else what to do about it."""
    return None if shutil.which(QEMU_IMG) else "qemu-img not found: install qemu-utils"


async def _qemu_img(*args: str) -> str:
    if (problem := available()) is not None:
        raise DiskFileError(problem)
    try:
        proc = await asyncio.create_subprocess_exec(QEMU_IMG, *args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise DiskFileError("qemu-img not found: install qemu-utils") from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        text = (err or out).decode(errors="replace").strip()
        raise DiskFileError(f"qemu-img {args[0]} failed: {text[-500:]}")
    return out.decode(errors="replace")


def _tmp(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")


async def _into_place(tmp: Path, path: Path) -> None:
    try:
        await asyncio.to_thread(os.replace, tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _gib(size_gb: int) -> str:
    if size_gb < 1:
        raise DiskFileError(f"a disk must be at least 1 GiB, not {size_gb}")
    return str(size_gb * GIB)


def qcow2_virtual_size(path: Path) -> int | None:
    """The virtual size a qcow2 header records (bytes 24-31, big-endian), read without qemu-img; None
    for a file that is not qcow2 or cannot be read."""
    try:
        with open(path, "rb") as f:
            header = f.read(32)
    except OSError:
        return None
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        return None
    return int.from_bytes(header[24:32], "big")


def qcow2_backing_file(path: Path) -> str | None:
    """The backing file name a qcow2 header records (offset at bytes 8-15, length at 16-19), read
    without qemu-img; None for a standalone file or one that cannot be read."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset, size = int.from_bytes(header[8:16], "big"), int.from_bytes(header[16:20], "big")
            if not offset or not 0 < size <= 4096:
                return None
            f.seek(offset)
            return f.read(size).decode(errors="replace")
    except OSError:
        return None


async def info(path: Path) -> dict[str, Any]:
    """`virtual_size` and `actual_size` in bytes, `backing_file` (or None) and `format`. Reads with
    force-share (`-U`), so a disk a running guest holds can be inspected too."""
    raw = json.loads(await _qemu_img("info", "-U", "--output=json", str(path)))
    return {"virtual_size": int(raw.get("virtual-size", 0)), "actual_size": int(raw.get("actual-size", 0)),
            "backing_file": raw.get("full-backing-filename") or raw.get("backing-filename"),
            "format": raw.get("format")}


async def _write_new(path: Path, *qemu_img_args: str) -> None:
    """Run qemu-img writing to a temporary name (the `{}` in its arguments), then rename it to `path`:
    a crash never leaves a half-made file under a resource's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        await _qemu_img(*(str(tmp) if a == "{}" else a for a in qemu_img_args))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    await _into_place(tmp, path)


async def create_empty(path: Path, size_gb: int) -> None:
    """A blank (sparse) qcow2 of `size_gb` GiB."""
    await _write_new(path, "create", "-q", "-f", "qcow2", "{}", _gib(size_gb))


async def create_overlay(path: Path, backing: Path, size_gb: int | None = None) -> None:
    """A qcow2 whose unwritten blocks read from `backing` (a qcow2 that must outlive it), grown to
    `size_gb` GiB when that is larger than the backing's virtual size; smaller is an error."""
    backing = backing.resolve()
    base = await info(backing)
    size = base["virtual_size"]
    if size_gb is not None:
        wanted = int(_gib(size_gb))
        if wanted < size:
            raise DiskFileError(f"{size_gb} GiB is smaller than the {size / GIB:g} GiB of {backing.name}: "
                                "a disk cannot shrink")
        size = wanted
    await _write_new(path, "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "qcow2", "{}", str(size))


async def flatten_copy(src: Path, dst: Path) -> None:
    """A standalone qcow2 with `src`'s content (its backing chain folded in): how snapshots, copies
    and images are taken. Reads with force-share, so a disk in use is copied as it is on disk then."""
    await _write_new(dst, "convert", "-U", "-O", "qcow2", str(src), "{}")


async def resize(path: Path, size_gb: int) -> None:
    """Grow the disk to `size_gb` GiB (no-op when it has that size already); shrinking is an error."""
    current = (await info(path))["virtual_size"]
    wanted = int(_gib(size_gb))
    if wanted < current:
        raise DiskFileError(f"{path.name} has {current / GIB:g} GiB: a disk cannot shrink to {size_gb} GiB")
    if wanted > current:
        await _qemu_img("resize", "-q", "-f", "qcow2", str(path), str(wanted))
