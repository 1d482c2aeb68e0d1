"""`kumo vm-images import`: a VM image of your own (for example an Ubuntu cloud image) in kumo's
marketplace, from a local file or an http(s) URL.

kumo boots every image directly with its kernel and initrd (no firmware, no bootloader), so an import
gives the disk and those two files (Ubuntu publishes them beside each cloud image as
`…-vmlinuz-generic` and `…-initrd-generic`), and the kernel command line that finds the root file
system (`root=/dev/vda1` for a partitioned disk such as Ubuntu's). The guest must provision itself with
cloud-init from a NoCloud seed and run the QEMU guest agent (kumo waits for both, as for its Debian image).

The disk is converted to qcow2 (`qemu-img convert`, raw or qcow2 in) under
`<images dir>/<publisher>-<offer>-<version>/` with an `image.json` manifest; the image then shows in
`az vm image list` and `az vm create --image <publisher>:<offer>:<sku>:<version>` (or `--image <alias>`)
boots it. Importing the same URN again replaces it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumo.images.buildkit import BuildError, locked, write_atomic
from kumo.images.vm.guest import QGA_PORT

Say = Callable[[str], None]
DEFAULT_APPEND = "root=/dev/vda1 rw console=ttyS0 net.ifnames=0"


@dataclass(frozen=True)
class ImportSpec:
    urn: str  # publisher:offer:sku:version
    disk: str  # a path or an http(s) URL
    kernel: str
    initrd: str
    append: str = DEFAULT_APPEND
    alias: str | None = None
    min_memory_mib: int = 512


def _parts(urn: str) -> tuple[str, str, str, str]:
    parts = urn.split(":")
    if len(parts) != 4 or not all(parts) or any("/" in p for p in parts):
        raise BuildError(f"--urn must be publisher:offer:sku:version, not {urn!r}")
    return parts[0], parts[1], parts[2], parts[3]


def _fetch(source: str, into: Path, say: Say) -> Path:
    """A local path as is, or an http(s) URL downloaded into `into` (with progress)."""
    if not source.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise BuildError(f"{source}: no such file")
        return path
    import httpx

    target = into / (source.rstrip("/").rsplit("/", 1)[-1] or "download")
    say(f"[import] downloading {source} …")
    try:
        with httpx.stream("GET", source, follow_redirects=True, timeout=60) as r:
            r.raise_for_status()
            total, done, shown = int(r.headers.get("content-length") or 0), 0, -1
            with open(target, "wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    pct = done * 100 // total if total else -1
                    if pct >= shown + 10:
                        shown = pct
                        say(f"[import]   {done / 1e6:.0f} MB" + (f" ({pct}%)" if total else ""))
    except httpx.HTTPError as e:
        raise BuildError(f"could not download {source}: {e}") from None
    return target


def _qemu_img(*args: str) -> str:
    try:
        proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError("qemu-img not found: install qemu-utils (scripts/setup.sh does)") from None
    if proc.returncode != 0:
        raise BuildError(f"qemu-img {args[0]} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def import_image(spec: ImportSpec, out: Path, *, say: Say = print) -> Path:
    """Import per `spec` into the images directory `out`; returns the image's directory."""
    publisher, offer, sku, version = _parts(spec.urn)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{publisher}-{offer}-{version}".lower()
    with locked(out), tempfile.TemporaryDirectory(dir=out, prefix=".import-") as tmp:
        staging = Path(tmp)
        disk = _fetch(spec.disk, staging, say)
        kernel = _fetch(spec.kernel, staging, say)
        initrd = _fetch(spec.initrd, staging, say)
        info: dict[str, Any] = json.loads(_qemu_img("info", "--output=json", str(disk)))
        if info.get("format") not in ("qcow2", "raw"):
            raise BuildError(f"{spec.disk}: a {info.get('format')} disk; give a qcow2 or raw image")
        say(f"[import] converting the disk ({info.get('format')}, {int(info['virtual-size']) / 2**30:.1f} GiB) "
            "to qcow2 …")
        new = staging / "image"
        new.mkdir()
        _qemu_img("convert", "-O", "qcow2", str(disk), str(new / "disk.qcow2"))
        shutil.copyfile(kernel, new / "vmlinuz")
        shutil.copyfile(initrd, new / "initrd.img")
        manifest = {
            "publisher": publisher, "offer": offer, "sku": sku, "version": version, "os": "Linux",
            "hyperVGeneration": "V2", "architecture": "x64", "sizeInBytes": int(info["virtual-size"]),
            **({"alias": spec.alias} if spec.alias else {}),
            "files": {"kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2"},
            "kumo": {"format": "kumo-vm-image/1", "imported": {"disk": spec.disk, "kernel": spec.kernel,
                                                               "initrd": spec.initrd},
                     "boot": {"append": spec.append, "readiness": "agent", "agent": QGA_PORT, "cloudInit": True,
                              "minMemoryMiB": spec.min_memory_mib, "tbSizeMiB": 128}},
        }
        write_atomic(new / "image.json", json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(new, target)
    say(f"[import] {spec.urn} is in the marketplace ({target})")
    return target
