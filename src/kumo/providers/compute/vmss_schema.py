"""A scale set's request body → the stored body, with Azure's rules and error codes, and the model
each instance is made from: an ordinary VM body and NIC bodies, so instances are real VMs that the
VM controller boots like any other. Pure functions: no store, no host."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
import uuid
from typing import Any

from kumo.arm.errors import ArmError, bad_request
from kumo.compute import sizes
from kumo.providers.compute import vm_schema
from kumo.providers.compute.vm_schema import INTERNAL, _bool, _obj

# Azure's limits: instances per scale set from a marketplace image, from a custom image, and in one
# placement group.
MAX_MARKETPLACE = 1000
MAX_CUSTOM_IMAGE = 600
MAX_PLACEMENT_GROUP = 100
# Linux: the prefix plus the 6-character instance suffix is the computer name (at most 64 characters).
PREFIX = re.compile(r"^(?!\d+$)[A-Za-z0-9][A-Za-z0-9.-]{0,57}$")
UNSUPPORTED_PROPS = {
    "proximityPlacementGroup": "proximity placement groups",
    "hostGroup": "dedicated host groups",
    "additionalCapabilities": "additional capabilities (Ultra SSD, hibernation)",
    "spotRestorePolicy": "Spot restore",
    "priorityMixPolicy": "Spot priority mixes",
}
READ_ONLY = ("provisioningState", "uniqueId", "timeCreated")
PASSTHROUGH = ("doNotRunExtensionsOnOverprovisionedVMs", "zoneBalance", "platformFaultDomainCount",
               "constrainedMaximumCapacity", "resiliencyPolicy")


def unsupported(prop: str, what: str) -> ArmError:
    return bad_request("OperationNotAllowed", f"kumo cannot do {what} yet: remove '{prop}' from the scale set.", prop)


def _choice(value: Any, field: str, options: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    for option in options:
        if str(value).lower() == option.lower():
            return option
    raise bad_request("InvalidParameter", f"'{field}' must be one of {', '.join(options)}, not '{value}'.", field)


def iso_seconds(value: str, field: str) -> float:
    """ISO 8601 durations as Azure uses them in scale sets (PT10M, PT1H30M, PT30S)."""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", str(value).upper())
    if not m or not any(m.groups()):
        raise bad_request("InvalidParameter", f"'{field}' must be an ISO 8601 duration such as PT10M, not "
                          f"'{value}'.", field)
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def _capacity(sku: dict[str, Any], old: dict[str, Any]) -> int:
    value = sku.get("capacity", old.get("capacity", 0 if old else None))
    if value is None:
        raise bad_request("InvalidParameter", "Required parameter 'sku.capacity' is missing (null).", "sku.capacity")
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0 or str(value).strip() not in (str(number), f"{number}.0"):
        raise bad_request("InvalidParameter", f"'sku.capacity' must be a whole number of instances, not {value}.",
                          "sku.capacity")
    return number


def _network_profile(profile: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    np_ = _obj(profile.get("networkProfile"), "virtualMachineProfile.networkProfile")
    if not np_ and old:
        return old
    configs = np_.get("networkInterfaceConfigurations") or []
    if not isinstance(configs, list) or not configs:
        raise bad_request("InvalidParameter", "At least one network interface configuration is required: "
                          "virtualMachineProfile.networkProfile.networkInterfaceConfigurations is empty.",
                          "virtualMachineProfile.networkProfile.networkInterfaceConfigurations")
    out = []
    for n, raw in enumerate(configs):
        field = "virtualMachineProfile.networkProfile.networkInterfaceConfigurations"
        c = _obj(raw, field)
        name = c.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("InvalidParameter", f"Network interface configuration {n} needs a name.", field)
        p = _obj(c.get("properties"), f"{field}.properties")
        ip_configs = p.get("ipConfigurations") or []
        if not isinstance(ip_configs, list) or not ip_configs:
            raise bad_request("InvalidParameter", f"Network interface configuration {name} needs at least one IP "
                              "configuration.", f"{field}.properties.ipConfigurations")
        ips = []
        for ipc in ip_configs:
            ipc = _obj(ipc, f"{field}.properties.ipConfigurations")
            ip_props = _obj(ipc.get("properties"), "ipConfigurations.properties")
            if not ipc.get("name"):
                raise bad_request("InvalidParameter", f"Every IP configuration of {name} needs a name.",
                                  "ipConfigurations.name")
            if not (_obj(ip_props.get("subnet"), "ipConfigurations.properties.subnet")).get("id"):
                raise bad_request("InvalidParameter", f"IP configuration {ipc['name']} of {name} needs a subnet.",
                                  "ipConfigurations.properties.subnet")
            if ip_props.get("publicIPAddressConfiguration"):
                raise unsupported("ipConfigurations.properties.publicIPAddressConfiguration",
                                  "a public IP per instance (put the instances behind a load balancer and use its "
                                  "NAT rules)")
            if ip_props.get("applicationGatewayBackendAddressPools"):
                raise unsupported("ipConfigurations.properties.applicationGatewayBackendAddressPools",
                                  "application gateways")
            kept = {"subnet": {"id": ip_props["subnet"]["id"]},
                    "privateIPAddressVersion": ip_props.get("privateIPAddressVersion") or "IPv4"}
            if ip_props.get("primary") is not None:
                kept["primary"] = _bool(ip_props["primary"], "ipConfigurations.properties.primary", False)
            for ref_list in ("loadBalancerBackendAddressPools", "loadBalancerInboundNatPools"):
                refs = ip_props.get(ref_list) or []
                if not isinstance(refs, list):
                    raise bad_request("InvalidParameter", f"'{ref_list}' must be an array.", ref_list)
                if refs:
                    kept[ref_list] = [{"id": str(_obj(r, ref_list).get("id"))} for r in refs]
            ips.append({"name": ipc["name"], "properties": kept})
        props: dict[str, Any] = {
            "primary": _bool(p.get("primary"), f"{field}.properties.primary", len(configs) == 1),
            "enableAcceleratedNetworking": _bool(p.get("enableAcceleratedNetworking"),
                                                 "enableAcceleratedNetworking", False),
            "enableIPForwarding": _bool(p.get("enableIPForwarding"), "enableIPForwarding", False),
            "ipConfigurations": ips,
            "deleteOption": _choice(p.get("deleteOption"), "deleteOption", ("Delete", "Detach"), "Delete"),
        }
        if (_obj(p.get("networkSecurityGroup"), "networkSecurityGroup")).get("id"):
            props["networkSecurityGroup"] = {"id": p["networkSecurityGroup"]["id"]}
        out.append({"name": name, "properties": props})
    if len(out) > 1 and sum(c["properties"]["primary"] for c in out) != 1:
        raise bad_request("InvalidParameter", "Exactly one network interface configuration must be primary.",
                          "virtualMachineProfile.networkProfile.networkInterfaceConfigurations")
    result: dict[str, Any] = {"networkInterfaceConfigurations": out}
    for key in ("networkApiVersion", "healthProbe"):
        if np_.get(key):
            result[key] = np_[key]
    return result


def _storage_profile(profile: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    sp = _obj(profile.get("storageProfile"), "virtualMachineProfile.storageProfile")
    if not sp and old:
        return old
    image = _obj(sp.get("imageReference"), "storageProfile.imageReference")
    if not image:
        raise bad_request("InvalidParameter", "Required parameter 'imageReference' is missing (null).",
                          "virtualMachineProfile.storageProfile.imageReference")
    os_disk = {k: v for k, v in _obj(sp.get("osDisk"), "storageProfile.osDisk").items() if v is not None}
    managed = {k: v for k, v in _obj(os_disk.get("managedDisk"), "osDisk.managedDisk").items() if v is not None}
    out_os: dict[str, Any] = {"createOption": "FromImage", "caching": os_disk.get("caching") or "ReadWrite",
                              "managedDisk": {"storageAccountType": managed.get("storageAccountType") or
                                              "Premium_LRS"}, "osType": "Linux"}
    for key in ("diskSizeGB", "diskSizeGb"):
        if os_disk.get(key) is not None:
            out_os["diskSizeGB"] = os_disk[key]
    data = sp.get("dataDisks") or []
    if not isinstance(data, list):
        raise bad_request("InvalidParameter", "'dataDisks' must be an array.", "storageProfile.dataDisks")
    out_data = []
    for d in data:
        d = vm_schema._disk_fields(d, "storageProfile.dataDisks")
        if str(d.get("createOption") or "Empty").lower() != "empty":
            raise unsupported("storageProfile.dataDisks.createOption", "scale set data disks other than Empty")
        out_data.append({"lun": d.get("lun"), "createOption": "Empty", "diskSizeGB": d.get("diskSizeGB"),
                         "caching": d.get("caching") or "None",
                         "managedDisk": {"storageAccountType": (d.get("managedDisk") or {}).get("storageAccountType")
                                         or "Premium_LRS"}})
    return {"imageReference": image, "osDisk": out_os, "dataDisks": out_data}


def _os_profile(profile: dict[str, Any], old: dict[str, Any], name: str,
                old_secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    op = _obj(profile.get("osProfile"), "virtualMachineProfile.osProfile")
    if old and (not op or all(op.get(k) in (None, old.get(k)) for k in ("computerNamePrefix", "adminUsername"))):
        # az PUTs back what it GOT: the profile stays, the secrets with it
        secrets = dict(old_secrets)
        for key in ("adminPassword", "customData"):
            if op.get(key):
                secrets[key] = str(op[key])
        return old, secrets
    if old:
        raise bad_request("PropertyChangeNotAllowed", "Changing property 'osProfile' is not allowed.",
                          "virtualMachineProfile.osProfile")
    prefix = str(op.get("computerNamePrefix") or re.sub(r"[^A-Za-z0-9-]", "", name)[:9] or "vm")
    if not PREFIX.match(prefix):
        raise bad_request("InvalidParameter", f"The computer name prefix '{prefix[:64]}' is invalid: 1-58 letters, "
                          "digits, '.' and '-', not only digits.", "virtualMachineProfile.osProfile.computerNamePrefix")
    # the VM rules (user name, keys, password) checked on a sample instance's profile
    sample = {k: v for k, v in op.items() if k != "computerNamePrefix"}
    sample["computerName"] = f"{prefix}000000"
    profile_out, secrets = vm_schema._os_profile(name, {"osProfile": sample}, None, {})
    profile_out = {k: v for k, v in profile_out.items() if k != "computerName"}
    return {"computerNamePrefix": prefix, **profile_out}, secrets


def normalise(name: str, body: dict[str, Any], previous: dict[str, Any] | None,
              old_internal: dict[str, Any]) -> dict[str, Any]:
    """The stored body: {sku, properties, zones?, kumo: {secrets}}."""
    prev_props = (previous or {}).get("properties") or {}
    prev_sku = (previous or {}).get("sku") or {}
    props = _obj(body.get("properties"), "properties")
    for key, what in UNSUPPORTED_PROPS.items():
        if props.get(key):
            raise unsupported(key, what)
    if body.get("identity") and str((body["identity"] or {}).get("type", "None")).lower() != "none":
        raise unsupported("identity", "managed identities on scale sets")
    if body.get("plan"):
        raise unsupported("plan", "marketplace plans")
    sku = _obj(body.get("sku"), "sku")
    size_name = sku.get("name") or prev_sku.get("name")
    size = sizes.lookup(str(size_name)) if size_name else None
    if size is None:
        raise vm_schema.size_error(size_name)
    capacity = _capacity(sku, prev_sku)
    mode = _choice(props.get("orchestrationMode"), "orchestrationMode", ("Uniform", "Flexible"),
                   prev_props.get("orchestrationMode") or "Uniform")
    if prev_props and mode != prev_props.get("orchestrationMode"):
        raise bad_request("PropertyChangeNotAllowed", "Changing property 'orchestrationMode' is not allowed.",
                          "properties.orchestrationMode")
    profile = _obj(props.get("virtualMachineProfile"), "virtualMachineProfile")
    old_profile = prev_props.get("virtualMachineProfile") or {}
    if not profile and not old_profile:
        raise bad_request("InvalidParameter", "Required parameter 'virtualMachineProfile' is missing (null).",
                          "properties.virtualMachineProfile")
    if profile.get("extensionProfile") and (profile["extensionProfile"].get("extensions") or []):
        raise unsupported("virtualMachineProfile.extensionProfile", "VM extensions (use osProfile.customData with "
                          "the Debian12 image for start-up scripts)")
    os_profile, secrets = _os_profile(profile, old_profile.get("osProfile") or {}, name,
                                      dict(old_internal.get("secrets") or {}))
    vm_profile: dict[str, Any] = {
        "osProfile": os_profile,
        "storageProfile": _storage_profile(profile, old_profile.get("storageProfile") or {}),
        "networkProfile": _network_profile(profile, old_profile.get("networkProfile") or {}),
    }
    for key in ("diagnosticsProfile", "securityProfile", "userData", "scheduledEventsProfile", "licenseType"):
        value = profile.get(key, old_profile.get(key))
        if value is not None:
            vm_profile[key] = value
    upgrade = _obj(props.get("upgradePolicy"), "upgradePolicy") or prev_props.get("upgradePolicy") or {}
    upgrade_out: dict[str, Any] = {"mode": _choice(upgrade.get("mode"), "upgradePolicy.mode",
                                                   ("Manual", "Automatic", "Rolling"), "Manual")}
    if upgrade.get("rollingUpgradePolicy"):
        upgrade_out["rollingUpgradePolicy"] = upgrade["rollingUpgradePolicy"]
    uniform = mode == "Uniform"
    single_pg = props.get("singlePlacementGroup", prev_props.get("singlePlacementGroup"))
    single = _bool(single_pg, "singlePlacementGroup", uniform)
    out: dict[str, Any] = {
        "orchestrationMode": mode,
        "upgradePolicy": upgrade_out,
        "virtualMachineProfile": vm_profile,
        "singlePlacementGroup": single,
        "uniqueId": prev_props.get("uniqueId") or str(uuid.uuid4()),
        "timeCreated": prev_props.get("timeCreated") or time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00",
                                                                      time.gmtime()),
    }
    if uniform:
        out["overprovision"] = _bool(props.get("overprovision", prev_props.get("overprovision")), "overprovision",
                                     True)
    elif props.get("overprovision"):
        raise bad_request("InvalidParameter", "Overprovision is not supported by scale sets in Flexible "
                          "orchestration mode.", "properties.overprovision")
    scale_in = _obj(props.get("scaleInPolicy"), "scaleInPolicy") or prev_props.get("scaleInPolicy") or {}
    rules = scale_in.get("rules") or ["Default"]
    if not isinstance(rules, list) or len(rules) != 1:
        raise bad_request("InvalidParameter", "scaleInPolicy.rules takes exactly one rule.", "scaleInPolicy.rules")
    out["scaleInPolicy"] = {"rules": [_choice(rules[0], "scaleInPolicy.rules", ("Default", "OldestVM", "NewestVM"),
                                              "Default")],
                            "forceDeletion": _bool(scale_in.get("forceDeletion"), "scaleInPolicy.forceDeletion", False)}
    repairs = _obj(props.get("automaticRepairsPolicy"), "automaticRepairsPolicy") or \
        prev_props.get("automaticRepairsPolicy") or {}
    if repairs:
        grace = str(repairs.get("gracePeriod") or "PT10M")
        iso_seconds(grace, "automaticRepairsPolicy.gracePeriod")  # Azure's minimum is PT10M; kumo takes less
        out["automaticRepairsPolicy"] = {
            "enabled": _bool(repairs.get("enabled"), "automaticRepairsPolicy.enabled", False), "gracePeriod": grace,
            "repairAction": _choice(repairs.get("repairAction"), "automaticRepairsPolicy.repairAction",
                                    ("Replace", "Restart", "Reimage"), "Replace")}
        if out["automaticRepairsPolicy"]["enabled"] and not _health_source(vm_profile):
            raise bad_request("InvalidParameter", "Automatic repairs need an application health signal: a "
                              "networkProfile.healthProbe, or a load balancer backend pool whose rule has a probe.",
                              "properties.automaticRepairsPolicy")
    for key in PASSTHROUGH:
        value = props.get(key, prev_props.get(key))
        if value is not None:
            out[key] = value
    limit = MAX_CUSTOM_IMAGE if vm_profile["storageProfile"]["imageReference"].get("id") else MAX_MARKETPLACE
    if capacity > limit:
        kind = "a custom image" if limit == MAX_CUSTOM_IMAGE else "a platform image"
        raise bad_request("InvalidParameter", f"The capacity {capacity} exceeds the maximum of {limit} instances "
                          f"for a scale set from {kind}.", "sku.capacity")
    if single and capacity > MAX_PLACEMENT_GROUP:
        raise bad_request("InvalidParameter", f"The capacity {capacity} exceeds the maximum of "
                          f"{MAX_PLACEMENT_GROUP} instances in a single placement group: set "
                          "singlePlacementGroup to false.", "sku.capacity")
    internal = dict(old_internal)
    internal["secrets"] = secrets
    result: dict[str, Any] = {"sku": {"name": size.name, "tier": "Standard", "capacity": capacity},
                              "properties": out, INTERNAL: internal}
    if body.get("zones") or (previous or {}).get("zones"):
        result["zones"] = body.get("zones") or previous.get("zones")  # type: ignore[union-attr]
    return result


def _health_source(profile: dict[str, Any]) -> bool:
    np_ = profile["networkProfile"]
    return bool(np_.get("healthProbe")) or any(
        ipc["properties"].get("loadBalancerBackendAddressPools")
        for c in np_["networkInterfaceConfigurations"] for ipc in c["properties"]["ipConfigurations"])


def model_hash(body: dict[str, Any]) -> str:
    """What an instance is made from: the size and the VM profile (secrets included, never shown)."""
    model = {"size": body["sku"]["name"], "profile": body["properties"]["virtualMachineProfile"],
             "secrets": (body.get(INTERNAL) or {}).get("secrets") or {}}
    return hashlib.sha1(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]


def computer_name(prefix: str, instance_id: str, uniform: bool) -> str:
    """Azure's names: Uniform `{prefix}{instance id in base 36, 6 digits}`; Flexible `{prefix}{6 random}`."""
    if uniform:
        n, digits = int(instance_id), ""
        while True:
            n, r = divmod(n, 36)
            digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
            if n == 0:
                break
        return prefix + digits.rjust(6, "0")
    return prefix + hashlib.sha1(instance_id.encode()).hexdigest()[:6]


def nic_body(vmss: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A NIC for one instance from one network interface configuration."""
    p = config["properties"]
    ips = []
    for ipc in p["ipConfigurations"]:
        ip = copy.deepcopy(ipc["properties"])
        ip["privateIPAllocationMethod"] = "Dynamic"
        ips.append({"name": ipc["name"], "properties": ip})
    if len(ips) == 1:
        ips[0]["properties"]["primary"] = True
    props: dict[str, Any] = {"ipConfigurations": ips, "primary": p["primary"],
                             "enableAcceleratedNetworking": p["enableAcceleratedNetworking"],
                             "enableIPForwarding": p["enableIPForwarding"]}
    if p.get("networkSecurityGroup"):
        props["networkSecurityGroup"] = p["networkSecurityGroup"]
    return {"location": vmss["location"], "tags": vmss.get("tags") or {}, "properties": props}


def instance_body(vmss: dict[str, Any], computer: str, vm_name: str, nic_ids: list[str]) -> dict[str, Any]:
    """The VM PUT body of one instance: the model, its own computer name, disks and NICs."""
    profile = vmss["properties"]["virtualMachineProfile"]
    secrets = (vmss.get(INTERNAL) or {}).get("secrets") or {}
    storage = profile["storageProfile"]
    os_profile = {k: v for k, v in copy.deepcopy(profile["osProfile"]).items() if k != "computerNamePrefix"}
    os_profile["computerName"] = computer
    for key in ("adminPassword", "customData"):
        if secrets.get(key):
            os_profile[key] = secrets[key]
    suffix = uuid.uuid4().hex
    os_disk = {**copy.deepcopy(storage["osDisk"]), "name": f"{vm_name}_OsDisk_1_{suffix}", "deleteOption": "Delete"}
    data = [{**copy.deepcopy(d), "name": f"{vm_name}_disk{d['lun']}_{suffix}", "deleteOption": "Delete"}
            for d in storage.get("dataDisks") or []]
    configs = profile["networkProfile"]["networkInterfaceConfigurations"]
    nics = [{"id": nic_id, "properties": {"primary": c["properties"]["primary"],
                                          "deleteOption": c["properties"]["deleteOption"]}}
            for nic_id, c in zip(nic_ids, configs, strict=True)]
    props: dict[str, Any] = {
        "hardwareProfile": {"vmSize": vmss["sku"]["name"]},
        "storageProfile": {"imageReference": copy.deepcopy(storage["imageReference"]), "osDisk": os_disk,
                           "dataDisks": data},
        "osProfile": os_profile,
        "networkProfile": {"networkInterfaces": nics},
        "virtualMachineScaleSet": {"id": vmss["id"]},
    }
    for key in ("diagnosticsProfile", "securityProfile", "userData", "licenseType"):
        if profile.get(key) is not None:
            props[key] = copy.deepcopy(profile[key])
    return {"location": vmss["location"], "tags": vmss.get("tags") or {}, "properties": props}
