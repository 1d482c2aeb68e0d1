"""Addresses a network resource holds: a private IP in a subnet (Azure's allocation rules) and a
public IP linked to the configuration that uses it. Shared by NIC ip configurations and load
balancer frontends; both run inside the PUT's own write transaction."""

from __future__ import annotations

import ipaddress
from typing import Any

from kumo.arm.errors import bad_request
from kumo.providers.network.common import ref
from kumo.providers.network.public_ips import allocate_address, release_address
from kumo.store import Tx


def usable_range(net: ipaddress.IPv4Network) -> tuple[int, int]:
    """Azure reserves the network address, .1 (gateway), .2 and .3 (DNS) and the broadcast address."""
    return int(net.network_address) + 4, int(net.broadcast_address) - 1


async def allocate_private(tx: Tx, cfg: dict[str, Any], previous: str | None) -> None:
    """Give an IP configuration its address in its subnet, by Azure's rules."""
    props = cfg["properties"]
    subnet_id = props["subnet"]["id"]
    subnet = await tx.get_resource(subnet_id.lower())
    if subnet is None:
        raise bad_request("InvalidResourceReference", f"Resource {subnet_id} referenced by resource {cfg['id']} was "
                          "not found. Please make sure that the referenced resource exists, and that both resources "
                          "are in the same region.")
    net = ipaddress.IPv4Network(subnet.body["properties"]["addressPrefix"])
    first, last = usable_range(net)
    pool, owner = subnet.key, cfg["id"]
    if props["privateIPAllocationMethod"] == "Static":
        value = int(ipaddress.IPv4Address(props["privateIPAddress"]))
        if value not in range(int(net.network_address), int(net.broadcast_address) + 1):
            raise bad_request("PrivateIPAddressNotInSubnet", f"IP configuration {cfg['id']} is referencing private "
                              f"IP address {props['privateIPAddress']} which does not belong to subnet {subnet_id} "
                              f"(address prefix {net}).")
        if not first <= value <= last:
            raise bad_request("PrivateIPAddressInReservedRange", f"Private static IP address "
                              f"{props['privateIPAddress']} falls within reserved IP range of subnet prefix {net}.")
        if not await tx.claim(pool, value, owner):
            holder = (await tx.allocated(pool))[value]
            raise bad_request("PrivateIPAddressInUse", f"IP configuration {cfg['id']} is using the private IP address "
                              f"{props['privateIPAddress']} which is already allocated to resource {holder}.")
        return
    if previous is not None:
        value = int(ipaddress.IPv4Address(previous))
        if first <= value <= last and await tx.claim(pool, value, owner):
            props["privateIPAddress"] = previous
            return
    taken = await tx.allocated(pool)
    for value in range(first, last + 1):
        if value not in taken and await tx.claim(pool, value, owner):
            props["privateIPAddress"] = str(ipaddress.IPv4Address(value))
            return
    raise bad_request("SubnetIsFull", f"Subnet {subnet.name} with address prefix {net} does not have enough "
                      "capacity for 1 IP addresses.")


async def link_public_ip(tx: Tx, pool: ipaddress.IPv4Network, cfg: dict[str, Any], old_pip: str | None,
                          new_pip: str | None) -> None:
    if old_pip and (not new_pip or old_pip.lower() != new_pip.lower()):
        pip = await tx.get_resource(old_pip.lower())
        if pip is not None:
            pip.body["properties"].pop("ipConfiguration", None)
            if pip.body["properties"]["publicIPAllocationMethod"] == "Dynamic":
                await release_address(tx, pip)
            await tx.put_resource(pip)
    if new_pip:
        pip = await tx.get_resource(new_pip.lower())
        if pip is None:
            raise bad_request("InvalidResourceReference", f"Resource {new_pip} referenced by resource {cfg['id']} was "
                              "not found. Please make sure that the referenced resource exists, and that both "
                              "resources are in the same region.")
        user = pip.body["properties"].get("ipConfiguration")
        if user and user["id"].lower() != cfg["id"].lower():
            raise bad_request("PublicIPAddressInUse", f"Resource {cfg['id']} is referencing public IP address "
                              f"{pip.id} that is already allocated to resource {user['id']}.")
        pip.body["properties"]["ipConfiguration"] = ref(cfg["id"])
        if "ipAddress" not in pip.body["properties"]:
            pip.body["properties"]["ipAddress"] = await allocate_address(tx, pool, pip.id)
        await tx.put_resource(pip)
