"""Microsoft.Network/publicIPAddresses: addresses from kumo's public pool (loopback by default, so
the host reaches every one on any port). Static addresses are held from creation; dynamic ones
only while a NIC uses them, as in Azure. Traffic to an address is DNATed to the NIC's private IP."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.providers.network.common import NetworkType, canonical, props_of
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

POOL = "public-ip"
LABEL = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")


def fqdn(label: str, location: str) -> str:
    return f"{label}.{location}.cloudapp.azure.com"


async def allocate_address(tx: Tx, pool: ipaddress.IPv4Network, owner: str, previous: str | None = None) -> str:
    """The lowest free address of kumo's public pool (or `previous`, if still free)."""
    taken = await tx.allocated(POOL)
    if previous:
        address = ipaddress.IPv4Address(previous)
        if address in pool and await tx.claim(POOL, int(address), owner):
            return previous
    for host in pool.hosts():
        if int(host) not in taken and await tx.claim(POOL, int(host), owner):
            return str(host)
    raise ArmError(409, "PublicIPCountLimitReached",
                   f"kumo's public IP pool {pool} is exhausted; start kumo with a larger --public-ip-pool.")


async def release_address(tx: Tx, pip: Resource) -> None:
    await tx.release(pip.id, pool=POOL)
    pip.body["properties"].pop("ipAddress", None)


class PublicIPAddresses(NetworkType):
    # 1. the ARM type
    type_path = ("publicIPAddresses",)

    def __init__(self, pool: ipaddress.IPv4Network) -> None:
        self.pool = pool  # kumo's public address pool (Settings.public_ip_pool)

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = props_of(body)
        sku_raw = body.get("sku") or {}
        sku = {"name": canonical(sku_raw.get("name"), ("Basic", "Standard"), "sku.name", "Standard"),
               "tier": canonical(sku_raw.get("tier"), ("Regional", "Global"), "sku.tier", "Regional")}
        method = canonical(props.get("publicIPAllocationMethod"), ("Static", "Dynamic"),
                           "properties.publicIPAllocationMethod", "Static" if sku["name"] == "Standard" else "Dynamic")
        if sku["name"] == "Standard" and method == "Dynamic":
            raise bad_request("StandardSkuPublicIPAddressesMustBeStatic",
                              f"Standard sku publicIp /subscriptions/.../publicIPAddresses/{rid.name} must have "
                              "AllocationMethod set to Static.", "properties.publicIPAllocationMethod")
        version = canonical(props.get("publicIPAddressVersion"), ("IPv4", "IPv6"), "properties.publicIPAddressVersion",
                            "IPv4")
        if version != "IPv4":
            raise bad_request("InvalidRequestFormat", "kumo's public IP pool is IPv4; use publicIPAddressVersion IPv4.",
                              "properties.publicIPAddressVersion")
        idle = props.get("idleTimeoutInMinutes", 4)
        try:
            idle = int(idle)
        except (TypeError, ValueError):
            idle = -1
        if not 4 <= idle <= 30:
            raise bad_request("PublicIPAddressInvalidIdleTimeout",
                              f"The idle timeout {props.get('idleTimeoutInMinutes')} is out of range: allowed "
                              "values are from 4 to 30 minutes.")
        out: dict[str, Any] = {"publicIPAddressVersion": version, "publicIPAllocationMethod": method,
                               "idleTimeoutInMinutes": idle, "ipTags": props.get("ipTags") or []}
        if props.get("deleteOption"):  # what happens to it when the VM using it is deleted
            out["deleteOption"] = canonical(props["deleteOption"], ("Delete", "Detach"), "properties.deleteOption",
                                            "Detach")
        dns = props.get("dnsSettings")
        if isinstance(dns, dict) and dns.get("domainNameLabel"):
            label = str(dns["domainNameLabel"])
            if not LABEL.match(label):
                raise bad_request("InvalidDomainNameLabel",
                                  f"The domain name label {label} is invalid. It must conform to the following regular "
                                  "expression: ^[a-z][a-z0-9-]{1,61}[a-z0-9]$.", "properties.dnsSettings")
            out["dnsSettings"] = {"domainNameLabel": label}
        return {"sku": sku, "properties": out}

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        props = resource.body["properties"]
        old = (existing.body.get("properties") or {}) if existing else {}
        if old.get("ipConfiguration"):
            props["ipConfiguration"] = old["ipConfiguration"]
        if "dnsSettings" in props:
            props["dnsSettings"]["fqdn"] = fqdn(props["dnsSettings"]["domainNameLabel"], resource.location or "")
            await _check_label_free(tx, resource)
        if props["publicIPAllocationMethod"] == "Static" or props.get("ipConfiguration"):
            props["ipAddress"] = await allocate_address(tx, self.pool, resource.id, old.get("ipAddress"))
        else:
            await release_address(tx, resource)

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        user = (resource.body.get("properties") or {}).get("ipConfiguration")
        if user:
            raise bad_request("PublicIPAddressCannotBeDeleted",
                              f"Public IP address {resource.id} can not be deleted since it is still allocated to "
                              f"resource {user['id']}. In order to delete the public IP, disassociate/detach the "
                              "Public IP address from the resource.")

    # 3. host effects: the NIC that uses it re-renders its VNet's DNAT
    async def realise(self, services: "Services", resource: Resource) -> None:
        user = (resource.body.get("properties") or {}).get("ipConfiguration")
        if user:
            await services.network.sync_vnet_of_nic(user["id"].lower().split("/ipconfigurations/")[0])


async def _check_label_free(tx: Tx, pip: Resource) -> None:
    """A DNS label is unique per region, across subscriptions (Azure's DnsRecordInUse)."""
    label = pip.body["properties"]["dnsSettings"]["domainNameLabel"]
    for other_pip in await tx.resources_of_type(pip.type):
        other = (other_pip.body.get("properties") or {}).get("dnsSettings") or {}
        if other_pip.key != pip.key and other_pip.location == pip.location and other.get("domainNameLabel") == label:
            raise bad_request("DnsRecordInUse", f"DNS record {fqdn(label, pip.location or '')} is already used by "
                              f"another public IP.", "properties.dnsSettings.domainNameLabel")
