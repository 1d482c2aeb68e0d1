"""Microsoft.Compute/disks: managed disks as qcow2 files of kumo's disk store (controllers/disks.py).

Created Empty, as a Copy of a disk or snapshot, or FromImage (a `Microsoft.Compute/images` resource
or a marketplace image); Import, Upload, Attach, Restore and the other options need storage accounts
or backups kumo does not have and are refused with a 400 naming the property. Growing `diskSizeGB`
grows the file; shrinking is refused as Azure refuses it. A disk a VM uses carries the VM's id in
`managedBy` and `diskState: Attached` (set by the VM code through `attach_disk`/`detach_disk`) and
cannot be deleted. Azure's DiskRP answers a new disk's PUT with 202, and its clients accept only
200 and 202 there (never 201), so `created_status` says so.

What disks and snapshots share (sku, creationData, sizes, the write-through that reads the source)
lives here; snapshots.py adds only what differs."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId, parse_resource_id
from kumo.controllers.disks import DISK_TYPE, IMAGE_TYPE, SNAPSHOT_TYPE, MarketplaceResolver, parse_marketplace_id
from kumo.providers.base import ResourceType
from kumo.providers.compute import NAMESPACE
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

# DiskRP's own api-versions (disks, snapshots), newest first
DISK_API_VERSIONS = ("2026-03-02", "2025-01-02", "2024-03-02", "2023-10-02", "2023-04-02", "2023-01-02",
                     "2022-07-02", "2022-03-02", "2021-12-01", "2021-08-01", "2021-04-01", "2020-12-01",
                     "2020-09-30", "2020-06-30", "2020-05-01", "2019-11-01", "2019-07-01", "2019-03-01",
                     "2018-09-30", "2018-06-01", "2018-04-01", "2017-03-30", "2016-04-30-preview")
# Azure's rule for compute resource names: letters, digits, '_', '.', '-'; starts with a letter or digit,
# ends with a letter, digit or '_'; at most 80 characters.
NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")
NAME_RULE = ("The name must begin with a letter or number, end with a letter, number or underscore, and may contain "
             "only letters, numbers, underscores, periods, or hyphens (1-80 characters).")
MAX_SIZE_GB = 32767
VM_TYPE = "microsoft.compute/virtualmachines"

DISK_SKUS = {"Standard_LRS": "Standard", "Premium_LRS": "Premium", "StandardSSD_LRS": "Standard",
             "UltraSSD_LRS": "Ultra", "Premium_ZRS": "Premium", "StandardSSD_ZRS": "Standard",
             "PremiumV2_LRS": "Premium"}
# Azure's performance tiers: (largest size in GiB, tier, IOPS, MBps) by disk family
_TIERS = {
    "P": ((4, 1, 120, 25), (8, 2, 120, 25), (16, 3, 120, 25), (32, 4, 120, 25), (64, 6, 240, 50),
          (128, 10, 500, 100), (256, 15, 1100, 125), (512, 20, 2300, 150), (1024, 30, 5000, 200),
          (2048, 40, 7500, 250), (4096, 50, 7500, 250), (8192, 60, 16000, 500), (16384, 70, 18000, 750),
          (32767, 80, 20000, 900)),
    "E": ((4, 1, 500, 60), (8, 2, 500, 60), (16, 3, 500, 60), (32, 4, 500, 60), (64, 6, 500, 60),
          (128, 10, 500, 60), (256, 15, 500, 60), (512, 20, 500, 60), (1024, 30, 500, 60), (2048, 40, 500, 60),
          (4096, 50, 500, 60), (8192, 60, 2000, 400), (16384, 70, 4000, 600), (32767, 80, 6000, 750)),
    "S": ((32, 4, 500, 60), (64, 6, 500, 60), (128, 10, 500, 60), (256, 15, 500, 60), (512, 20, 500, 60),
          (1024, 30, 500, 60), (2048, 40, 500, 60), (4096, 50, 500, 60), (8192, 60, 1300, 300),
          (16384, 70, 2000, 500), (32767, 80, 2000, 500)),
}
SUPPORTED_OPTIONS = ("Empty", "Copy", "FromImage")
ALL_OPTIONS = ("Empty", "Attach", "FromImage", "Import", "Copy", "Restore", "Upload", "CopyStart", "ImportSecure",
               "UploadPreparedSecure", "CopyFromSanSnapshot")
# Properties stored and shown as given: they change nothing on this one-host cloud.
PASSTHROUGH = ("supportedCapabilities", "supportsHibernation", "burstingEnabled", "optimizedForFrequentAttach",
               "dataAccessAuthMode", "purchasePlan", "availabilityPolicy")
UNSUPPORTED = {
    "encryptionSettingsCollection": "Azure Disk Encryption settings",
    "diskAccessId": "disk accesses (private links)",
    "securityProfile": "confidential VM disk security profiles",
}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00", time.gmtime())


def obj(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("InvalidParameter", f"'{field}' must be a JSON object.", field)
    return value


def enum(value: Any, allowed: tuple[str, ...] | list[str], field: str, default: str | None = None) -> str | None:
    """An enum value in Azure's spelling, matched case-insensitively."""
    if value is None or value == "":
        return default
    for a in allowed:
        if str(value).lower() == a.lower():
            return a
    raise bad_request("InvalidParameter", f"The value '{value}' of parameter '{field}' is not allowed. Allowed "
                      f"values are: {', '.join(allowed)}.", field)


def integer(value: Any, field: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise bad_request("InvalidParameter", f"'{field}' must be an integer, not {value!r}.", field)
    return int(value)


def size_gb(value: Any, field: str = "diskSizeGB") -> int | None:
    if value is None:
        return None
    size = integer(value, field)
    if not 1 <= size <= MAX_SIZE_GB:
        raise bad_request("InvalidParameter", f"Disk size {size} GB is invalid: it must be between 1 and "
                          f"{MAX_SIZE_GB} GB.", field)
    return size


def unsupported(prop: str, what: str) -> ArmError:
    return bad_request("OperationNotAllowed", f"kumo cannot do {what}: remove '{prop}' from the request.", prop)


def shrink_error(resource_id: str, old: int, new: int) -> ArmError:
    return bad_request("BadRequest", f"Disk size reduction is not supported. The disk/snapshot resource with id "
                       f"{resource_id} cannot be resized down from {old} GB to {new} GB. Reducing disk/snapshot "
                       "size is not supported in Azure to prevent data loss. If you do need to reduce the size of "
                       "the disk, please create new snapshot/disks with the appropriate size. More information is "
                       "available at https://aka.ms/AzureDisksFAQ", "diskSizeGB")


def performance(sku: str, size: int) -> tuple[str | None, int, int]:
    """(tier, IOPS, MBps) Azure gives a disk of this sku and size."""
    family = "P" if sku.startswith("Premium_") else "E" if sku.startswith("StandardSSD") else \
        "S" if sku == "Standard_LRS" else None
    if family is None:  # Ultra and Premium v2: provisioned performance, their baseline
        return None, 3000, 125
    for limit, n, iops, mbps in _TIERS[family]:
        if size <= limit:
            return f"{family}{n}", iops, mbps
    return None, 0, 0


def source_error(field: str, source: str) -> ArmError:
    return bad_request("InvalidParameter", f"The resource {source} referenced by '{field}' was not found, or is no "
                       "disk, snapshot or image.", field)


def _creation(props: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = obj(props.get("creationData"), "creationData")
    option = enum(raw.get("createOption"), ALL_OPTIONS, "creationData.createOption")
    if option is None:
        raise bad_request("InvalidParameter", "Required parameter 'creationData.createOption' is missing (null).",
                          "creationData.createOption")
    if option not in allowed:
        raise bad_request("OperationNotAllowed", f"kumo cannot create a disk with createOption '{option}': it has "
                          "no storage accounts, uploads or restore points. Use one of "
                          f"{', '.join(allowed)}.", "creationData.createOption")
    out: dict[str, Any] = {"createOption": option}
    if option == "Copy":
        source = raw.get("sourceResourceId")
        rid = parse_resource_id(str(source or ""))
        if rid is None or rid.type_key not in (DISK_TYPE, SNAPSHOT_TYPE):
            raise bad_request("InvalidParameter", "creationData.sourceResourceId must be the id of a disk or "
                              f"snapshot to copy, not '{source}'.", "creationData.sourceResourceId")
        out["sourceResourceId"] = str(source)
    elif option == "FromImage":
        if raw.get("galleryImageReference"):
            raise unsupported("creationData.galleryImageReference", "Azure Compute Gallery images")
        ref = obj(raw.get("imageReference"), "creationData.imageReference")
        image_id = ref.get("id")
        if not image_id:
            raise bad_request("InvalidParameter", "Required parameter 'creationData.imageReference.id' is missing "
                              "(null).", "creationData.imageReference")
        if ref.get("lun") is not None:
            raise unsupported("creationData.imageReference.lun", "disks from an image's data disks")
        out["imageReference"] = {"id": str(image_id)}
    for key in ("sourceUri", "storageAccountId", "uploadSizeBytes", "securityDataUri", "elasticSanResourceId"):
        if raw.get(key):
            raise unsupported(f"creationData.{key}", f"'{key}' (kumo has no storage accounts)")
    if raw.get("logicalSectorSize") not in (None, 512, 4096):
        raise bad_request("InvalidParameter", "creationData.logicalSectorSize must be 512 or 4096.",
                          "creationData.logicalSectorSize")
    return out


def _same_creation(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def ident(c: dict[str, Any]) -> tuple[str, str, str]:
        return (str(c.get("createOption", "")).lower(), str(c.get("sourceResourceId") or "").strip("/").lower(),
                str((c.get("imageReference") or {}).get("id") or "").strip("/").lower())
    return ident(old) == ident(new)


class DiskLike(ResourceType):
    """What disks and snapshots share: a qcow2 in the disk store, made per creationData."""

    namespace = NAMESPACE
    api_versions = DISK_API_VERSIONS
    name_pattern = NAME
    name_rule = NAME_RULE
    created_status = 202  # DiskRP answers a new resource's PUT with 202 Accepted
    skus: ClassVar[dict[str, str]] = DISK_SKUS
    default_sku: ClassVar[str] = "Standard_LRS"
    options: ClassVar[tuple[str, ...]] = SUPPORTED_OPTIONS
    noun: ClassVar[str] = "disk"

    def __init__(self, marketplace: MarketplaceResolver | None = None) -> None:
        self.marketplace = marketplace  # marketplace image id -> its base file (FromImage)

    # 1. normalise: request -> stored body (sizes and source facts are filled in by write_through)
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = obj(body.get("properties"), "properties")
        old = (existing.body.get("properties") or {}) if existing else None
        for key, what in UNSUPPORTED.items():
            if props.get(key) and not (key == "securityProfile" and _plain_security(props[key])):
                raise unsupported(f"properties.{key}", what)
        if body.get("extendedLocation"):
            raise unsupported("extendedLocation", "edge zones")
        sku_in = obj(body.get("sku"), "sku")
        old_sku = (existing.body.get("sku") or {}).get("name") if existing else None
        sku = enum(sku_in.get("name"), tuple(self.skus), "sku.name", old_sku or self.default_sku)
        assert sku is not None
        out: dict[str, Any] = {
            "creationData": _creation(props, self.options) if old is None or props.get("creationData")
            else old["creationData"],
            "diskSizeGB": size_gb(props.get("diskSizeGB")),
        }
        if old is not None and not _same_creation(old["creationData"], out["creationData"]):
            raise bad_request("PropertyChangeNotAllowed", "Changing property 'creationData' is not allowed.",
                              "creationData")
        if old is not None:
            out["creationData"] = old["creationData"]  # with what write_through found (sourceUniqueId)
        os_type = enum(props.get("osType"), ("Linux", "Windows"), "osType")
        gen = enum(props.get("hyperVGeneration"), ("V1", "V2"), "hyperVGeneration")
        if os_type:
            out["osType"] = os_type
        if gen:
            out["hyperVGeneration"] = gen
        enc = obj(props.get("encryption"), "encryption")
        if enc.get("diskEncryptionSetId") or enc.get("type") not in (None, "EncryptionAtRestWithPlatformKey"):
            raise unsupported("properties.encryption", "customer-managed encryption keys")
        out["encryption"] = {"type": "EncryptionAtRestWithPlatformKey"}
        out["networkAccessPolicy"] = enum(props.get("networkAccessPolicy"), ("AllowAll", "AllowPrivate", "DenyAll"),
                                          "networkAccessPolicy", "AllowAll")
        out["publicNetworkAccess"] = enum(props.get("publicNetworkAccess"), ("Enabled", "Disabled"),
                                          "publicNetworkAccess", "Enabled")
        for key in PASSTHROUGH:
            if props.get(key) is not None:
                out[key] = props[key]
        if props.get("securityProfile"):
            out["securityProfile"] = props["securityProfile"]
        out.update(self.normalise_more(props, sku))
        result: dict[str, Any] = {"sku": {"name": sku, "tier": self.skus[sku]}, "properties": out}
        if body.get("zones"):
            result["zones"] = body["zones"]
        return result

    def normalise_more(self, props: dict[str, Any], sku: str) -> dict[str, Any]:
        """What one of the types adds to the stored properties."""
        return {}

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        services.disks.require()

    # 2b. in the write transaction: read the source, fill in sizes, keep what Azure keeps
    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        props = resource.body["properties"]
        old = (existing.body.get("properties") or {}) if existing else None
        if old is not None:
            for key in ("uniqueId", "timeCreated", "osType", "hyperVGeneration", "LastOwnershipUpdateTime"):
                if key in old and key not in props:
                    props[key] = old[key]
            if existing is not None and existing.body.get("managedBy"):
                resource.body["managedBy"] = existing.body["managedBy"]
            props["diskState"] = old.get("diskState") or "Unattached"
            size = props["diskSizeGB"] or old.get("diskSizeGB")
            if size is not None and old.get("diskSizeGB") and size < old["diskSizeGB"]:
                raise shrink_error(resource.id, old["diskSizeGB"], size)
            if size != old.get("diskSizeGB"):
                await self.check_resize(tx, resource)
        else:
            props["uniqueId"] = str(uuid.uuid4())
            props["timeCreated"] = now()
            props["diskState"] = "Unattached"
            size = await self.from_source(tx, resource, props["creationData"], props)
        if size is None:
            raise bad_request("InvalidParameter", "Required parameter 'diskSizeGB' is missing (null): an empty "
                              f"{self.noun} needs a size.", "diskSizeGB")
        props["diskSizeGB"] = size
        props["diskSizeBytes"] = size * (1 << 30)
        self.stamp(resource, props)

    def stamp(self, resource: Resource, props: dict[str, Any]) -> None:
        """Fields derived from sku and size (disks: tier, IOPS, MBps)."""
        return None

    async def check_resize(self, tx: Tx, resource: Resource) -> None:
        return None

    async def from_source(self, tx: Tx, resource: Resource, creation: dict[str, Any],
                          props: dict[str, Any]) -> int | None:
        """Check the source exists and take its facts (size, OS type, generation); the size to use."""
        wanted = props.get("diskSizeGB")
        option = creation["createOption"]
        if option == "Empty":
            return wanted
        if option == "Copy":
            source = await _get(tx, creation["sourceResourceId"])
            if source is None or source.type not in (DISK_TYPE, SNAPSHOT_TYPE) or \
                    source.provisioning_state == "Deleting":
                raise source_error("creationData.sourceResourceId", creation["sourceResourceId"])
            sp = source.body.get("properties") or {}
            creation["sourceUniqueId"] = sp.get("uniqueId")
            base_size = sp.get("diskSizeGB")
            facts = {"osType": sp.get("osType"), "hyperVGeneration": sp.get("hyperVGeneration")}
        else:  # FromImage
            image_id = creation["imageReference"]["id"]
            rid = parse_resource_id(image_id)
            if rid is not None and rid.type_key == IMAGE_TYPE:
                image = await _get(tx, image_id)
                if image is None or image.provisioning_state == "Deleting":
                    raise source_error("creationData.imageReference.id", image_id)
                ip = image.body.get("properties") or {}
                os_disk = (ip.get("storageProfile") or {}).get("osDisk") or {}
                base_size = os_disk.get("diskSizeGB")
                facts = {"osType": os_disk.get("osType"), "hyperVGeneration": ip.get("hyperVGeneration")}
            else:
                base = self.marketplace(image_id) if self.marketplace and parse_marketplace_id(image_id) else None
                if base is None:
                    raise ArmError(404, "PlatformImageNotFound", f"The platform image '{image_id}' is not "
                                   "available. Verify that all fields in the storage profile are correct.",
                                   target="creationData.imageReference.id")
                base_size = base.size_gb
                facts = {"osType": base.os_type, "hyperVGeneration": base.hyperv_generation}
        for key, value in facts.items():
            if value and key not in props:
                props[key] = value
        if wanted is not None and base_size and wanted < base_size:
            raise bad_request("InvalidParameter", f"The specified disk size {wanted} GB is smaller than the size "
                              f"of the corresponding disk image: {base_size} GB.", "diskSizeGB")
        return wanted or base_size

    # 3. GET shape: the stored body
    # 4. host effects: the file in the disk store
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.disks.realise(resource)

    async def remove(self, services: "Services", resource: Resource) -> None:
        await services.disks.remove(resource)


def _plain_security(profile: Any) -> bool:
    """Trusted Launch and Standard profiles change nothing about the file; confidential ones need keys."""
    return isinstance(profile, dict) and str(profile.get("securityType") or "Standard").lower() in (
        "standard", "trustedlaunch") and not profile.get("secureVMDiskEncryptionSetId")


async def _get(tx: Tx, resource_id: str) -> Resource | None:
    rid = parse_resource_id(str(resource_id or ""))
    return await tx.get_resource(rid.key) if rid is not None else None


class Disks(DiskLike):
    # 1. the ARM type
    type_path = ("disks",)

    def normalise_more(self, props: dict[str, Any], sku: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if props.get("maxShares") not in (None, 1, "1"):
            raise unsupported("properties.maxShares", "shared disks")
        if sku in ("UltraSSD_LRS", "PremiumV2_LRS"):  # provisioned performance: the client's numbers
            for key in ("diskIOPSReadWrite", "diskMBpsReadWrite"):
                if props.get(key) is not None:
                    out[key] = integer(props[key], key)
        if props.get("tier") and sku.startswith("Premium_"):
            out["tier"] = str(props["tier"])
        return out

    def stamp(self, resource: Resource, props: dict[str, Any]) -> None:
        sku = resource.body["sku"]["name"]
        tier, iops, mbps = performance(sku, props["diskSizeGB"])
        props.setdefault("diskIOPSReadWrite", iops)
        props.setdefault("diskMBpsReadWrite", mbps)
        asked = props.get("tier")
        if tier and not (asked and asked[:1] == tier[:1] and asked[1:].isdigit() and int(asked[1:]) > int(tier[1:])):
            props["tier"] = tier  # the size's own tier, unless a higher performance tier was asked for
        if sku in ("UltraSSD_LRS", "PremiumV2_LRS"):
            props.setdefault("diskIOPSReadOnly", iops)
            props.setdefault("diskMBpsReadOnly", mbps)

    async def check_resize(self, tx: Tx, resource: Resource) -> None:
        """Azure grows a disk while detached or while its VM is deallocated; kumo's QEMU holds the file
        while the VM runs or is stopped, so the same rule keeps qemu-img off a file in use."""
        user = resource.body.get("managedBy")
        vm = await _get(tx, user) if user else None
        power = ((vm.body.get("kumo") or {}).get("power") or "running") if vm else "deallocated"
        if power != "deallocated":
            raise ArmError(409, "OperationNotAllowed", "Disk resizing is allowed only when creating a VM or when "
                           f"the VM is deallocated. Disk {resource.name} is attached to VM {user}.",
                           target="diskSizeGB")

    # 2c. a disk a VM uses cannot be deleted
    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        user = resource.body.get("managedBy")
        if user:
            raise ArmError(409, "OperationNotAllowed", f"Disk {resource.name} is attached to VM {user}.")


# -- for the VM code: a disk's attachment, kept in the same transaction as the VM's own write -------

async def attach_disk(tx: Tx, disk_id: str, vm_id: str) -> Resource:
    """Mark the disk used by the VM (`managedBy`, `diskState: Attached`). 404 when there is no such
    disk, 409 when another VM has it."""
    disk = await _get(tx, disk_id)
    if disk is None or disk.type != DISK_TYPE:
        raise ArmError(404, "NotFound", f"Disk {disk_id} was not found.", target="managedDisk.id")
    current = disk.body.get("managedBy")
    if current and current.lower() != vm_id.lower():
        raise ArmError(409, "OperationNotAllowed", f"Disk {disk.name} is already attached to VM {current}.",
                       target="managedDisk.id")
    if current is None or disk.body["properties"].get("diskState") != "Attached":
        disk.body["managedBy"] = vm_id
        disk.body["properties"]["diskState"] = "Attached"
        disk.body["properties"]["LastOwnershipUpdateTime"] = now()
        await tx.put_resource(disk)
    return disk


async def detach_disk(tx: Tx, disk_id: str, vm_id: str) -> None:
    """The VM no longer uses the disk (no-op when the disk is gone or another VM's)."""
    disk = await _get(tx, disk_id)
    if disk is None or str(disk.body.get("managedBy") or "").lower() != vm_id.lower():
        return
    disk.body.pop("managedBy", None)
    disk.body["properties"]["diskState"] = "Unattached"
    disk.body["properties"]["LastOwnershipUpdateTime"] = now()
    await tx.put_resource(disk)
