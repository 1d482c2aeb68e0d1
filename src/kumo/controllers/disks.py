"""The disk store: one qcow2 file per managed disk, snapshot and image, under `<data dir>/disks/`.

A file is named after its resource: `<kind>-<sha1 of the lower-case resource id, 10 hex>.qcow2`
(`disk-…`, `snapshot-…`, `image-…`), the hash the VM controller also names its host objects by, so
each file traces back to exactly one resource and a resource to its file. At start the files no
resource explains (and temporary files of copies a crash interrupted) are removed.

`realise` makes a resource's file as its `creationData` says and grows it to `diskSizeGB`; it is
idempotent (an existing file is kept, only grown). Snapshots, copies and images are flattened copies
(`qemu-img convert`): standalone files, so deleting a source never breaks what was made from it. A
disk made from a marketplace image is an overlay on the image's own qcow2, which kumo keeps."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError
from kumo.arm.ids import ResourceId, parse_resource_id
from kumo.compute import disk_files
from kumo.compute.disk_files import GIB, DiskFileError
from kumo.compute.marketplace import ImageCatalog
from kumo.controllers.network import short_hash
from kumo.store import Resource, Store

if TYPE_CHECKING:
    from kumo.arm.context import Services

log = logging.getLogger("kumo.disks")

DISK_TYPE = "microsoft.compute/disks"
SNAPSHOT_TYPE = "microsoft.compute/snapshots"
IMAGE_TYPE = "microsoft.compute/images"
FILE_KINDS = {"disks": "disk", "snapshots": "snapshot", "images": "image"}
SOURCE_WAIT = 600.0  # a copy waits this long for its source's own creation to finish


@dataclass(frozen=True)
class BaseImage:
    """What a marketplace image gives a disk made from it."""

    path: Path | None  # its qcow2; None: the image boots from kernel and initrd alone, the disk starts blank
    size_gb: int  # the default size of a disk made from it
    os_type: str = "Linux"
    hyperv_generation: str = "V2"


MarketplaceResolver = Callable[[str], "BaseImage | None"]  # a marketplace image id -> the image, or None


def parse_marketplace_id(text: str) -> tuple[str, str, str, str] | None:
    """(publisher, offer, sku, version) of `…/Publishers/{p}/ArtifactTypes/VMImage/Offers/{o}/Skus/{s}/
    Versions/{v}`, the id `az vm image show` and `imageReference.id` carry; None for any other id."""
    parts = [p for p in str(text).split("/") if p]
    lower = [p.lower() for p in parts]
    found: dict[str, str] = {}
    for key in ("publishers", "offers", "skus", "versions"):
        if key not in lower or lower.index(key) + 1 >= len(parts):
            return None
        found[key] = parts[lower.index(key) + 1]
    return found["publishers"], found["offers"], found["skus"], found["versions"]


def catalog_resolver(catalog: ImageCatalog) -> MarketplaceResolver:
    """Marketplace image ids resolved against kumo's own image catalogue (its `disk` file, if any)."""

    def resolve(image_id: str) -> BaseImage | None:
        urn = parse_marketplace_id(image_id)
        image = catalog.find(*urn) if urn else None
        if image is None:
            return None
        disk = image.file("disk")
        virtual = disk_files.qcow2_virtual_size(disk) if disk else None
        size = max(1, math.ceil((virtual or image.size_in_bytes or 1) / GIB))
        return BaseImage(path=disk, size_gb=size, os_type=image.os,
                         hyperv_generation=image.hyperv_generation)

    return resolve


def _host_error(resource: Resource, e: DiskFileError) -> ArmError:
    return ArmError(500, "InternalDiskManagementError", f"kumo could not write the file of {resource.name}: {e}")


class DiskController:
    def __init__(self, store: Store, data_dir: Path, marketplace: MarketplaceResolver | None = None) -> None:
        self.store = store
        self.root = data_dir / "disks"
        self.marketplace = marketplace
        self.unavailable: str | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, key: str) -> Path:
        """The file of the disk, snapshot or image with this key (its lower-case resource id)."""
        kind = FILE_KINDS.get(key.lower().rstrip("/").split("/")[-2])
        if kind is None:
            raise ValueError(f"{key} is no disk, snapshot or image")
        return self.root / f"{kind}-{short_hash(key)}.qcow2"

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key.lower(), asyncio.Lock())

    def require(self) -> None:
        """Refuse work up front (a 400 the client sees at once) when qemu-img is missing."""
        problem = disk_files.available()
        if problem:
            raise ArmError(400, "DisksUnavailable", f"kumo cannot create disks on this host: {problem}")

    # -- start: the files no resource explains go ------------------------------------------------------
    async def start(self) -> None:
        self.unavailable = disk_files.available()
        if self.unavailable:
            log.warning("disks unavailable: %s", self.unavailable)
        wanted: set[str] = set()
        async with self.store.read() as tx:
            for type_key in (DISK_TYPE, SNAPSHOT_TYPE, IMAGE_TYPE):
                wanted.update(self.path_of(r.key).name for r in await tx.resources_of_type(type_key))

        def sweep() -> list[str]:
            removed = []
            for f in self.root.glob("*") if self.root.is_dir() else ():
                if f.is_file() and f.name not in wanted:
                    f.unlink(missing_ok=True)
                    removed.append(f.name)
            return removed

        for name in await asyncio.to_thread(sweep):
            log.info("removed orphaned disk file %s", name)

    # -- realise: the file as creationData says, at least diskSizeGB large ---------------------------
    async def realise(self, resource: Resource) -> None:
        path = self.path_of(resource.key)
        props = resource.body.get("properties") or {}
        try:
            async with self._lock(resource.key):
                if not path.exists():
                    await self._create(resource, path)
                size = int(props.get("diskSizeGB") or 0)
                if size and resource.type != IMAGE_TYPE and (await disk_files.info(path))["virtual_size"] < size * GIB:
                    await disk_files.resize(path, size)  # only ever grown: normalise refuses shrinking
        except DiskFileError as e:
            raise _host_error(resource, e) from None

    async def _create(self, resource: Resource, path: Path) -> None:
        props = resource.body["properties"]
        if resource.type == IMAGE_TYPE:
            source = ((props.get("storageProfile") or {}).get("osDisk") or {})
            source_id = (source.get("managedDisk") or source.get("snapshot") or {}).get("id")
            await self._copy_from(resource, source_id, path)
            return
        creation = props.get("creationData") or {}
        option = str(creation.get("createOption", "Empty")).lower()
        if option == "empty":
            await disk_files.create_empty(path, int(props["diskSizeGB"]))
        elif option == "copy":
            await self._copy_from(resource, creation.get("sourceResourceId"), path)
        elif option == "fromimage":
            image_id = str((creation.get("imageReference") or {}).get("id") or "")
            rid = parse_resource_id(image_id)
            if rid is not None and rid.type_key == IMAGE_TYPE:
                await self._copy_from(resource, image_id, path)
                return
            base = self.marketplace(image_id) if self.marketplace else None
            if base is None:
                raise ArmError(404, "PlatformImageNotFound", f"The platform image '{image_id}' is not available.")
            if base.path is None:
                await disk_files.create_empty(path, int(props.get("diskSizeGB") or base.size_gb))
            else:
                await disk_files.create_overlay(path, base.path, props.get("diskSizeGB"))
        else:
            raise ArmError(400, "OperationNotAllowed", f"kumo cannot create disks with createOption "
                           f"'{creation.get('createOption')}'.")

    async def _copy_from(self, resource: Resource, source_id: Any, path: Path) -> None:
        key = str(source_id or "").lower()
        source = await self._wait_for_file(resource, key)
        async with self._lock(key):  # not while the source grows
            await disk_files.flatten_copy(source, path)

    async def _wait_for_file(self, resource: Resource, key: str) -> Path:
        """The source's file, once the source's own creation has made it (a template may create both)."""
        rid = parse_resource_id(key)
        if rid is None or rid.type_key not in (DISK_TYPE, SNAPSHOT_TYPE, IMAGE_TYPE):
            raise ArmError(400, "InvalidParameter", f"'{key}' is no disk, snapshot or image.")
        path = self.path_of(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SOURCE_WAIT
        while not path.exists():
            async with self.store.read() as tx:
                row = await tx.get_resource(key)
            if row is None or row.provisioning_state in ("Deleting", "Failed"):
                state = "was deleted" if row is None else f"is {row.provisioning_state}"
                raise ArmError(409, "OperationNotAllowed", f"Cannot create {resource.name}: its source {key} {state}.")
            if loop.time() > deadline:
                raise ArmError(409, "OperationNotAllowed", f"Cannot create {resource.name}: its source {key} did "
                               f"not finish provisioning within {SOURCE_WAIT:g} seconds.")
            await asyncio.sleep(0.2)
        return path

    # -- remove: the file goes with its resource --------------------------------------------------------
    async def remove(self, resource: Resource) -> None:
        path = self.path_of(resource.key)
        async with self._lock(resource.key):
            await asyncio.to_thread(path.unlink, True)
        self._locks.pop(resource.key.lower(), None)

    # -- for the VM code: a disk resource made and waited for ---------------------------------------------
    async def create_disk(self, services: "Services", rid: ResourceId, body: dict[str, Any], why: str) -> Resource:
        """PUT the disk `rid` with `body` (as a client would: validated, stored, realised by its own
        operation) and wait for it: the stored disk once Succeeded, or its operation's ArmError."""
        from kumo.providers import lifecycle

        handler = services.providers.handler(DISK_TYPE)
        assert handler is not None
        _resource, _created, op = await lifecycle.apply_desired(services, rid, handler, body, why)
        if op is not None:
            done = await services.operations.wait(op.id)
            if done.status != "Succeeded":
                err = done.error or {}
                raise ArmError(done.error_status or 500, err.get("code", "InternalServerError"),
                               err.get("message", f"creating disk {rid.name} failed"))
        async with services.store.read() as tx:
            stored = await tx.get_resource(rid.key)
        if stored is None:
            raise ArmError(409, "Conflict", f"Disk {rid.name} was deleted while it was created.")
        return stored
