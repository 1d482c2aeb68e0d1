"""A VM's disks as Azure has them: managed `Microsoft.Compute/disks` resources.

The OS disk is made with the VM (named as the VM body says, `<vm>_OsDisk_1_<hex>`) from its image: an
overlay on a marketplace image's qcow2, or a copy of a custom image's file; empty data disks are made
when the VM lists them with `createOption: Empty`. Each becomes a disk resource (`az disk list` shows it)
through the disk provider's own PUT, then is marked used by the VM (`managedBy`). QEMU sees them as
virtio disks in this order: the OS disk (/dev/vda), the data disks by LUN (vdb, vdc, …), and last the
cloud-init seed of images that have one.

Which kernel boots a disk: VMs boot their image's kernel directly (no bootloader in kumo's images), so a
VM made from a custom image boots the kernel of the marketplace image the image came from, found by
following the sources back (image → VM or disk → snapshot → … → marketplace image)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError
from kumo.arm.ids import parse_resource_id
from kumo.compute.marketplace import ImageCatalog, MarketplaceImage
from kumo.controllers.disks import parse_marketplace_id
from kumo.providers.compute.disks import attach_disk
from kumo.providers.compute.vm_schema import INTERNAL
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

MAX_DEPTH = 16


def marketplace_id(vm: Resource, image: MarketplaceImage) -> str:
    """The id Azure gives a platform image version (an OS disk's creationData.imageReference.id)."""
    return (f"/Subscriptions/{vm.subscription_id}/Providers/Microsoft.Compute/Locations/{vm.location or 'local'}"
            f"/Publishers/{image.publisher}/ArtifactTypes/VMImage/Offers/{image.offer}/Skus/{image.sku}"
            f"/Versions/{image.version}")


async def boot_image(tx: Tx, catalog: ImageCatalog, ref: dict[str, Any] | str) -> MarketplaceImage | None:
    """The marketplace image whose kernel boots a VM with this imageReference (or resource id)."""
    for _ in range(MAX_DEPTH):
        if isinstance(ref, dict):
            if not ref.get("id"):
                return catalog.find(ref["publisher"], ref["offer"], ref["sku"], ref.get("version") or "latest")
            ref = str(ref["id"])
        urn = parse_marketplace_id(ref)
        if urn:
            return catalog.find(*urn)
        row = await tx.get_resource(ref.lower())
        if row is None:
            return None
        props = row.body.get("properties") or {}
        kind = row.type.lower().rsplit("/", 1)[-1]
        if kind == "virtualmachines":
            ref = props["storageProfile"]["imageReference"]
        elif kind == "images":
            os_disk = (props.get("storageProfile") or {}).get("osDisk") or {}
            source = ((props.get("sourceVirtualMachine") or {}).get("id") or (os_disk.get("managedDisk") or {})
                      .get("id") or (os_disk.get("snapshot") or {}).get("id"))
            if not source:
                return None
            ref = source
        elif kind in ("disks", "snapshots"):
            creation = props.get("creationData") or {}
            source = (creation.get("imageReference") or {}).get("id") or creation.get("sourceResourceId")
            if not source:
                return None
            ref = source
        else:
            return None
    return None


def _disk_id(vm: Resource, name: str) -> str:
    rid = parse_resource_id(vm.id)
    return (f"/subscriptions/{rid.subscription}/resourceGroups/{rid.resource_group}/providers/Microsoft.Compute/"
            f"disks/{name}")


async def ensure_disks(services: "Services", vm: Resource, image: MarketplaceImage) -> Resource:
    """Make the VM's OS disk and empty data disks that do not exist yet, attach every disk it lists,
    and record their ids in the VM body. Idempotent; returns the VM as stored now."""
    props = vm.body["properties"]
    storage = props["storageProfile"]
    wanted: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (the VM's disk entry, the disk's PUT body)
    os_disk = storage["osDisk"]
    if not (os_disk.get("managedDisk") or {}).get("id"):
        ref = storage["imageReference"]
        source = {"id": ref["id"]} if ref.get("id") else {"id": marketplace_id(vm, image)}
        body: dict[str, Any] = {"location": vm.location, "sku": {"name": os_disk["managedDisk"]["storageAccountType"]},
                                "properties": {"osType": "Linux", "hyperVGeneration": image.hyperv_generation,
                                               "creationData": {"createOption": "FromImage",
                                                                "imageReference": source}}}
        if os_disk.get("diskSizeGB"):
            body["properties"]["diskSizeGB"] = os_disk["diskSizeGB"]
        wanted.append((os_disk, body))
    for d in storage.get("dataDisks") or []:
        if d["createOption"] == "Empty" and not (d.get("managedDisk") or {}).get("id"):
            wanted.append((d, {"location": vm.location, "sku": {"name": d["managedDisk"]["storageAccountType"]},
                               "properties": {"creationData": {"createOption": "Empty"},
                                              "diskSizeGB": d["diskSizeGB"]}}))
    made: dict[str, str] = {}  # disk name -> id
    for entry, body in wanted:
        disk_id = _disk_id(vm, entry["name"])
        async with services.store.read() as tx:
            existing = await tx.get_resource(disk_id.lower())
        if existing is None:  # a crash after this PUT finds it on the next try
            await services.disks.create_disk(services, parse_resource_id(disk_id), body,
                                             f"disk of virtual machine {vm.name}")
        made[entry["name"]] = disk_id
    async with services.store.write() as tx:
        row = await tx.get_resource(vm.key)
        if row is None:
            raise ArmError(409, "Conflict", f"Virtual machine {vm.name} was deleted while its disks were made.")
        st = row.body["properties"]["storageProfile"]
        for entry in [st["osDisk"], *(st.get("dataDisks") or [])]:
            if entry["name"] in made:
                entry.setdefault("managedDisk", {})["id"] = made[entry["name"]]
            disk_id = (entry.get("managedDisk") or {}).get("id")
            if disk_id:
                disk = await attach_disk(tx, disk_id, row.id)
                entry["diskSizeGB"] = disk.body["properties"].get("diskSizeGB", entry.get("diskSizeGB"))
        row.body.setdefault(INTERNAL, {})["bootImage"] = image.urn
        await tx.put_resource(row)
    return row


def disks_to_delete(vm: Resource) -> list[str]:
    """The ids of the VM's disks marked `deleteOption: Delete`, including those it was making when it was
    deleted (a crash or a delete between the disk's PUT and the VM's record of it): those are found by the
    name the VM body gives them, unique to this VM."""
    storage = vm.body["properties"].get("storageProfile") or {}
    out = []
    for entry in [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]:
        if entry.get("deleteOption") != "Delete":
            continue
        disk_id = (entry.get("managedDisk") or {}).get("id")
        if not disk_id and entry.get("createOption") in ("FromImage", "Empty") and entry.get("name"):
            disk_id = _disk_id(vm, entry["name"])
        if disk_id:
            out.append(disk_id)
    return out


def disk_keys(vm: Resource) -> list[str]:
    """The disk resources QEMU gets, in device order: OS disk, then data disks by LUN."""
    storage = vm.body["properties"]["storageProfile"]
    entries = [storage["osDisk"], *sorted(storage.get("dataDisks") or [], key=lambda d: d["lun"])]
    return [e["managedDisk"]["id"].lower() for e in entries if (e.get("managedDisk") or {}).get("id")]
