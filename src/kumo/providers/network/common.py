"""What every Microsoft.Network type shares: api-versions, etags and resource GUIDs, sub-resource
references (`{"id": ...}`), address parsing with Azure's error codes, and inline child lists kept in
sync with their child resources (a VNet's `subnets`, an NSG's `securityRules`)."""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any, ClassVar

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId, parse_resource_id
from kumo.providers.base import ResourceType
from kumo.store import Resource, Tx

NAMESPACE = "Microsoft.Network"
API_VERSIONS = ("2024-05-01", "2024-03-01", "2023-11-01", "2023-09-01", "2023-05-01", "2022-01-01",
                "2021-02-01", "2020-11-01", "2019-09-01", "2018-11-01", "2017-10-01", "2015-06-15")
# Azure's rule for network resource names: 1-80 characters, starting with a letter or digit, ending
# with a letter, digit or '_', with letters, digits, '_', '.' and '-' in between.
NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")
NAME_RULE = ("The name must begin with a letter or number, end with a letter, number or underscore, and may "
             "contain only letters, numbers, underscores, periods, or hyphens (1-80 characters).")


def new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


class NetworkType(ResourceType):
    """Base of every Microsoft.Network type: naming, api-versions, an etag per write and a resourceGuid."""

    namespace = NAMESPACE
    api_versions = API_VERSIONS
    name_pattern = NAME
    name_rule = NAME_RULE
    guid: ClassVar[bool] = True  # top-level network resources carry properties.resourceGuid

    def stamp(self, resource: Resource, existing: Resource | None) -> None:
        resource.body["etag"] = new_etag()
        if self.guid:
            old = (existing.body.get("properties") or {}).get("resourceGuid") if existing else None
            resource.body["properties"]["resourceGuid"] = old or str(uuid.uuid4())

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        self.stamp(resource, existing)


# -- values in request bodies ----------------------------------------------------------------

def props_of(body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties")
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise bad_request("InvalidRequestFormat", "'properties' must be a JSON object.", "properties")
    return props


def reference(value: Any, field: str, *, expect_type: str | None = None) -> ResourceId | None:
    """A sub-resource reference `{"id": "/subscriptions/..."}`; None when absent."""
    if value is None:
        return None
    rid = parse_resource_id(value.get("id", "")) if isinstance(value, dict) and isinstance(value.get("id"), str) \
        else None
    if rid is None or (expect_type and rid.type_key != expect_type.lower()):
        what = f" of type {expect_type}" if expect_type else ""
        raise bad_request("InvalidRequestFormat", f"'{field}' must be an object with the 'id' of a resource{what}.",
                          field)
    return rid


def ref(rid: ResourceId | str) -> dict[str, str]:
    return {"id": str(rid)}


def ipv4_network(text: Any, field: str, owner: str) -> ipaddress.IPv4Network:
    """A CIDR prefix, with Azure's InvalidCIDRNotation when host bits are set."""
    if not isinstance(text, str):
        raise bad_request("InvalidRequestFormat", f"'{field}' must be a string in CIDR notation.", field)
    try:
        loose = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise bad_request("InvalidAddressPrefixFormat",
                          f"Address prefix {text} of resource {owner} is not formatted correctly. It should "
                          "follow CIDR notation, for example 10.0.0.0/24.", field) from None
    if not isinstance(loose, ipaddress.IPv4Network):
        raise bad_request("InvalidAddressPrefixFormat", f"Address prefix {text} of resource {owner} is IPv6; "
                          "kumo supports IPv4 address spaces.", field)
    if str(loose) != text.strip() and "/" in text:
        raise bad_request("InvalidCIDRNotation",
                          f"The address prefix {text} in resource {owner} has an invalid CIDR notation. For the "
                          f"given prefix length, the address prefix should be {loose}.", field)
    return loose


def ipv4_address(text: Any, field: str) -> ipaddress.IPv4Address:
    try:
        addr = ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise bad_request("InvalidRequestFormat", f"'{field}' value '{text}' is not a valid IPv4 address.",
                          field) from None
    if not isinstance(addr, ipaddress.IPv4Address):
        raise bad_request("InvalidRequestFormat", f"'{field}' value '{text}' is not an IPv4 address.", field)
    return addr


def canonical(value: Any, allowed: tuple[str, ...], field: str, default: str | None = None) -> str:
    """An enum value in Azure's own spelling, matched case-insensitively."""
    if value is None or value == "":
        if default is None:
            raise bad_request("InvalidRequestFormat", f"'{field}' is required: one of {', '.join(allowed)}.",
                              field)
        return default
    for a in allowed:
        if str(value).lower() == a.lower():
            return a
    raise bad_request("InvalidRequestFormat",
                      f"'{field}' value '{value}' is not valid. Allowed values: {', '.join(allowed)}.", field)


# -- inline child lists ----------------------------------------------------------------------

def child_entry(parent_id: str, collection: str, child_type: str, name: str, props: dict[str, Any],
                etag: str, state: str = "Succeeded") -> dict[str, Any]:
    return {"name": name, "id": f"{parent_id}/{collection}/{name}", "etag": etag, "type": child_type,
            "properties": {"provisioningState": state, **props}}


class InlineChildren:
    """A parent's `properties.<collection>` list that mirrors child resource rows one to one.

    The parent's PUT replaces the rows; a child's PUT or DELETE rewrites the parent's list. Both
    happen in the writer's transaction, so the two views never disagree."""

    def __init__(self, collection: str, child_type: str) -> None:
        self.collection = collection  # "subnets"
        self.child_type = child_type  # "Microsoft.Network/virtualNetworks/subnets"

    def child_key(self, parent: Resource, name: str) -> str:
        return f"{parent.key}/{self.collection.lower()}/{name.lower()}"

    async def rows(self, tx: Tx, parent: Resource) -> list[Resource]:
        return await tx.list_resources(parent.subscription_id, parent_key=parent.key, type=self.child_type)

    async def write_rows(self, tx: Tx, parent: Resource, entries: list[dict[str, Any]]) -> list[Resource]:
        """Make the child rows match `entries` (from the parent's body); returns the rows removed."""
        wanted = {e["name"].lower(): e for e in entries}
        removed = []
        for row in await self.rows(tx, parent):
            if row.name.lower() not in wanted:
                await tx.delete_resource(row.key)
                removed.append(row)
        for entry in entries:
            key = self.child_key(parent, entry["name"])
            old = await tx.get_resource(key)
            await tx.put_resource(Resource(
                key=key, id=entry["id"], subscription_id=parent.subscription_id,
                resource_group=parent.resource_group, type=self.child_type.lower(), name=entry["name"],
                body=entry, provisioning_state="Succeeded", parent_key=parent.key,
                desired_gen=(old.desired_gen + 1) if old else 1, observed_gen=(old.desired_gen + 1) if old else 1,
                created_at=old.created_at if old else 0.0))
        return removed

    async def write_parent(self, tx: Tx, parent_key: str, child: Resource | None, *, drop: str | None = None) -> None:
        """Put `child`'s body into (or `drop` a name from) the parent's inline list. The inline copy
        shows the child provisioned, as Azure's does, whatever the child row's own state."""
        parent = await tx.get_resource(parent_key)
        if parent is None:
            return
        props = parent.body.setdefault("properties", {})
        items = [e for e in props.get(self.collection) or []
                 if e.get("name", "").lower() not in {(child.name if child else drop or "").lower()}]
        if child is not None:
            items.append({**child.body, "properties": {**child.body.get("properties", {}),
                                                       "provisioningState": "Succeeded"}})
            items.sort(key=lambda e: e.get("name", "").lower())
        props[self.collection] = items
        parent.body["etag"] = new_etag()
        await tx.put_resource(parent)


async def set_backref(tx: Tx, target_key: str, field: str, ref_id: str, present: bool, *, single: bool = False,
                      inline: InlineChildren | None = None) -> None:
    """Add or remove `{"id": ref_id}` in `properties.<field>` of another resource (a subnet's
    `ipConfigurations`, a public IP's `ipConfiguration`, an NSG's `networkInterfaces`)."""
    target = await tx.get_resource(target_key)
    if target is None:
        return
    props = target.body.setdefault("properties", {})
    if single:
        current = props.get(field)
        if present:
            props[field] = ref(ref_id)
        elif current and current.get("id", "").lower() == ref_id.lower():
            props.pop(field)
        else:
            return
    else:
        items = [r for r in props.get(field) or [] if r.get("id", "").lower() != ref_id.lower()]
        if present:
            items.append(ref(ref_id))
        if not items and field not in props:
            return
        props[field] = items
    await tx.put_resource(target)
    if inline is not None and target.parent_key:
        await inline.write_parent(tx, target.parent_key, target)


def in_use_error(code: str, what: str, user: str) -> ArmError:
    return ArmError(400, code, f"{what} is in use by {user} and cannot be deleted. In order to delete it, "
                    "first remove or update the resources that use it.")
