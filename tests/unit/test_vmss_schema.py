"""Scale set bodies: Azure's defaults, limits and errors, and the VM and NIC bodies instances are made from."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kumo.arm.errors import ArmError
from kumo.providers.compute import vmss_schema
from kumo.providers.compute.vm_schema import INTERNAL

SUBNET = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/default"
POOL = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/loadBalancers/lb/backendAddressPools/be"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHDFuVHQhhqc1es5p4mO+A8PmZQMJ8iKOkCdzjR3rpJ7 test"


def body(capacity: Any = 2, **props: Any) -> dict[str, Any]:
    return {"sku": {"name": "Standard_B1s", "capacity": capacity}, "properties": {
        "orchestrationMode": "Uniform", **props, "virtualMachineProfile": {
            "storageProfile": {"imageReference": {"publisher": "kumo", "offer": "tiny", "sku": "1",
                                                  "version": "latest"}},
            "osProfile": {"computerNamePrefix": "web", "adminUsername": "azureuser", "adminPassword": None,
                          "linuxConfiguration": {"disablePasswordAuthentication": True,
                                                 "ssh": {"publicKeys": [{"keyData": KEY}]}}},
            "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {
                "primary": "true", "ipConfigurations": [{"name": "ip", "properties": {
                    "subnet": {"id": SUBNET}, "loadBalancerBackendAddressPools": [{"id": POOL}]}}]}}]}}}}


def error(raw: dict[str, Any]) -> ArmError:
    with pytest.raises(ArmError) as e:
        vmss_schema.normalise("ss", raw, None, {})
    return e.value


def test_defaults_as_azure_shows_them() -> None:
    out = vmss_schema.normalise("ss", body(), None, {})
    props = out["properties"]
    assert out["sku"] == {"name": "Standard_B1s", "tier": "Standard", "capacity": 2}
    assert props["upgradePolicy"] == {"mode": "Manual"} and props["overprovision"] is True
    assert props["singlePlacementGroup"] is True and props["scaleInPolicy"]["rules"] == ["Default"]
    nic = props["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]
    assert nic["primary"] is True and nic["deleteOption"] == "Delete"
    assert props["virtualMachineProfile"]["osProfile"]["computerNamePrefix"] == "web"


def test_limits_and_bad_values_are_arm_errors() -> None:
    assert "1000" in error(body(1001, singlePlacementGroup=False)).message
    assert "placement group" in error(body(101)).message
    assert error(body(-1)).target == "sku.capacity"
    assert error(body("two")).target == "sku.capacity"
    assert "orchestrationMode" in error(body(orchestrationMode="Sideways")).message
    raw = body()
    raw["properties"]["virtualMachineProfile"]["osProfile"]["computerNamePrefix"] = "x" * 59
    assert error(raw).target.endswith("computerNamePrefix")
    raw = body()
    raw["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]["properties"][
        "ipConfigurations"][0]["properties"]["publicIPAddressConfiguration"] = {"name": "pip"}
    assert error(raw).code == "OperationNotAllowed"
    raw = body(automaticRepairsPolicy={"enabled": True, "gracePeriod": "ten minutes"})
    assert error(raw).target == "automaticRepairsPolicy.gracePeriod"


def test_secrets_are_kept_out_of_the_body_and_in_the_model() -> None:
    raw = body()
    raw["properties"]["virtualMachineProfile"]["osProfile"]["customData"] = "IyEvYmluL3NoCg=="
    out = vmss_schema.normalise("ss", raw, None, {})
    assert "customData" not in out["properties"]["virtualMachineProfile"]["osProfile"]
    assert out[INTERNAL]["secrets"]["customData"] == "IyEvYmluL3NoCg=="
    again = vmss_schema.normalise("ss", copy.deepcopy(out), out, out[INTERNAL])  # az PUTs back what it GOT
    assert again[INTERNAL]["secrets"]["customData"] == "IyEvYmluL3NoCg=="
    assert vmss_schema.model_hash(again) == vmss_schema.model_hash(out)
    resized = copy.deepcopy(out)
    resized["sku"]["name"] = "Standard_B2s"
    assert vmss_schema.model_hash(vmss_schema.normalise("ss", resized, out, out[INTERNAL])) != \
        vmss_schema.model_hash(out)


def test_instances_are_vm_and_nic_bodies_from_the_model() -> None:
    stored = {**vmss_schema.normalise("ss", body(), None, {}), "id": "/x/ss", "location": "local", "tags": {"a": "b"}}
    name = vmss_schema.computer_name("web", "37", uniform=True)
    assert name == "web000011"[:3] + "000011"  # 37 in base 36
    vm = vmss_schema.instance_body(stored, name, "ss_37", ["/nic/0"])
    props = vm["properties"]
    assert props["osProfile"]["computerName"] == "web000011" and "computerNamePrefix" not in props["osProfile"]
    assert props["hardwareProfile"]["vmSize"] == "Standard_B1s" and props["virtualMachineScaleSet"] == {"id": "/x/ss"}
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert props["storageProfile"]["osDisk"]["name"].startswith("ss_37_OsDisk_1_")
    assert props["networkProfile"]["networkInterfaces"] == [{"id": "/nic/0", "properties": {
        "primary": True, "deleteOption": "Delete"}}]
    config = stored["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
    nic = vmss_schema.nic_body(stored, config)
    ip = nic["properties"]["ipConfigurations"][0]["properties"]
    assert ip["loadBalancerBackendAddressPools"] == [{"id": POOL}] and ip["primary"] is True
    assert vmss_schema.computer_name("web", "ss_1a2b3c4d", uniform=False).startswith("web")
    assert vmss_schema.iso_seconds("PT1H30M", "x") == 5400 and vmss_schema.iso_seconds("PT30S", "x") == 30
