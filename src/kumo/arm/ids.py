"""ARM resource ids: parsing request paths and building canonical ids, case-insensitively."""

from __future__ import annotations

import re
from dataclasses import dataclass

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class ArmPath:
    """A request path split into ARM's parts. `rest` is what follows `/providers/{namespace}`:
    alternating type and name segments, possibly ending in a collection or an action."""

    subscription: str | None
    resource_group: str | None
    namespace: str | None
    rest: tuple[str, ...]
    # For paths that are not under /providers: e.g. ("resourcegroups",) or ("locations",).
    tail: tuple[str, ...] = ()


def split_path(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def parse(path: str) -> ArmPath | None:
    """Parse `/subscriptions/{s}[/resourceGroups/{rg}][/providers/{ns}/...]` or `/providers/{ns}/...`.
    Returns None for paths that are not ARM resource paths."""
    parts = split_path(path)
    lower = [p.lower() for p in parts]
    subscription = resource_group = namespace = None
    i = 0
    if lower[:1] == ["subscriptions"]:
        if len(parts) < 2:
            return ArmPath(None, None, None, (), tail=())
        subscription = parts[1]
        i = 2
        if lower[i:i + 1] == ["resourcegroups"]:
            if len(parts) == i + 1:
                return ArmPath(subscription, None, None, (), tail=("resourcegroups",))
            resource_group = parts[i + 1]
            i += 2
    if lower[i:i + 1] == ["deployments"] and resource_group is not None:
        # ARM's older path for deployments, without /providers/Microsoft.Resources (az still uses it)
        return ArmPath(subscription, resource_group, "Microsoft.Resources", tuple(parts[i:]))
    if lower[i:i + 1] == ["providers"]:
        if len(parts) == i + 1:
            return ArmPath(subscription, resource_group, None, (), tail=("providers",))
        namespace = parts[i + 1]
        return ArmPath(subscription, resource_group, namespace, tuple(parts[i + 2:]))
    if i == 0:
        return None
    return ArmPath(subscription, resource_group, None, (), tail=tuple(p.lower() for p in parts[i:]))


@dataclass(frozen=True)
class ResourceId:
    """A resource's identity. `types` and `names` pair up: (virtualNetworks, subnets) with (v1, s1)."""

    subscription: str
    resource_group: str | None
    namespace: str
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[-1]

    @property
    def type(self) -> str:
        """`Microsoft.Network/virtualNetworks/subnets`."""
        return "/".join((self.namespace, *self.types))

    @property
    def type_key(self) -> str:
        return self.type.lower()

    @property
    def parent(self) -> "ResourceId | None":
        if len(self.types) < 2:
            return None
        return ResourceId(self.subscription, self.resource_group, self.namespace, self.types[:-1], self.names[:-1])

    def __str__(self) -> str:
        base = f"/subscriptions/{self.subscription}"
        if self.resource_group is not None:
            base += f"/resourceGroups/{self.resource_group}"
        segs = [f"{t}/{n}" for t, n in zip(self.types, self.names, strict=True)]
        return f"{base}/providers/{self.namespace}/" + "/".join(segs)

    @property
    def key(self) -> str:
        """The store key: the id lower-cased, because ARM ids are case-insensitive."""
        return str(self).lower()


def resource_group_id(subscription: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{name}"


def resource_group_key(subscription: str, name: str) -> str:
    return resource_group_id(subscription, name).lower()


@dataclass(frozen=True)
class Extension:
    """`{resource id}/providers/{namespace}/{rest…}`: what another namespace serves about one resource
    (Microsoft.Insights' metrics; locks or diagnostic settings would be others)."""

    scope: ResourceId
    namespace: str
    rest: tuple[str, ...]


def extension(p: ArmPath) -> Extension | None:
    """The extension a parsed path names: a second `/providers/{namespace}` where a type segment would be
    (an even index of `rest`, after whole type/name pairs); None for every other path."""
    if p.subscription is None or p.namespace is None:
        return None
    for i in range(2, len(p.rest) - 1, 2):
        if p.rest[i].lower() == "providers":
            scope = ResourceId(p.subscription, p.resource_group, p.namespace, p.rest[0:i:2], p.rest[1:i:2])
            return Extension(scope, p.rest[i + 1], p.rest[i + 2:])
    return None


def parse_resource_id(text: str) -> ResourceId | None:
    """Parse a full resource id string (as found in request bodies)."""
    p = parse(text)
    if p is None or p.subscription is None or p.namespace is None or not p.rest or len(p.rest) % 2:
        return None
    return ResourceId(p.subscription, p.resource_group, p.namespace, tuple(p.rest[0::2]), tuple(p.rest[1::2]))
