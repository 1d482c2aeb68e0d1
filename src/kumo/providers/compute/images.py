"""Microsoft.Compute/images: a managed image, kept as a standalone qcow2 copy of its source in kumo's
disk store, from which disks (and so VMs) are made with `creationData.createOption: FromImage`.

The source is a managed disk or a snapshot (`storageProfile.osDisk.managedDisk.id` / `.snapshot.id`),
or a generalized virtual machine (`sourceVirtualMachine.id`): its OS disk is the managed disk its
`storageProfile.osDisk.managedDisk.id` names, and the VM is generalized when the VM code has marked
its stored body `kumo.generalized` (what `az vm generalize` does). Data disks and VHD blobs need
storage kumo does not have and are refused with a 400 naming the property."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId, parse_resource_id
from kumo.controllers.disks import DISK_TYPE, SNAPSHOT_TYPE
from kumo.providers.base import ResourceType
from kumo.providers.compute import API_VERSIONS, NAMESPACE
from kumo.providers.compute.disks import NAME, NAME_RULE, VM_TYPE, _get, enum, obj, size_gb, source_error, unsupported
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

INTERNAL = "kumo"  # the VM body's own bookkeeping: `generalized` is set by the VM code


def _source_id(os_disk: dict[str, Any]) -> str:
    return str((os_disk.get("managedDisk") or os_disk.get("snapshot") or {}).get("id") or "")


class Images(ResourceType):
    # 1. the ARM type
    namespace = NAMESPACE
    type_path = ("images",)
    api_versions = API_VERSIONS
    name_pattern = NAME
    name_rule = NAME_RULE

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = obj(body.get("properties"), "properties")
        old = (existing.body.get("properties") or {}) if existing else None
        if body.get("extendedLocation"):
            raise unsupported("extendedLocation", "edge zones")
        sp = obj(props.get("storageProfile"), "storageProfile")
        if sp.get("dataDisks"):
            raise unsupported("storageProfile.dataDisks", "images with data disks")
        out: dict[str, Any] = {}
        gen = enum(props.get("hyperVGeneration"), ("V1", "V2"), "hyperVGeneration")
        if gen:
            out["hyperVGeneration"] = gen
        vm = obj(props.get("sourceVirtualMachine"), "sourceVirtualMachine")
        if vm.get("id"):
            vm_rid = parse_resource_id(str(vm["id"]))
            if vm_rid is None or vm_rid.type_key != VM_TYPE:
                raise bad_request("InvalidParameter", f"sourceVirtualMachine.id '{vm['id']}' is not a virtual "
                                  "machine id.", "sourceVirtualMachine.id")
            out["sourceVirtualMachine"] = {"id": str(vm["id"])}
            storage = None  # write_through takes it from the VM
        else:
            storage = self._storage(sp)
        if old is not None:
            if _source_key(old) != _source_key({**out, "storageProfile": storage or old.get("storageProfile")}):
                raise bad_request("PropertyChangeNotAllowed", "Changing the source of an image is not allowed: "
                                  "create a new image.", "storageProfile.osDisk")
            storage = old["storageProfile"]  # with what write_through found
        if storage is not None:
            out["storageProfile"] = storage
        return {"properties": out}

    def _storage(self, sp: dict[str, Any]) -> dict[str, Any]:
        os_disk = obj(sp.get("osDisk"), "storageProfile.osDisk")
        if not os_disk:
            raise bad_request("InvalidParameter", "Required parameter 'storageProfile.osDisk' is missing (null): an "
                              "image needs sourceVirtualMachine or an OS disk.", "storageProfile.osDisk")
        if os_disk.get("blobUri"):
            raise unsupported("storageProfile.osDisk.blobUri", "images from VHD blobs (kumo has no storage accounts)")
        if os_disk.get("diskEncryptionSet"):
            raise unsupported("storageProfile.osDisk.diskEncryptionSet", "customer-managed encryption keys")
        os_type = enum(os_disk.get("osType"), ("Linux", "Windows"), "storageProfile.osDisk.osType")
        if os_type is None:
            raise bad_request("InvalidParameter", "Required parameter 'osDisk.osType' is missing (null).",
                              "storageProfile.osDisk.osType")
        refs = [k for k in ("managedDisk", "snapshot") if obj(os_disk.get(k), f"storageProfile.osDisk.{k}").get("id")]
        if len(refs) != 1:
            raise bad_request("InvalidParameter", "The image's OS disk needs exactly one source: "
                              "storageProfile.osDisk.managedDisk.id or storageProfile.osDisk.snapshot.id.",
                              "storageProfile.osDisk")
        source = str(os_disk[refs[0]]["id"])
        rid = parse_resource_id(source)
        if rid is None or rid.type_key != (DISK_TYPE if refs[0] == "managedDisk" else SNAPSHOT_TYPE):
            raise bad_request("InvalidParameter", f"storageProfile.osDisk.{refs[0]}.id '{source}' is not the id of "
                              f"a {'disk' if refs[0] == 'managedDisk' else 'snapshot'}.",
                              f"storageProfile.osDisk.{refs[0]}.id")
        out: dict[str, Any] = {
            "osType": os_type,
            "osState": enum(os_disk.get("osState"), ("Generalized", "Specialized"), "storageProfile.osDisk.osState",
                            "Generalized"),
            refs[0]: {"id": source},
            "caching": enum(os_disk.get("caching"), ("None", "ReadOnly", "ReadWrite"), "storageProfile.osDisk.caching",
                            "ReadWrite"),
        }
        if (size := size_gb(os_disk.get("diskSizeGB"), "storageProfile.osDisk.diskSizeGB")) is not None:
            out["diskSizeGB"] = size
        account = enum(os_disk.get("storageAccountType"), ("Standard_LRS", "Premium_LRS", "StandardSSD_LRS",
                                                           "UltraSSD_LRS", "Premium_ZRS", "StandardSSD_ZRS",
                                                           "PremiumV2_LRS"), "storageProfile.osDisk.storageAccountType")
        if account:
            out["storageAccountType"] = account
        return {"osDisk": out, "dataDisks": [], "zoneResilient": bool(sp.get("zoneResilient") or False)}

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        services.disks.require()

    # 2b. in the write transaction: the source exists (a VM must be generalized); take its facts
    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        props = resource.body["properties"]
        if existing is not None:
            old = existing.body.get("properties") or {}
            props.setdefault("hyperVGeneration", old.get("hyperVGeneration", "V1"))
            return
        if "sourceVirtualMachine" in props:
            props["storageProfile"] = await self._from_vm(tx, props["sourceVirtualMachine"]["id"])
        os_disk = props["storageProfile"]["osDisk"]
        source = await _get(tx, _source_id(os_disk))
        if source is None or source.type not in (DISK_TYPE, SNAPSHOT_TYPE) or source.provisioning_state == "Deleting":
            field = "managedDisk" if "managedDisk" in os_disk else "snapshot"
            raise source_error(f"storageProfile.osDisk.{field}.id", _source_id(os_disk))
        sp = source.body.get("properties") or {}
        wanted, base = os_disk.get("diskSizeGB"), sp.get("diskSizeGB")
        if wanted is not None and base and wanted < base:
            raise bad_request("InvalidParameter", f"The specified disk size {wanted} GB is smaller than the size of "
                              f"the source: {base} GB.", "storageProfile.osDisk.diskSizeGB")
        os_disk["diskSizeGB"] = wanted or base
        props.setdefault("hyperVGeneration", sp.get("hyperVGeneration") or "V1")

    async def _from_vm(self, tx: Tx, vm_id: str) -> dict[str, Any]:
        vm = await _get(tx, vm_id)
        if vm is None or vm.type != VM_TYPE:
            raise bad_request("InvalidParameter", f"The virtual machine {vm_id} referenced by "
                              "'sourceVirtualMachine.id' was not found.", "sourceVirtualMachine.id")
        if (vm.body.get(INTERNAL) or {}).get("generalized") is not True:
            raise ArmError(409, "OperationNotAllowed", f"Capture operation cannot be completed because the VM is not "
                           f"generalized. Generalize virtual machine {vm.name} first (az vm generalize).",
                           target="sourceVirtualMachine.id")
        vm_disk = ((vm.body.get("properties") or {}).get("storageProfile") or {}).get("osDisk") or {}
        disk_id = (vm_disk.get("managedDisk") or {}).get("id")
        if not disk_id:
            raise ArmError(409, "OperationNotAllowed", f"Virtual machine {vm.name} has no managed OS disk to "
                           "capture.", target="sourceVirtualMachine.id")
        os_type = enum(vm_disk.get("osType"), ("Linux", "Windows"), "osDisk.osType", "Linux")
        return {"osDisk": {"osType": os_type, "osState": "Generalized", "managedDisk": {"id": disk_id},
                           "caching": vm_disk.get("caching") or "ReadWrite"},
                "dataDisks": [], "zoneResilient": False}

    # 3. GET shape: the stored body
    # 4. host effects: the image's own copy in the disk store
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.disks.realise(resource)

    async def remove(self, services: "Services", resource: Resource) -> None:
        await services.disks.remove(resource)


def _source_key(props: dict[str, Any]) -> str:
    """What an image was made from, for comparing an update with the original."""
    if props.get("sourceVirtualMachine"):
        return "vm:" + str(props["sourceVirtualMachine"].get("id", "")).strip("/").lower()
    os_disk = (props.get("storageProfile") or {}).get("osDisk") or {}
    return _source_id(os_disk).strip("/").lower()
