"""The marketplace images kumo really has: disk images the VM image builder leaves in
`Settings.vm_images_dir`, one subdirectory each with an `image.json` manifest:

    {"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "0.20250101.1",
     "os": "Linux", "hyperVGeneration": "V2", "sizeInBytes": 2147483648, "alias": "Debian12",
     "architecture": "x64", "files": {"disk": "disk.qcow2", …}}

Nothing here is invented: an empty directory is an empty marketplace. The directory is read again
when it changes, so images built while kumo runs appear without a restart. Listing needs only the
manifests; the files they name are checked by whoever boots the image."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("kumo.compute")

MANIFEST = "image.json"
_REQUIRED = ("publisher", "offer", "sku", "version")


@dataclass(frozen=True)
class MarketplaceImage:
    publisher: str
    offer: str
    sku: str
    version: str
    os: str = "Linux"
    hyperv_generation: str = "V2"
    architecture: str = "x64"
    size_in_bytes: int = 0
    alias: str | None = None
    security_type: str | None = None  # the `SecurityType` feature: TrustedLaunchSupported, …
    directory: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    boot: dict[str, Any] = field(default_factory=dict)  # the builder's "kumo"."boot": how kumo boots it

    @property
    def cloud_init(self) -> bool:
        """The image provisions itself with cloud-init from a NoCloud seed (else: kumo's own tiny guest)."""
        return bool(self.boot.get("cloudInit"))

    @property
    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"

    def file(self, role: str) -> Path | None:
        """The path of one of the image's files (`disk`, `kernel`, …), if the manifest names it."""
        name = self.files.get(role)
        return (self.directory / name) if name and self.directory else None


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions as Azure does for `$orderby=name desc`: numerically part by part (1.10 > 1.9)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-]", version.lower()))


def _parse(directory: Path, data: Any) -> MarketplaceImage:
    if not isinstance(data, dict):
        raise ValueError("the manifest is not a JSON object")
    missing = [k for k in _REQUIRED if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    files = data.get("files") or {}
    gen = str(data.get("hyperVGeneration") or "V2")
    return MarketplaceImage(
        publisher=data["publisher"], offer=data["offer"], sku=data["sku"], version=data["version"],
        os=str(data.get("os") or "Linux"), hyperv_generation=gen,
        architecture=str(data.get("architecture") or "x64"), size_in_bytes=int(data.get("sizeInBytes") or 0),
        alias=data.get("alias") or None, directory=directory,
        # Generation 2 images support Trusted Launch on Azure unless the manifest says otherwise
        security_type=data.get("securityType", "TrustedLaunchSupported" if gen == "V2" else None) or None,
        files={str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {},
        boot=dict(((data.get("kumo") or {}).get("boot") or {})) if isinstance(data.get("kumo"), dict) else {})


class ImageCatalog:
    """Lookups over the images in one directory, case-insensitive on every name as Azure is."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._images: list[MarketplaceImage] = []

    def _manifests(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.glob(f"*/{MANIFEST}") if p.is_file())
        except OSError:
            return []

    def images(self) -> list[MarketplaceImage]:
        """Every image, read again only when a manifest was added, removed or changed."""
        paths = self._manifests()
        stamp = tuple((str(p), _mtime(p)) for p in paths)
        if stamp != self._stamp:
            images = []
            for path in paths:
                try:
                    images.append(_parse(path.parent, json.loads(path.read_text())))
                except (OSError, ValueError, TypeError) as e:  # one bad manifest must not hide the others
                    log.warning("ignoring VM image manifest %s: %s", path, e)
            self._images = sorted(images, key=lambda i: (i.publisher.lower(), i.offer.lower(), i.sku.lower(),
                                                          version_key(i.version)))
            self._stamp = stamp
        return self._images

    # Each level of the marketplace, as the REST API walks it; names keep the manifest's spelling.
    def publishers(self) -> list[str]:
        return _distinct(i.publisher for i in self.images())

    def offers(self, publisher: str) -> list[str]:
        return _distinct(i.offer for i in self.images() if _eq(i.publisher, publisher))

    def skus(self, publisher: str, offer: str) -> list[str]:
        return _distinct(i.sku for i in self.images() if _eq(i.publisher, publisher) and _eq(i.offer, offer))

    def versions(self, publisher: str, offer: str, sku: str) -> list[MarketplaceImage]:
        """Oldest first."""
        return [i for i in self.images() if _eq(i.publisher, publisher) and _eq(i.offer, offer) and _eq(i.sku, sku)]

    def find(self, publisher: str, offer: str, sku: str, version: str) -> MarketplaceImage | None:
        """One image; `latest` is the newest version of the sku."""
        found = self.versions(publisher, offer, sku)
        if version.lower() == "latest":
            return found[-1] if found else None
        return next((i for i in found if i.version.lower() == version.lower()), None)

    def aliases(self) -> dict[str, MarketplaceImage]:
        """Alias -> the image it names (the newest version when several versions share an alias)."""
        return {i.alias: i for i in self.images() if i.alias}

    def describe(self) -> str:
        """What kumo has, for error messages: URNs and aliases, or how to get images when there are none."""
        images = self.images()
        if not images:
            return (f"kumo has no VM images (none in {self.root}); build them with the VM image builder "
                    "or set KUMO_VM_IMAGES_DIR.")
        listed = ", ".join(f"{i.urn}" + (f" (alias {i.alias})" if i.alias else "") for i in images)
        return f"kumo has these VM images: {listed}."


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed since it was listed: the next read drops it
        return -1


def _eq(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _distinct(names: Any) -> list[str]:
    seen: dict[str, str] = {}
    for n in names:
        seen.setdefault(n.lower(), n)
    return list(seen.values())
