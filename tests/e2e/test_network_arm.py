"""Microsoft.Network over ARM, end to end: virtual networks, subnets, network interfaces, public IPs,
network security groups and their rules through the real azure-mgmt-network SDK and the real az CLI,
with Azure's validation errors and the references Azure keeps between these resources. The test
server runs as root with nftables, so every resource is realised on the host and reaches Succeeded."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.conftest import KumoServer, unique

pytestmark = [pytest.mark.e2e]  # its store paths run on PostgreSQL through test_deployments
ACI = "Microsoft.ContainerInstance/containerGroups"


def sdk_error(code: str, call: Callable[[], Any], status: int = 400) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert (e.value.status_code, e.value.error.code) == (status, code), e.value.message
    return e.value


def az_error(kumo: KumoServer, code: str, *args: str) -> str:
    proc = kumo.az(*args, check=False)
    assert proc.returncode != 0 and code in proc.stderr, proc.stderr
    return proc.stderr


def public_pool(kumo: KumoServer) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(kumo.extra_args[kumo.extra_args.index("--public-ip-pool") + 1])


def subnet_body(prefix: str, **props: Any) -> dict[str, Any]:
    return {"properties": {"addressPrefix": prefix, **props}}


def nic_body(subnet_id: str, address: str | None = None, **props: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"subnet": {"id": subnet_id}}
    if address:
        cfg.update(privateIPAllocationMethod="Static", privateIPAddress=address)
    return {"location": "local", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": cfg}],
                                                **props}}


def rule_body(priority: int, port: str = "22", direction: str = "Inbound") -> dict[str, Any]:
    return {"properties": {"protocol": "Tcp", "access": "Allow", "direction": direction, "priority": priority,
                           "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
                           "destinationPortRange": port}}


def ids(refs: list[Any] | None) -> set[str]:
    """The ids of a list of sub-resource references (SDK models or az JSON), lower-cased."""
    return {(r["id"] if isinstance(r, dict) else r.id).lower() for r in refs or []}


# -- virtual networks and subnets ------------------------------------------------------------------

@pytest.mark.slow  # the az CLI takes about a second a call
def test_az_vnet_and_subnet_lifecycle(kumo: KumoServer, network_client, rg: str) -> None:
    sub = kumo.identity["subscription_id"]
    created = kumo.az("network", "vnet", "create", "-g", rg, "-n", "vnet1", "-l", "local",
                      "--address-prefixes", "10.20.0.0/16", "--subnet-name", "web",
                      "--subnet-prefixes", "10.20.1.0/24", "--tags", "env=test")["newVNet"]
    vnet_id = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/vnet1"
    assert created["id"] == vnet_id and created["type"] == "Microsoft.Network/virtualNetworks"
    assert created["addressSpace"]["addressPrefixes"] == ["10.20.0.0/16"]
    assert created["tags"] == {"env": "test"} and created["location"] == "local"
    assert created["resourceGuid"] and created["etag"].startswith('W/"')
    assert [(s["name"], s["addressPrefix"]) for s in created["subnets"]] == [("web", "10.20.1.0/24")]

    shown = kumo.az("network", "vnet", "show", "-g", rg, "-n", "vnet1")
    assert shown["provisioningState"] == "Succeeded" and shown["resourceGuid"] == created["resourceGuid"]
    assert shown["subnets"][0]["id"] == f"{vnet_id}/subnets/web"
    assert [v["name"] for v in kumo.az("network", "vnet", "list", "-g", rg)] == ["vnet1"]
    assert vnet_id in {v["id"] for v in kumo.az("network", "vnet", "list")}

    # update (a read-modify-write): a second address space and a tag; the subnet survives
    updated = kumo.az("network", "vnet", "update", "-g", rg, "-n", "vnet1",
                      "--address-prefixes", "10.20.0.0/16", "10.30.0.0/16", "--set", "tags.env=prod")
    assert updated["addressSpace"]["addressPrefixes"] == ["10.20.0.0/16", "10.30.0.0/16"]
    assert updated["tags"] == {"env": "prod"} and [s["name"] for s in updated["subnets"]] == ["web"]
    assert updated["provisioningState"] == "Succeeded" and updated["resourceGuid"] == created["resourceGuid"]

    # a child subnet in the new address space, delegated to container groups as ACI needs
    aci = kumo.az("network", "vnet", "subnet", "create", "-g", rg, "--vnet-name", "vnet1", "-n", "aci",
                  "--address-prefixes", "10.30.0.0/24", "--delegations", ACI)
    assert aci["addressPrefix"] == "10.30.0.0/24" and aci["provisioningState"] == "Succeeded"
    assert [d["serviceName"] for d in aci["delegations"]] == [ACI]
    assert aci["delegations"][0]["actions"] == ["Microsoft.Network/virtualNetworks/subnets/action"]
    shown = kumo.az("network", "vnet", "subnet", "show", "-g", rg, "--vnet-name", "vnet1", "-n", "aci")
    assert shown["id"] == f"{vnet_id}/subnets/aci" and shown["delegations"][0]["serviceName"] == ACI
    listed = kumo.az("network", "vnet", "subnet", "list", "-g", rg, "--vnet-name", "vnet1")
    assert sorted(s["name"] for s in listed) == ["aci", "web"]
    az_error(kumo, "NetcfgSubnetRangeOutsideVnet", "network", "vnet", "subnet", "create", "-g", rg,
             "--vnet-name", "vnet1", "-n", "bad", "--address-prefixes", "10.99.0.0/24")
    inline = kumo.az("network", "vnet", "show", "-g", rg, "-n", "vnet1")["subnets"]
    assert {s["name"]: s["delegations"][0]["serviceName"] for s in inline if s["delegations"]} == {"aci": ACI}
    assert sorted(s["name"] for s in inline) == ["aci", "web"]

    kumo.az("network", "vnet", "subnet", "delete", "-g", rg, "--vnet-name", "vnet1", "-n", "aci")
    sdk_error("ResourceNotFound", lambda: network_client.subnets.get(rg, "vnet1", "aci"), 404)
    kumo.az("network", "vnet", "delete", "-g", rg, "-n", "vnet1")
    assert kumo.az("network", "vnet", "list", "-g", rg) == []


def test_sdk_vnet_inline_subnets_and_child_subnets_are_one_set(network_client, rg: str) -> None:
    nc = network_client
    vnet = nc.virtual_networks.begin_create_or_update(rg, "vnet1", {
        "location": "local", "tags": {"a": "1"},
        "properties": {"addressSpace": {"addressPrefixes": ["10.10.0.0/16"]},
                       "subnets": [{"name": "web", **subnet_body("10.10.1.0/24")},
                                   {"name": "db", **subnet_body("10.10.2.0/24")}]}}).result()
    assert vnet.provisioning_state == "Succeeded" and vnet.address_space.address_prefixes == ["10.10.0.0/16"]
    assert sorted((s.name, s.address_prefix) for s in vnet.subnets) == [("db", "10.10.2.0/24"),
                                                                      ("web", "10.10.1.0/24")]
    assert {s.provisioning_state for s in vnet.subnets} == {"Succeeded"}
    # inline subnets are child resources too
    assert nc.subnets.get(rg, "vnet1", "web").id == f"{vnet.id}/subnets/web"
    assert sorted(s.name for s in nc.subnets.list(rg, "vnet1")) == ["db", "web"]

    # a child PUT (with a delegation) shows up inline in the VNet
    app = nc.subnets.begin_create_or_update(rg, "vnet1", "app", subnet_body("10.10.3.0/24", delegations=[
        {"name": "aci", "properties": {"serviceName": ACI}}])).result()
    assert app.provisioning_state == "Succeeded" and app.type == "Microsoft.Network/virtualNetworks/subnets"
    assert [(d.name, d.service_name) for d in app.delegations] == [("aci", ACI)]
    inline = {s.name: s for s in nc.virtual_networks.get(rg, "vnet1").subnets}
    assert sorted(inline) == ["app", "db", "web"]
    assert inline["app"].delegations[0].service_name == ACI
    assert inline["app"].provisioning_state == "Succeeded"

    # a child PUT that changes a prefix is seen inline; a child DELETE drops it inline
    nc.subnets.begin_create_or_update(rg, "vnet1", "db", subnet_body("10.10.4.0/24")).result()
    assert {s.name: s.address_prefix for s in nc.virtual_networks.get(rg, "vnet1").subnets}["db"] == "10.10.4.0/24"
    nc.subnets.begin_delete(rg, "vnet1", "db").result()
    assert sorted(s.name for s in nc.virtual_networks.get(rg, "vnet1").subnets) == ["app", "web"]

    # and a VNet PUT that lists other subnets replaces the child resources
    current = nc.virtual_networks.get(rg, "vnet1")
    nc.virtual_networks.begin_create_or_update(rg, "vnet1", {
        "location": "local", "tags": current.tags,
        "properties": {"addressSpace": {"addressPrefixes": ["10.10.0.0/16"]},
                       "subnets": [{"name": "web", **subnet_body("10.10.1.0/24")},
                                   {"name": "cache", **subnet_body("10.10.5.0/24")}]}}).result()
    assert sorted(s.name for s in nc.subnets.list(rg, "vnet1")) == ["cache", "web"]
    sdk_error("ResourceNotFound", lambda: nc.subnets.get(rg, "vnet1", "app"), 404)

    # PATCH (tags) keeps everything else; list by group and subscription
    tagged = nc.virtual_networks.update_tags(rg, "vnet1", {"tags": {"b": "2"}})
    assert tagged.tags == {"b": "2"} and sorted(s.name for s in tagged.subnets) == ["cache", "web"]
    assert [v.name for v in nc.virtual_networks.list(rg)] == ["vnet1"]
    assert vnet.id in {v.id for v in nc.virtual_networks.list_all()}

    # validation on both paths
    space = {"addressSpace": {"addressPrefixes": ["10.10.0.0/16"]}}
    sdk_error("NetcfgSubnetRangeOutsideVnet", lambda: nc.virtual_networks.begin_create_or_update(rg, "vnet2", {
        "location": "local", "properties": {**space, "subnets": [{"name": "x", **subnet_body("10.11.0.0/24")}]}}))
    sdk_error("NetcfgSubnetRangesOverlap", lambda: nc.virtual_networks.begin_create_or_update(rg, "vnet2", {
        "location": "local", "properties": {**space, "subnets": [{"name": "x", **subnet_body("10.10.0.0/24")},
                                                                 {"name": "y", **subnet_body("10.10.0.0/23")}]}}))
    sdk_error("InvalidCIDRNotation", lambda: nc.virtual_networks.begin_create_or_update(rg, "vnet2", {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.1/16"]}}}))
    sdk_error("InvalidCIDRNotation", lambda: nc.subnets.begin_create_or_update(
        rg, "vnet1", "x", subnet_body("10.10.6.1/24")))
    sdk_error("NetcfgInvalidSubnet", lambda: nc.subnets.begin_create_or_update(
        rg, "vnet1", "x", subnet_body("10.10.6.0/30")))
    sdk_error("NetcfgSubnetRangesOverlap", lambda: nc.subnets.begin_create_or_update(
        rg, "vnet1", "x", subnet_body("10.10.0.0/16")))
    sdk_error("NetcfgSubnetRangeOutsideVnet", lambda: nc.subnets.begin_create_or_update(
        rg, "vnet1", "x", subnet_body("192.168.0.0/24")))
    sdk_error("ResourceNotFound", lambda: nc.virtual_networks.get(rg, "vnet2"), 404)

    nc.virtual_networks.begin_delete(rg, "vnet1").result()
    assert list(nc.virtual_networks.list(rg)) == []
    with pytest.raises(ResourceNotFoundError):
        nc.subnets.get(rg, "vnet1", "web")


# -- network interfaces and private addresses ----------------------------------------------------

def test_sdk_nic_private_addresses_follow_azure_rules(network_client, rg: str) -> None:
    nc = network_client
    vnet = nc.virtual_networks.begin_create_or_update(rg, "vnet1", {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
                                            "subnets": [{"name": "big", **subnet_body("10.1.0.0/24")},
                                                        {"name": "tiny", **subnet_body("10.1.1.0/29")}]}}).result()
    big, tiny = f"{vnet.id}/subnets/big", f"{vnet.id}/subnets/tiny"

    # dynamic addresses start at .4 (Azure keeps .0-.3 and the broadcast address); a /29 holds three
    nics = [nc.network_interfaces.begin_create_or_update(rg, f"tiny{i}", nic_body(tiny)).result() for i in range(3)]
    assert [n.ip_configurations[0].private_ip_address for n in nics] == ["10.1.1.4", "10.1.1.5", "10.1.1.6"]
    first = nics[0]
    assert first.provisioning_state == "Succeeded" and first.ip_configurations[0].primary is True
    assert first.ip_configurations[0].private_ip_allocation_method == "Dynamic"
    assert first.ip_configurations[0].id == f"{first.id}/ipConfigurations/ipconfig1"
    assert first.mac_address.startswith("00-0D-3A-") and first.resource_guid
    sdk_error("SubnetIsFull", lambda: nc.network_interfaces.begin_create_or_update(rg, "tiny3", nic_body(tiny)))

    # the subnet lists the IP configurations in it, as a child resource and inline in the VNet
    cfg_ids = {n.ip_configurations[0].id.lower() for n in nics}
    assert ids(nc.subnets.get(rg, "vnet1", "tiny").ip_configurations) == cfg_ids
    inline = {s.name: s for s in nc.virtual_networks.get(rg, "vnet1").subnets}
    assert ids(inline["tiny"].ip_configurations) == cfg_ids and not inline["big"].ip_configurations

    # a freed address is handed out again
    nc.network_interfaces.begin_delete(rg, "tiny1").result()
    assert ids(nc.subnets.get(rg, "vnet1", "tiny").ip_configurations) == cfg_ids - {nics[1].ip_configurations[0]
                                                                                    .id.lower()}
    again = nc.network_interfaces.begin_create_or_update(rg, "tiny3", nic_body(tiny)).result()
    assert again.ip_configurations[0].private_ip_address == "10.1.1.5"

    # static addresses: Azure's reserved range, the subnet's range, one owner per address
    for address, code in (("10.1.0.1", "PrivateIPAddressInReservedRange"),
                          ("10.1.0.3", "PrivateIPAddressInReservedRange"),
                          ("10.1.0.255", "PrivateIPAddressInReservedRange"),
                          ("10.1.2.10", "PrivateIPAddressNotInSubnet")):
        sdk_error(code, lambda a=address: nc.network_interfaces.begin_create_or_update(rg, "static",
                                                                                       nic_body(big, a)))
    static = nc.network_interfaces.begin_create_or_update(rg, "static", nic_body(big, "10.1.0.10")).result()
    assert static.ip_configurations[0].private_ip_address == "10.1.0.10"
    assert static.ip_configurations[0].private_ip_allocation_method == "Static"
    sdk_error("PrivateIPAddressInUse", lambda: nc.network_interfaces.begin_create_or_update(
        rg, "other", nic_body(big, "10.1.0.10")))
    # dynamic allocation takes the lowest free address, around the static ones
    dyn = nc.network_interfaces.begin_create_or_update(rg, "dyn", nic_body(big)).result()
    assert dyn.ip_configurations[0].private_ip_address == "10.1.0.4"

    # updates keep the MAC and the address; tags by PATCH
    mac = static.mac_address
    updated = nc.network_interfaces.begin_create_or_update(
        rg, "static", nic_body(big, "10.1.0.10", enableIPForwarding=True)).result()
    assert updated.enable_ip_forwarding is True and updated.mac_address == mac
    assert updated.ip_configurations[0].private_ip_address == "10.1.0.10"
    assert nc.network_interfaces.update_tags(rg, "static", {"tags": {"role": "db"}}).tags == {"role": "db"}
    moved = nc.network_interfaces.begin_create_or_update(rg, "static", nic_body(big, "10.1.0.11")).result()
    assert moved.ip_configurations[0].private_ip_address == "10.1.0.11"
    nc.network_interfaces.begin_create_or_update(rg, "other", nic_body(big, "10.1.0.10")).result()

    names = {"tiny0", "tiny2", "tiny3", "static", "dyn", "other"}
    assert {n.name for n in nc.network_interfaces.list(rg)} == names
    assert {f"{vnet.id.split('/providers/')[0]}/providers/Microsoft.Network/networkInterfaces/{n}".lower()
            for n in names} <= {n.id.lower() for n in nc.network_interfaces.list_all()}

    # a subnet (or a VNet) with NICs in it cannot be deleted, nor dropped from a VNet PUT
    sdk_error("InUseSubnetCannotBeDeleted", lambda: nc.subnets.begin_delete(rg, "vnet1", "tiny").result())
    sdk_error("InUseSubnetCannotBeDeleted", lambda: nc.virtual_networks.begin_delete(rg, "vnet1").result())
    sdk_error("InUseSubnetCannotBeDeleted", lambda: nc.virtual_networks.begin_create_or_update(rg, "vnet1", {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
                                            "subnets": [{"name": "big", **subnet_body("10.1.0.0/24")}]}}))
    sdk_error("InUseSubnetCannotBeUpdated", lambda: nc.subnets.begin_create_or_update(
        rg, "vnet1", "big", subnet_body("10.1.0.128/25")))
    for poller in [nc.network_interfaces.begin_delete(rg, name) for name in ("tiny0", "tiny2", "tiny3")]:
        poller.result()
    assert not nc.subnets.get(rg, "vnet1", "tiny").ip_configurations
    nc.subnets.begin_delete(rg, "vnet1", "tiny").result()
    assert [s.name for s in nc.virtual_networks.get(rg, "vnet1").subnets] == ["big"]
    sdk_error("ResourceNotFound", lambda: nc.network_interfaces.get(rg, "tiny0"), 404)


@pytest.mark.slow  # the az CLI takes about a second a call
def test_az_nic_and_public_ip_lifecycle(kumo: KumoServer, network_client, rg: str) -> None:
    nc = network_client
    label = unique("lbl")
    pip = kumo.az("network", "public-ip", "create", "-g", rg, "-n", "pip1", "-l", "local", "--sku", "Standard",
                  "--dns-name", label)["publicIp"]
    assert pip["provisioningState"] == "Succeeded" and pip["sku"]["name"] == "Standard"
    assert pip["publicIPAllocationMethod"] == "Static"
    assert ipaddress.IPv4Address(pip["ipAddress"]) in public_pool(kumo)
    assert pip["dnsSettings"] == {"domainNameLabel": label, "fqdn": f"{label}.local.cloudapp.azure.com"}
    shown = kumo.az("network", "public-ip", "show", "-g", rg, "-n", "pip1")
    assert shown["ipAddress"] == pip["ipAddress"] and shown["id"] == pip["id"]
    assert [p["name"] for p in kumo.az("network", "public-ip", "list", "-g", rg)] == ["pip1"]
    updated = kumo.az("network", "public-ip", "update", "-g", rg, "-n", "pip1", "--idle-timeout", "15",
                      "--dns-name", f"{label}b")
    assert updated["idleTimeoutInMinutes"] == 15 and updated["ipAddress"] == pip["ipAddress"]
    assert updated["dnsSettings"]["fqdn"] == f"{label}b.local.cloudapp.azure.com"
    assert updated["provisioningState"] == "Succeeded"

    kumo.az("network", "vnet", "create", "-g", rg, "-n", "vnet1", "-l", "local", "--address-prefixes",
            "10.40.0.0/16", "--subnet-name", "s1", "--subnet-prefixes", "10.40.1.0/24")
    nic = kumo.az("network", "nic", "create", "-g", rg, "-n", "nic1", "-l", "local", "--vnet-name", "vnet1",
                  "--subnet", "s1", "--public-ip-address", "pip1")["NewNIC"]
    assert nic["provisioningState"] == "Succeeded" and nic["macAddress"].startswith("00-0D-3A-")
    cfg = nic["ipConfigurations"][0]
    assert cfg["privateIPAddress"] == "10.40.1.4" and cfg["privateIPAllocationMethod"] == "Dynamic"
    assert cfg["subnet"]["id"].endswith("/virtualNetworks/vnet1/subnets/s1")
    assert cfg["publicIPAddress"]["id"] == pip["id"]
    static = kumo.az("network", "nic", "create", "-g", rg, "-n", "nic2", "-l", "local", "--vnet-name", "vnet1",
                     "--subnet", "s1", "--private-ip-address", "10.40.1.50")["NewNIC"]
    assert static["ipConfigurations"][0]["privateIPAllocationMethod"] == "Static"
    assert static["ipConfigurations"][0]["privateIPAddress"] == "10.40.1.50"
    az_error(kumo, "PrivateIPAddressInUse", "network", "nic", "create", "-g", rg, "-n", "nic3", "-l", "local",
             "--vnet-name", "vnet1", "--subnet", "s1", "--private-ip-address", "10.40.1.50")

    shown = kumo.az("network", "nic", "show", "-g", rg, "-n", "nic1")
    assert shown["id"] == nic["id"] and shown["macAddress"] == nic["macAddress"]
    assert sorted(n["name"] for n in kumo.az("network", "nic", "list", "-g", rg)) == ["nic1", "nic2"]
    assert nic["id"] in {n.id for n in nc.network_interfaces.list_all()}
    # references Azure keeps: the public IP names its user, the subnet its IP configurations
    assert nc.public_ip_addresses.get(rg, "pip1").ip_configuration.id == cfg["id"]
    assert ids(nc.subnets.get(rg, "vnet1", "s1").ip_configurations) == {
        cfg["id"].lower(), static["ipConfigurations"][0]["id"].lower()}

    updated = kumo.az("network", "nic", "update", "-g", rg, "-n", "nic1", "--ip-forwarding", "true",
                      "--set", "tags.tier=web")
    assert updated["enableIPForwarding"] is True and updated["tags"] == {"tier": "web"}
    assert updated["ipConfigurations"][0]["privateIPAddress"] == "10.40.1.4"
    assert updated["macAddress"] == nic["macAddress"] and updated["provisioningState"] == "Succeeded"

    az_error(kumo, "PublicIPAddressCannotBeDeleted", "network", "public-ip", "delete", "-g", rg, "-n", "pip1")
    kumo.az("network", "nic", "delete", "-g", rg, "-n", "nic1")
    assert [n.name for n in nc.network_interfaces.list(rg)] == ["nic2"]
    sdk_error("ResourceNotFound", lambda: nc.network_interfaces.get(rg, "nic1"), 404)
    kumo.az("network", "public-ip", "delete", "-g", rg, "-n", "pip1")
    assert list(nc.public_ip_addresses.list(rg)) == []


def test_sdk_public_ips(kumo: KumoServer, network_client, rg: str) -> None:
    nc = network_client
    pool = public_pool(kumo)
    label = unique("lbl")

    def pip(sku: str = "Standard", method: str = "Static", **props: Any) -> dict[str, Any]:
        return {"location": "local", "sku": {"name": sku},
                "properties": {"publicIPAllocationMethod": method, **props}}

    one = nc.public_ip_addresses.begin_create_or_update(rg, "pip1", pip(
        dnsSettings={"domainNameLabel": label})).result()
    assert one.provisioning_state == "Succeeded" and ipaddress.IPv4Address(one.ip_address) in pool
    assert one.dns_settings.fqdn == f"{label}.local.cloudapp.azure.com" and one.resource_guid
    # a DNS label is one per region: taken, then free again once its owner lets it go
    sdk_error("DnsRecordInUse", lambda: nc.public_ip_addresses.begin_create_or_update(
        rg, "pip2", pip(dnsSettings={"domainNameLabel": label})))
    nc.public_ip_addresses.begin_create_or_update(rg, "pip1", pip(idleTimeoutInMinutes=20)).result()
    two = nc.public_ip_addresses.begin_create_or_update(rg, "pip2", pip(
        dnsSettings={"domainNameLabel": label})).result()
    assert two.dns_settings.fqdn == f"{label}.local.cloudapp.azure.com"
    assert two.ip_address != one.ip_address and ipaddress.IPv4Address(two.ip_address) in pool
    again = nc.public_ip_addresses.get(rg, "pip1")
    assert again.ip_address == one.ip_address and again.idle_timeout_in_minutes == 20 and again.dns_settings is None

    # Basic + Dynamic has an address only while a NIC uses it (as in Azure)
    basic = nc.public_ip_addresses.begin_create_or_update(rg, "basic", pip("Basic", "Dynamic")).result()
    assert basic.ip_address is None and basic.public_ip_allocation_method == "Dynamic"
    sdk_error("StandardSkuPublicIPAddressesMustBeStatic", lambda: nc.public_ip_addresses.begin_create_or_update(
        rg, "bad", pip(method="Dynamic")))
    sdk_error("PublicIPAddressInvalidIdleTimeout", lambda: nc.public_ip_addresses.begin_create_or_update(
        rg, "bad", pip(idleTimeoutInMinutes=60)))
    sdk_error("InvalidDomainNameLabel", lambda: nc.public_ip_addresses.begin_create_or_update(
        rg, "bad", pip(dnsSettings={"domainNameLabel": "Not_Valid"})))

    vnet = nc.virtual_networks.begin_create_or_update(rg, "vnet1", {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.50.0.0/16"]},
                                            "subnets": [{"name": "s1", **subnet_body("10.50.0.0/24")}]}}).result()
    subnet_id = f"{vnet.id}/subnets/s1"

    def nic_with(pip_id: str) -> dict[str, Any]:
        return {"location": "local", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
            "subnet": {"id": subnet_id}, "publicIPAddress": {"id": pip_id}}}]}}

    nic = nc.network_interfaces.begin_create_or_update(rg, "nic1", nic_with(basic.id)).result()
    assert nic.ip_configurations[0].public_ip_address.id == basic.id
    basic = nc.public_ip_addresses.get(rg, "basic")
    assert ipaddress.IPv4Address(basic.ip_address) in pool
    assert basic.ip_configuration.id.lower() == nic.ip_configurations[0].id.lower()
    sdk_error("PublicIPAddressInUse", lambda: nc.network_interfaces.begin_create_or_update(
        rg, "nic2", nic_with(basic.id)))
    sdk_error("PublicIPAddressCannotBeDeleted", lambda: nc.public_ip_addresses.begin_delete(rg, "basic").result())
    # moving the NIC to another public IP lets the first one go (and its dynamic address)
    nc.network_interfaces.begin_create_or_update(rg, "nic1", nic_with(two.id)).result()
    basic = nc.public_ip_addresses.get(rg, "basic")
    assert basic.ip_configuration is None and basic.ip_address is None
    assert nc.public_ip_addresses.get(rg, "pip2").ip_configuration.id.lower() == nic.ip_configurations[0].id.lower()
    nc.public_ip_addresses.begin_delete(rg, "basic").result()

    assert nc.public_ip_addresses.update_tags(rg, "pip2", {"tags": {"k": "v"}}).tags == {"k": "v"}
    assert sorted(p.name for p in nc.public_ip_addresses.list(rg)) == ["pip1", "pip2"]
    assert {one.id, two.id} <= {p.id for p in nc.public_ip_addresses.list_all()}
    nc.network_interfaces.begin_delete(rg, "nic1").result()
    assert nc.public_ip_addresses.get(rg, "pip2").ip_configuration is None
    nc.public_ip_addresses.begin_delete(rg, "pip2").result()
    sdk_error("ResourceNotFound", lambda: nc.public_ip_addresses.get(rg, "pip2"), 404)


# -- network security groups and rules -----------------------------------------------------------

DEFAULTS = {("AllowVnetInBound", "Inbound", 65000, "Allow"), ("AllowAzureLoadBalancerInBound", "Inbound", 65001,
                                                              "Allow"),
            ("DenyAllInBound", "Inbound", 65500, "Deny"), ("AllowVnetOutBound", "Outbound", 65000, "Allow"),
            ("AllowInternetOutBound", "Outbound", 65001, "Allow"), ("DenyAllOutBound", "Outbound", 65500, "Deny")}


@pytest.mark.slow  # the az CLI takes about a second a call
def test_az_nsg_and_rules_lifecycle(kumo: KumoServer, network_client, rg: str) -> None:
    nc = network_client
    nsg = kumo.az("network", "nsg", "create", "-g", rg, "-n", "nsg1", "-l", "local", "--tags", "a=1")["NewNSG"]
    assert nsg["provisioningState"] == "Succeeded" and nsg["securityRules"] == [] and nsg["tags"] == {"a": "1"}
    assert {(r["name"], r["direction"], r["priority"], r["access"]) for r in nsg["defaultSecurityRules"]} == DEFAULTS
    assert all(r["id"] == f"{nsg['id']}/defaultSecurityRules/{r['name']}" for r in nsg["defaultSecurityRules"])
    assert kumo.az("network", "nsg", "show", "-g", rg, "-n", "nsg1")["id"] == nsg["id"]
    assert [n["name"] for n in kumo.az("network", "nsg", "list", "-g", rg)] == ["nsg1"]
    assert nsg["id"] in {n.id for n in nc.network_security_groups.list_all()}

    rule_args = ("network", "nsg", "rule", "create", "-g", rg, "--nsg-name", "nsg1", "--access", "Allow",
                 "--protocol", "Tcp", "--direction", "Inbound")
    ssh = kumo.az(*rule_args, "-n", "ssh", "--priority", "100", "--destination-port-ranges", "22")
    assert ssh["provisioningState"] == "Succeeded" and ssh["priority"] == 100
    assert ssh["destinationPortRange"] == "22" and ssh["id"] == f"{nsg['id']}/securityRules/ssh"
    web = kumo.az(*rule_args, "-n", "web", "--priority", "110", "--destination-port-ranges", "80", "443",
                  "--source-address-prefixes", "10.0.0.0/8")
    assert sorted(web["destinationPortRanges"]) == ["443", "80"] and web["sourceAddressPrefix"] == "10.0.0.0/8"
    az_error(kumo, "SecurityRuleConflict", *rule_args, "-n", "dup", "--priority", "100",
             "--destination-port-ranges", "23")

    shown = kumo.az("network", "nsg", "rule", "show", "-g", rg, "--nsg-name", "nsg1", "-n", "ssh")
    assert shown["id"] == ssh["id"] and shown["access"] == "Allow"
    listed = kumo.az("network", "nsg", "rule", "list", "-g", rg, "--nsg-name", "nsg1", "--include-default")
    assert sorted(r["name"] for r in listed) == sorted(["ssh", "web", *(d[0] for d in DEFAULTS)])
    updated = kumo.az("network", "nsg", "rule", "update", "-g", rg, "--nsg-name", "nsg1", "-n", "ssh",
                      "--priority", "200", "--access", "Deny")
    assert (updated["priority"], updated["access"], updated["provisioningState"]) == (200, "Deny", "Succeeded")
    kumo.az("network", "nsg", "rule", "delete", "-g", rg, "--nsg-name", "nsg1", "-n", "web")
    sdk_error("ResourceNotFound", lambda: nc.security_rules.get(rg, "nsg1", "web"), 404)
    rules = kumo.az("network", "nsg", "rule", "list", "-g", rg, "--nsg-name", "nsg1")
    assert [(r["name"], r["priority"]) for r in rules] == [("ssh", 200)]

    # a subnet uses it: the NSG points back at the subnet and cannot be deleted until it lets go
    kumo.az("network", "vnet", "create", "-g", rg, "-n", "vnet1", "-l", "local", "--address-prefixes",
            "10.60.0.0/16", "--subnet-name", "s1", "--subnet-prefixes", "10.60.0.0/24")
    subnet = kumo.az("network", "vnet", "subnet", "update", "-g", rg, "--vnet-name", "vnet1", "-n", "s1",
                     "--network-security-group", "nsg1")
    assert subnet["networkSecurityGroup"]["id"].lower() == nsg["id"].lower()
    assert ids(nc.network_security_groups.get(rg, "nsg1").subnets) == {subnet["id"].lower()}
    az_error(kumo, "InUseNetworkSecurityGroupCannotBeDeleted", "network", "nsg", "delete", "-g", rg, "-n", "nsg1")
    kumo.az("network", "vnet", "subnet", "update", "-g", rg, "--vnet-name", "vnet1", "-n", "s1",
            "--network-security-group", "null")  # the CLI's documented way to detach
    assert not nc.network_security_groups.get(rg, "nsg1").subnets
    kumo.az("network", "nsg", "delete", "-g", rg, "-n", "nsg1")
    assert list(nc.network_security_groups.list(rg)) == []
    sdk_error("ResourceNotFound", lambda: nc.network_security_groups.get(rg, "nsg1"), 404)


def test_sdk_nsg_rules_inline_and_child(network_client, rg: str) -> None:
    nc = network_client
    nsg = nc.network_security_groups.begin_create_or_update(rg, "nsg1", {
        "location": "local", "properties": {"securityRules": [{"name": "ssh", **rule_body(100)},
                                                              {"name": "dns", **rule_body(100, "53", "Outbound")}]}}
    ).result()
    assert nsg.provisioning_state == "Succeeded" and nsg.resource_guid
    assert {(r.name, r.direction, r.priority, r.access) for r in nsg.default_security_rules} == DEFAULTS
    assert sorted(r.name for r in nsg.security_rules) == ["dns", "ssh"]
    assert {r.name for r in nc.default_security_rules.list(rg, "nsg1")} == {d[0] for d in DEFAULTS}
    assert nc.default_security_rules.get(rg, "nsg1", "DenyAllInBound").priority == 65500

    # inline rules are child resources, and child rules appear inline
    assert nc.security_rules.get(rg, "nsg1", "ssh").destination_port_range == "22"
    http = nc.security_rules.begin_create_or_update(rg, "nsg1", "http", rule_body(110, "80")).result()
    assert http.provisioning_state == "Succeeded" and http.protocol == "Tcp"
    assert sorted(r.name for r in nc.network_security_groups.get(rg, "nsg1").security_rules) == ["dns", "http",
                                                                                                 "ssh"]
    assert sorted(r.name for r in nc.security_rules.list(rg, "nsg1")) == ["dns", "http", "ssh"]
    changed = nc.security_rules.begin_create_or_update(rg, "nsg1", "http", rule_body(120, "8080")).result()
    assert (changed.priority, changed.destination_port_range) == (120, "8080")
    assert {r.name: r.priority for r in nc.network_security_groups.get(rg, "nsg1").security_rules}["http"] == 120

    sdk_error("SecurityRuleConflict", lambda: nc.security_rules.begin_create_or_update(
        rg, "nsg1", "dup", rule_body(120, "81")))
    sdk_error("SecurityRuleConflict", lambda: nc.network_security_groups.begin_create_or_update(rg, "nsg2", {
        "location": "local", "properties": {"securityRules": [{"name": "a", **rule_body(300)},
                                                              {"name": "b", **rule_body(300, "80")}]}}))
    sdk_error("SecurityRuleInvalidPriority", lambda: nc.security_rules.begin_create_or_update(
        rg, "nsg1", "low", rule_body(50)))
    sdk_error("SecurityRuleInvalidPriority", lambda: nc.security_rules.begin_create_or_update(
        rg, "nsg1", "high", rule_body(4097)))
    sdk_error("SecurityRuleInvalidPortRange", lambda: nc.security_rules.begin_create_or_update(
        rg, "nsg1", "port", rule_body(400, "70000")))

    nc.security_rules.begin_delete(rg, "nsg1", "ssh").result()
    assert sorted(r.name for r in nc.network_security_groups.get(rg, "nsg1").security_rules) == ["dns", "http"]
    sdk_error("ResourceNotFound", lambda: nc.security_rules.get(rg, "nsg1", "ssh"), 404)

    # an NSG PUT replaces the rule set; tags by PATCH; list by group and subscription
    nc.network_security_groups.begin_create_or_update(rg, "nsg1", {
        "location": "local", "properties": {"securityRules": [{"name": "rdp", **rule_body(100, "3389")}]}}).result()
    assert [r.name for r in nc.security_rules.list(rg, "nsg1")] == ["rdp"]
    assert nc.network_security_groups.update_tags(rg, "nsg1", {"tags": {"x": "y"}}).tags == {"x": "y"}
    assert [n.name for n in nc.network_security_groups.list(rg)] == ["nsg1"]
    assert nsg.id in {n.id for n in nc.network_security_groups.list_all()}

    # back-references through the SDK: a subnet (child PUT) and a NIC use the NSG
    vnet = nc.virtual_networks.begin_create_or_update(rg, "vnet1", {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.70.0.0/16"]}}}).result()
    subnet = nc.subnets.begin_create_or_update(rg, "vnet1", "s1", subnet_body(
        "10.70.1.0/24", networkSecurityGroup={"id": nsg.id})).result()
    assert subnet.network_security_group.id.lower() == nsg.id.lower()
    nic = nc.network_interfaces.begin_create_or_update(rg, "nic1", nic_body(
        f"{vnet.id}/subnets/s1", networkSecurityGroup={"id": nsg.id})).result()
    used = nc.network_security_groups.get(rg, "nsg1")
    assert ids(used.subnets) == {subnet.id.lower()} and ids(used.network_interfaces) == {nic.id.lower()}
    # a rule change keeps the references
    nc.security_rules.begin_create_or_update(rg, "nsg1", "web", rule_body(130, "443")).result()
    assert ids(nc.network_security_groups.get(rg, "nsg1").subnets) == {subnet.id.lower()}
    sdk_error("InUseNetworkSecurityGroupCannotBeDeleted",
              lambda: nc.network_security_groups.begin_delete(rg, "nsg1").result())
    sdk_error("InvalidResourceReference", lambda: nc.subnets.begin_create_or_update(rg, "vnet1", "s2", subnet_body(
        "10.70.2.0/24", networkSecurityGroup={"id": nsg.id.replace("nsg1", "missing")})))

    # users let go one by one: the back-references follow, then the NSG can go
    nc.network_interfaces.begin_create_or_update(rg, "nic1", nic_body(f"{vnet.id}/subnets/s1")).result()
    used = nc.network_security_groups.get(rg, "nsg1")
    assert not used.network_interfaces and ids(used.subnets) == {subnet.id.lower()}
    sdk_error("InUseNetworkSecurityGroupCannotBeDeleted",
              lambda: nc.network_security_groups.begin_delete(rg, "nsg1").result())
    nc.subnets.begin_create_or_update(rg, "vnet1", "s1", subnet_body("10.70.1.0/24")).result()
    assert not nc.network_security_groups.get(rg, "nsg1").subnets
    nc.network_security_groups.begin_delete(rg, "nsg1").result()
    sdk_error("ResourceNotFound", lambda: nc.security_rules.get(rg, "nsg1", "web"), 404)
