"""A VM's request body → the stored body: Azure's errors, kumo's refusals naming the property, and the
read-only fields `az vm resize` sends back."""

from __future__ import annotations

from typing import Any

import pytest

from kumo.arm.errors import ArmError
from kumo.providers.compute import vm_schema

NIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKumoKumoKumoKumoKumoKumoKumoKumoKumoKumoKumo kumo"


def body(**props: Any) -> dict[str, Any]:
    base = {"hardwareProfile": {"vmSize": "standard_b1s"},
            "storageProfile": {"imageReference": {"publisher": "kumo", "offer": "tiny", "sku": "1"}},
            "osProfile": {"adminUsername": "azureuser", "linuxConfiguration": {
                "disablePasswordAuthentication": "true", "ssh": {"publicKeys": [{"keyData": KEY}]}}},
            "networkProfile": {"networkInterfaces": [{"id": NIC}]}}
    base.update(props)
    return {"properties": base}


def error(b: dict[str, Any], previous: dict[str, Any] | None = None) -> ArmError:
    with pytest.raises(ArmError) as e:
        vm_schema.normalise("vm1", b, previous, {})
    return e.value


def test_defaults_and_canonical_values() -> None:
    out = vm_schema.normalise("vm1", body(), None, {})
    p = out["properties"]
    assert p["hardwareProfile"] == {"vmSize": "Standard_B1s"}
    assert p["storageProfile"]["imageReference"]["version"] == "latest"
    assert p["osProfile"]["computerName"] == "vm1"
    assert p["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["path"] == \
        "/home/azureuser/.ssh/authorized_keys"
    assert p["networkProfile"]["networkInterfaces"][0]["properties"]["primary"] is True
    assert vm_schema.primary_nic(p) == NIC and p["vmId"] and p["timeCreated"]
    assert out["kumo"]["power"] == "running"


def test_errors_name_the_property() -> None:
    assert error(body(hardwareProfile={"vmSize": "Standard_Z9"})).code == "InvalidParameter"
    assert error(body(storageProfile={"imageReference": {"id": "/x"}})).target == "storageProfile.imageReference.id"
    assert error(body(storageProfile={"imageReference": {"publisher": "a", "offer": "b", "sku": "c"},
                                      "dataDisks": [{"lun": 0}]})).target == "storageProfile.dataDisks[0].createOption"
    assert error(body(storageProfile={"imageReference": {"publisher": "a", "offer": "b", "sku": "c"},
                                      "dataDisks": [{"lun": 0, "createOption": "Empty"}]})).target == \
        "storageProfile.dataDisks[0].diskSizeGB"
    assert error(body(availabilitySet={"id": "/x"})).target == "availabilitySet"
    assert error({**body(), "identity": {"type": "SystemAssigned"}}).target == "identity"
    assert error(body(osProfile={"adminUsername": "root", "linuxConfiguration": {
        "ssh": {"publicKeys": [{"keyData": KEY}]}}})).target == "osProfile.adminUsername"
    assert error(body(osProfile={"adminUsername": "u1", "customData": "not base64!"})).target == \
        "osProfile.customData"
    assert error(body(networkProfile={"networkInterfaces": []})).target == "networkProfile.networkInterfaces"


def test_a_resize_put_echoes_read_only_fields_and_keeps_the_secret() -> None:
    first = vm_schema.normalise("vm1", body(osProfile={
        "adminUsername": "azureuser", "adminPassword": "Secret-Passw0rd!",
        "linuxConfiguration": {"disablePasswordAuthentication": False}}), None, {})
    assert "adminPassword" not in first["properties"]["osProfile"]
    assert first["kumo"]["secrets"] == {"adminPassword": "Secret-Passw0rd!"}
    echoed = {"properties": {**first["properties"], "hardwareProfile": {"vmSize": "Standard_B2s"},
                             "provisioningState": "Succeeded", "instanceView": {"statuses": []}}}
    second = vm_schema.normalise("vm1", echoed, first["properties"], first["kumo"])
    assert second["properties"]["hardwareProfile"]["vmSize"] == "Standard_B2s"
    assert second["properties"]["vmId"] == first["properties"]["vmId"]
    assert "instanceView" not in second["properties"] and "provisioningState" not in second["properties"]
    assert second["kumo"]["secrets"] == first["kumo"]["secrets"]
    renamed = {"properties": {**first["properties"], "osProfile": {**first["properties"]["osProfile"],
                                                                   "computerName": "other"}}}
    assert error(renamed, first["properties"]).code == "PropertyChangeNotAllowed"


def test_disk_property_names_are_case_insensitive_as_arm_reads_them() -> None:
    """az's template writes the OS disk's size as `diskSizeGb`."""
    out = vm_schema.normalise("vm1", body(storageProfile={
        "imageReference": {"publisher": "a", "offer": "b", "sku": "c"},
        "osDisk": {"createOption": "fromImage", "diskSizeGb": 8},
        "dataDisks": [{"Lun": 0, "createoption": "empty", "DiskSizeGB": 2}]}), None, {})
    storage = out["properties"]["storageProfile"]
    assert storage["osDisk"]["diskSizeGB"] == 8
    assert storage["dataDisks"][0]["diskSizeGB"] == 2 and storage["dataDisks"][0]["createOption"] == "Empty"
