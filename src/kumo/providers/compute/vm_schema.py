"""A virtual machine's request body → the stored body, with Azure's rules and error codes. Pure
functions: no store, no host. What kumo cannot do yet (data disks, custom images, Windows, extensions,
cloud-init user data, availability sets, managed identities) is refused with a 400 naming the property,
never silently ignored. Read-only fields a client sends back (`az vm resize` PUTs the whole object it
got: provisioningState, vmId, timeCreated, instanceView, …) are accepted and dropped."""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import Any

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import parse_resource_id
from kumo.compute import sizes

NIC_TYPE = "microsoft.network/networkinterfaces"
VMSS_NIC_TYPE = "microsoft.compute/virtualmachinescalesets/virtualmachines/networkinterfaces"  # a Uniform instance's
INTERNAL = "kumo"  # top-level body key for what only kumo sees (desired power, secrets, instance view)
# Azure's computerName rule for Linux: 1-64 characters, letters, digits, '-' and '.', not only digits.
COMPUTER_NAME = re.compile(r"^(?!\d+$)[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")
ADMIN_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
RESERVED_USERS = {"root", "admin", "administrator", "daemon", "bin", "sys", "nobody", "guest", "user", "test",
                  "sshd", "adm", "games", "lp", "mail", "news", "uucp", "proxy", "backup", "operator"}
READ_ONLY = ("provisioningState", "vmId", "timeCreated", "instanceView", "timeUpdated")
# Properties kumo stores and shows as given (they change nothing kumo does on this one-host cloud).
PASSTHROUGH = ("diagnosticsProfile", "licenseType", "priority", "evictionPolicy", "billingProfile",
               "userData", "applicationProfile", "capacityReservation", "scheduledEventsProfile")
UNSUPPORTED = {
    "availabilitySet": "availability sets",
    "proximityPlacementGroup": "proximity placement groups",
    "host": "dedicated hosts",
    "hostGroup": "dedicated host groups",
    "additionalCapabilities": "additional capabilities (Ultra SSD, hibernation)",
}
POWER_STATES = ("running", "stopped", "deallocated")


def unsupported(prop: str, what: str) -> ArmError:
    return bad_request("OperationNotAllowed", f"kumo cannot do {what} yet: remove '{prop}' from the virtual "
                       "machine.", prop)


def _obj(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("InvalidParameter", f"'{field}' must be a JSON object.", field)
    return value


def _disk_fields(value: Any, field: str) -> dict[str, Any]:
    """A disk entry with ARM's case-insensitive property names folded to the documented spelling
    (az's template writes the OS disk's `diskSizeGb`)."""
    d = _obj(value, field)
    canonical = {k.lower(): k for k in ("diskSizeGB", "createOption", "deleteOption", "managedDisk", "lun",
                                         "caching", "name", "osType", "toBeDetached")}
    return {canonical.get(k.lower(), k): v for k, v in d.items()}


def _bool(value: Any, field: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise bad_request("InvalidParameter", f"'{field}' must be true or false.", field)


def size_error(name: Any) -> ArmError:
    return bad_request("InvalidParameter", f"The requested VM size {name} is not available in the current region. "
                       f"The sizes available in the current region are: {', '.join(sizes.names())}. Find out more "
                       "on the available VM sizes in each region at https://aka.ms/azure-regions.", "vmSize")


def _hardware(props: dict[str, Any]) -> dict[str, Any]:
    hw = _obj(props.get("hardwareProfile"), "hardwareProfile")
    name = hw.get("vmSize")
    if not name:
        raise bad_request("InvalidParameter", "Required parameter 'hardwareProfile.vmSize' is missing (null).",
                          "hardwareProfile.vmSize")
    size = sizes.lookup(str(name))
    if size is None:
        raise size_error(name)
    if hw.get("vmSizeProperties"):
        raise unsupported("hardwareProfile.vmSizeProperties", "customised vCPU counts")
    return {"vmSize": size.name}


DISK_SKUS = ("Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "UltraSSD_LRS", "Premium_ZRS", "StandardSSD_ZRS",
             "PremiumV2_LRS")
IMAGE_TYPE = "microsoft.compute/images"
DISK_TYPE = "microsoft.compute/disks"


def _sku(value: Any, field: str, default: str | None) -> str | None:
    if value is None:
        return default
    found = next((k for k in DISK_SKUS if k.lower() == str(value).lower()), None)
    if found is None:
        raise bad_request("InvalidParameter", f"The value '{value}' of '{field}' is not a disk SKU: use one of "
                          f"{', '.join(DISK_SKUS)}.", field)
    return found


def _size_gb(value: Any, field: str) -> int | None:
    if value is None:
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise bad_request("InvalidParameter", f"{field} must be an integer.", field) from None
    if not 1 <= size <= 32767:
        raise bad_request("InvalidParameter", f"{field} must be between 1 and 32767 (GiB).", field)
    return size


def _delete_option(value: Any, field: str, default: str) -> str:
    if value is None:
        return default
    if str(value).lower() not in ("delete", "detach"):
        raise bad_request("InvalidParameter", f"{field} must be Delete or Detach.", field)
    return "Delete" if str(value).lower() == "delete" else "Detach"


def _image_reference(sp: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    image = _obj(sp.get("imageReference"), "storageProfile.imageReference")
    if not image and old.get("imageReference"):
        image = old["imageReference"]
    if image.get("sharedGalleryImageId") or image.get("communityGalleryImageId"):
        raise unsupported("storageProfile.imageReference", "gallery images")
    if image.get("id"):  # a custom image: Microsoft.Compute/images (galleries are not served)
        try:
            rid = parse_resource_id(str(image["id"]))
        except Exception:
            rid = None
        if rid is None or rid.type_key != IMAGE_TYPE:
            raise bad_request("InvalidParameter", f"The image id '{image['id']}' is not the id of a "
                              "Microsoft.Compute/images resource (gallery images are not served).",
                              "storageProfile.imageReference.id")
        return {"id": str(image["id"])}
    missing = [k for k in ("publisher", "offer", "sku") if not image.get(k)]
    if missing:
        raise bad_request("InvalidParameter", "The value of parameter imageReference is invalid: "
                          f"{', '.join(missing)} missing.", "storageProfile.imageReference")
    out = {k: str(image[k]) for k in ("publisher", "offer", "sku")}
    out["version"] = str(image.get("version") or "latest")
    if image.get("exactVersion"):
        out["exactVersion"] = str(image["exactVersion"])
    return out


def _data_disks(name: str, sp: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """Empty disks (made with the VM, named as Azure names them) or existing managed disks (Attach);
    a disk left out of the list on update is detached."""
    disks = sp.get("dataDisks")
    if disks is None:
        return [dict(d) for d in (old.get("dataDisks") or [])]
    if not isinstance(disks, list):
        raise bad_request("InvalidParameter", "storageProfile.dataDisks must be an array.", "storageProfile.dataDisks")
    before = {d["lun"]: d for d in old.get("dataDisks") or []}
    out, luns = [], set()
    for i, d in enumerate(disks):
        field = f"storageProfile.dataDisks[{i}]"
        d = _disk_fields(d, field)
        try:
            lun = int(d.get("lun"))
        except (TypeError, ValueError):
            raise bad_request("InvalidParameter", "Required parameter 'dataDisk.lun' is missing (null).",
                              f"{field}.lun") from None
        if not 0 <= lun <= 63 or lun in luns:
            raise bad_request("InvalidParameter", f"The LUN {lun} of a data disk is out of range (0-63) or used "
                              "twice.", f"{field}.lun")
        luns.add(lun)
        if _bool(d.get("toBeDetached"), f"{field}.toBeDetached", False):
            continue  # Azure's other way to detach
        managed = _obj(d.get("managedDisk"), f"{field}.managedDisk")
        prev = before.get(lun)
        create = str(d.get("createOption") or (prev or {}).get("createOption") or "")
        kind = {"empty": "Empty", "attach": "Attach"}.get(create.lower())
        if kind is None:
            if create.lower() in ("fromimage", "copy", "restore"):
                raise unsupported(f"{field}.createOption", f"data disks created with '{create}'")
            raise bad_request("InvalidParameter", f"Data disk createOption must be Empty or Attach, not "
                              f"'{create}'.", f"{field}.createOption")
        if d.get("vhd") or d.get("image"):
            raise unsupported(field, "unmanaged data disks")
        entry: dict[str, Any] = {
            "lun": lun, "createOption": kind, "caching": d.get("caching") or (prev or {}).get("caching") or "None",
            "writeAcceleratorEnabled": False, "toBeDetached": False,
            "deleteOption": _delete_option(d.get("deleteOption"), f"{field}.deleteOption",
                                           (prev or {}).get("deleteOption") or "Detach"),
            "managedDisk": {"storageAccountType": _sku(managed.get("storageAccountType"),
                                                       f"{field}.managedDisk.storageAccountType",
                                                       ((prev or {}).get("managedDisk") or {}).get(
                                                           "storageAccountType") or "Premium_LRS")},
        }
        if prev and (managed.get("id") is None or str(managed["id"]).lower() ==
                     str(prev["managedDisk"].get("id", "")).lower()):
            entry.update(name=prev["name"], diskSizeGB=prev.get("diskSizeGB"))
            entry["managedDisk"]["id"] = prev["managedDisk"].get("id")
            entry["createOption"] = prev["createOption"]
        elif kind == "Empty":
            size = _size_gb(d.get("diskSizeGB"), f"{field}.diskSizeGB")
            if size is None:
                raise bad_request("InvalidParameter", "Required parameter 'dataDisk.diskSizeGB' is missing (null) "
                                  "for an empty disk.", f"{field}.diskSizeGB")
            entry["name"] = str(d.get("name") or f"{name}_disk{lun + 1}_{uuid.uuid4().hex}")
            entry["diskSizeGB"] = size
        else:
            disk_id = managed.get("id")
            try:
                rid = parse_resource_id(str(disk_id or ""))
            except Exception:
                rid = None
            if rid is None or rid.type_key != DISK_TYPE:
                raise bad_request("InvalidParameter", "An attached data disk needs managedDisk.id, the id of a "
                                  "Microsoft.Compute/disks resource.", f"{field}.managedDisk.id")
            entry["name"] = rid.name
            entry["managedDisk"]["id"] = str(disk_id)
        out.append({k: v for k, v in entry.items() if v is not None})
    return sorted(out, key=lambda d: d["lun"])


def _storage(name: str, props: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    sp = _obj(props.get("storageProfile"), "storageProfile")
    if sp.get("diskControllerType") not in (None, "SCSI", "NVMe", "scsi", "nvme"):
        raise bad_request("InvalidParameter", "storageProfile.diskControllerType must be SCSI or NVMe.",
                          "storageProfile.diskControllerType")
    old = (previous or {}).get("storageProfile") or {}
    image_out = _image_reference(sp, old)
    os_disk = _disk_fields(sp.get("osDisk"), "storageProfile.osDisk")
    create = str(os_disk.get("createOption") or "FromImage")
    if create.lower() != "fromimage":
        raise unsupported("storageProfile.osDisk.createOption", f"OS disks created with '{create}'")
    if os_disk.get("osType") and str(os_disk["osType"]).lower() != "linux":
        raise unsupported("storageProfile.osDisk.osType", "Windows virtual machines")
    if os_disk.get("encryptionSettings") or os_disk.get("vhd") or os_disk.get("image"):
        raise unsupported("storageProfile.osDisk", "unmanaged or encrypted OS disks")
    old_disk = old.get("osDisk") or {}
    managed = _obj(os_disk.get("managedDisk"), "storageProfile.osDisk.managedDisk")
    disk_name = os_disk.get("name") or old_disk.get("name") or f"{name}_OsDisk_1_{uuid.uuid4().hex}"
    out_disk: dict[str, Any] = {
        "osType": "Linux", "name": disk_name, "createOption": "FromImage",
        "caching": os_disk.get("caching") or "ReadWrite",
        "managedDisk": {"storageAccountType": _sku(managed.get("storageAccountType"),
                                                   "storageProfile.osDisk.managedDisk.storageAccountType",
                                                   (old_disk.get("managedDisk") or {}).get("storageAccountType")
                                                   or "Premium_LRS")},
        "deleteOption": _delete_option(os_disk.get("deleteOption"), "storageProfile.osDisk.deleteOption",
                                       old_disk.get("deleteOption") or "Detach"),
    }
    if (old_disk.get("managedDisk") or {}).get("id"):
        out_disk["managedDisk"]["id"] = old_disk["managedDisk"]["id"]
    size = _size_gb(os_disk.get("diskSizeGB"), "storageProfile.osDisk.diskSizeGB")
    if size is None:
        size = old_disk.get("diskSizeGB")
    if size is not None:
        if old_disk.get("diskSizeGB") and size < old_disk["diskSizeGB"]:
            raise bad_request("ResizeDiskError", f"Disk size reduction is not supported: the OS disk is "
                              f"{old_disk['diskSizeGB']} GB.", "storageProfile.osDisk.diskSizeGB")
        out_disk["diskSizeGB"] = size
    return {"imageReference": image_out, "osDisk": out_disk, "dataDisks": _data_disks(name, sp, old)}


def _os_profile(name: str, props: dict[str, Any], previous: dict[str, Any] | None,
                old_secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the stored osProfile, the secrets kept out of it)."""
    op = _obj(props.get("osProfile"), "osProfile")
    old = (previous or {}).get("osProfile")
    if old is not None:
        # Azure: the OS profile is fixed once the VM exists (a resize PUT echoes it without the password)
        for key in ("computerName", "adminUsername"):
            if op.get(key) and str(op[key]) != old.get(key):
                raise bad_request("PropertyChangeNotAllowed", f"Changing property 'osProfile.{key}' is not "
                                  "allowed.", f"osProfile.{key}")
        return old, old_secrets
    if op.get("windowsConfiguration"):
        raise unsupported("osProfile.windowsConfiguration", "Windows virtual machines")
    custom = op.get("customData")
    if custom is not None:
        try:
            base64.b64decode(str(custom), validate=True)
        except ValueError:
            raise bad_request("InvalidParameter", "osProfile.customData must be base64-encoded.",
                              "osProfile.customData") from None
        if len(str(custom)) > 87380:
            raise bad_request("InvalidParameter", "osProfile.customData is longer than 87380 base64 characters "
                              "(64 KiB).", "osProfile.customData")
    if op.get("secrets"):
        raise unsupported("osProfile.secrets", "Key Vault certificates in the guest")
    computer = str(op.get("computerName") or name)[:64]
    if not COMPUTER_NAME.match(computer):
        raise bad_request("InvalidParameter", f"Linux computer name '{computer}' is invalid: it may contain letters, "
                          "digits, '.' and '-', be at most 64 characters long and not consist of digits only.",
                          "osProfile.computerName")
    user = op.get("adminUsername")
    if not user:
        raise bad_request("InvalidParameter", "Required parameter 'adminUsername' is missing (null).",
                          "osProfile.adminUsername")
    user = str(user)
    if user.lower() in RESERVED_USERS or not ADMIN_USER.match(user):
        raise bad_request("InvalidParameter", f"The admin user name '{user}' is not allowed: it must be 1-32 "
                          "lower-case letters, digits, '_', '.' or '-', start with a letter or '_', and not be a "
                          "reserved name.", "osProfile.adminUsername")
    linux = _obj(op.get("linuxConfiguration"), "osProfile.linuxConfiguration")
    keys_in = _obj(linux.get("ssh"), "osProfile.linuxConfiguration.ssh").get("publicKeys") or []
    if not isinstance(keys_in, list):
        raise bad_request("InvalidParameter", "'publicKeys' must be an array.", "osProfile.linuxConfiguration.ssh")
    keys = []
    for k in keys_in:
        data = str((k or {}).get("keyData") or "").strip()
        if not re.match(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+", data):
            raise bad_request("InvalidParameter", "The value of parameter linuxConfiguration.ssh.publicKeys.keyData "
                              "is invalid: it must be an SSH public key in OpenSSH format.",
                              "osProfile.linuxConfiguration.ssh.publicKeys.keyData")
        path = str(k.get("path") or f"/home/{user}/.ssh/authorized_keys")
        keys.append({"path": path, "keyData": data})
    password = op.get("adminPassword")
    no_password = _bool(linux.get("disablePasswordAuthentication"), "disablePasswordAuthentication",
                        password is None)
    if no_password and not keys:
        raise bad_request("InvalidParameter", "Authentication using either SSH or by user name and password must be "
                          "enabled in Linux profile.", "osProfile.linuxConfiguration")
    if not no_password and not password:
        raise bad_request("InvalidParameter", "Required parameter 'adminPassword' is missing (null).",
                          "osProfile.adminPassword")
    if password is not None and no_password:
        raise bad_request("InvalidParameter", "adminPassword is not allowed when disablePasswordAuthentication is "
                          "true.", "osProfile.adminPassword")
    out_linux: dict[str, Any] = {"disablePasswordAuthentication": no_password, "provisionVMAgent": True,
                                 "patchSettings": {"patchMode": "ImageDefault", "assessmentMode": "ImageDefault"},
                                 "enableVMAgentPlatformUpdates": False}
    if keys:
        out_linux["ssh"] = {"publicKeys": keys}
    profile = {"computerName": computer, "adminUsername": user, "linuxConfiguration": out_linux, "secrets": [],
               "allowExtensionOperations": True, "requireGuestProvisionSignal": True}
    secrets = {"adminPassword": str(password)} if password else {}
    if custom:  # write-only, as Azure keeps it: never shown again
        secrets["customData"] = str(custom)
    return profile, secrets


def _network(props: dict[str, Any]) -> dict[str, Any]:
    np_ = _obj(props.get("networkProfile"), "networkProfile")
    if np_.get("networkInterfaceConfigurations"):
        raise unsupported("networkProfile.networkInterfaceConfigurations",
                          "NICs created with the VM (create the NIC first and reference it)")
    nics = np_.get("networkInterfaces") or []
    if not isinstance(nics, list) or not nics:
        raise bad_request("InvalidParameter", "At least one network interface is required: "
                          "properties.networkProfile.networkInterfaces is empty.", "networkProfile.networkInterfaces")
    out = []
    primaries = 0
    for n in nics:
        nid = (n or {}).get("id")
        try:
            rid = parse_resource_id(str(nid or ""))
        except Exception:
            rid = None
        if rid is None or rid.type_key not in (NIC_TYPE, VMSS_NIC_TYPE):
            raise bad_request("InvalidParameter", f"'{nid}' is not a network interface id.",
                              "networkProfile.networkInterfaces.id")
        p = _obj(n.get("properties"), "networkProfile.networkInterfaces.properties")
        primary = _bool(p.get("primary"), "networkProfile.networkInterfaces.properties.primary", len(nics) == 1)
        primaries += primary
        entry: dict[str, Any] = {"id": str(nid), "properties": {"primary": primary}}
        if p.get("deleteOption"):
            entry["properties"]["deleteOption"] = "Delete" if str(p["deleteOption"]).lower() == "delete" else "Detach"
        out.append(entry)
    if len(out) > 1 and primaries != 1:
        raise bad_request("VirtualMachineMustHaveOnePrimaryNetworkInterface", "Virtual machine must have one network "
                          "interface set as primary when it has more than one.", "networkProfile.networkInterfaces")
    return {"networkInterfaces": out}


def _security(props: dict[str, Any]) -> dict[str, Any] | None:
    sec = props.get("securityProfile")
    if not sec:
        return None
    sec = _obj(sec, "securityProfile")
    kind = sec.get("securityType")
    if kind and str(kind).lower() not in ("trustedlaunch", "standard"):
        raise unsupported("securityProfile.securityType", f"the '{kind}' security type")
    if sec.get("encryptionAtHost"):
        raise unsupported("securityProfile.encryptionAtHost", "encryption at host")
    return sec


def primary_nic(props: dict[str, Any]) -> str:
    nics = props["networkProfile"]["networkInterfaces"]
    return next((n["id"] for n in nics if n["properties"].get("primary")), nics[0]["id"])


def normalise(name: str, body: dict[str, Any], previous: dict[str, Any] | None,
              old_internal: dict[str, Any]) -> dict[str, Any]:
    props = _obj(body.get("properties"), "properties")
    for key, what in UNSUPPORTED.items():
        if props.get(key):
            raise unsupported(key, what)
    if body.get("identity") and str((body["identity"] or {}).get("type", "None")).lower() != "none":
        raise unsupported("identity", "managed identities on virtual machines")
    if body.get("extendedLocation"):
        raise unsupported("extendedLocation", "edge zones")
    if body.get("plan"):
        raise unsupported("plan", "marketplace plans")
    resources = body.get("resources") or []
    if resources:
        raise unsupported("resources", "VM extensions")
    internal = dict(old_internal)
    secrets = dict(internal.get("secrets") or {})
    os_profile, secrets = _os_profile(name, props, previous, secrets)
    out: dict[str, Any] = {
        "hardwareProfile": _hardware(props),
        "storageProfile": _storage(name, props, previous),
        "osProfile": os_profile,
        "networkProfile": _network(props),
        "vmId": (previous or {}).get("vmId") or str(uuid.uuid4()),
        "timeCreated": (previous or {}).get("timeCreated") or time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00",
                                                                            time.gmtime()),
    }
    if sec := _security(props):
        out["securityProfile"] = sec
    scale_set = _obj(props.get("virtualMachineScaleSet"), "virtualMachineScaleSet").get("id")
    if scale_set:  # a scale set's instance (checked against the scale set in validate)
        out["virtualMachineScaleSet"] = {"id": str(scale_set)}
    for key in PASSTHROUGH:
        if props.get(key) is not None:
            out[key] = props[key]
    internal["secrets"] = secrets
    internal.setdefault("power", "running")
    result: dict[str, Any] = {"properties": out, INTERNAL: internal}
    if body.get("zones"):
        result["zones"] = body["zones"]
    return result
