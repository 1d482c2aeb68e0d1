"""The shape every resource type follows, and the registry the router looks types up in.

A resource type says four things (in this order in each module): its ARM type, how a request body
becomes the stored body (defaults, read-only fields dropped, enums canonicalised), validation with
Azure's error codes, and the GET shape; plus the actions it supports and, for types with real
effects, `realise`/`remove` that drive the host through drivers. The generic lifecycle in
`lifecycle.py` does the rest (store, LRO, events) identically for all of them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.responses import Response

from kumo.arm.errors import bad_request
from kumo.arm.ids import ResourceId
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

Action = Callable[["RequestContext", Resource], Awaitable[Response]]

# Names ARM refuses for any resource: reserved URL characters, trailing dot or space.
GENERIC_NAME = re.compile(r"^[^<>%&:\\?/#*\x00-\x1f]{1,260}(?<![. ])$")


class ResourceType:
    """Base class of a resource type's module. Override what differs; keep the order."""

    namespace: ClassVar[str]
    type_path: ClassVar[tuple[str, ...]]  # ("virtualNetworks",) or ("virtualNetworks", "subnets")
    api_versions: ClassVar[tuple[str, ...]]
    long_running: ClassVar[bool] = True  # PUT/DELETE answered as LROs (201/202 + Azure-AsyncOperation)
    created_status: ClassVar[int] = 201  # a new resource's PUT (DiskRP answers 202, and its clients want that)
    tracked: ClassVar[bool] = True  # has location and tags (child resources do not)
    name_pattern: ClassVar[re.Pattern[str]] = GENERIC_NAME
    name_rule: ClassVar[str] = "The name must not contain <>%&:\\?/#* or control characters, nor end in '.' or ' '."

    @property
    def type(self) -> str:
        return "/".join((self.namespace, *self.type_path))

    @property
    def key(self) -> str:
        return self.type.lower()

    # 1. normalise: request body -> the body to store (without id/name/type/location/tags: the
    #    lifecycle adds those). Raise ArmError for invalid input.
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = body.get("properties")
        if props is not None and not isinstance(props, dict):
            raise bad_request("InvalidRequestContent", "'properties' must be a JSON object.", "properties")
        return {"properties": dict(props or {})}

    # 2. validate against other resources (references exist, no conflicts). Runs before any write.
    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        return None

    # 2b. inside the PUT's own write transaction, after validation: allocate what the resource holds
    #     (IP addresses) and keep other resources' references to it in sync. May change
    #     `resource.body`; an ArmError here rolls the whole write back.
    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        return None

    # 2c. DELETE: refuse while something still uses the resource (checked before anything changes),
    #     and drop references to it in the transaction that removes its row.
    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        return None

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        return None

    # 3. GET shape (the stored body is already the REST shape; override to add live data).
    def view(self, resource: Resource) -> dict[str, Any]:
        return resource.body

    # GET with `$expand=…` (a VM's instanceView): the view plus what was asked for
    def expanded_view(self, resource: Resource, expand: str) -> dict[str, Any]:
        return self.view(resource)

    # 4. host effects, run by the reconcile/delete operations. Idempotent: they may run again
    #    after a crash. Types without host effects keep these no-ops.
    async def realise(self, services: "Services", resource: Resource) -> None:
        return None

    async def remove(self, services: "Services", resource: Resource) -> None:
        return None

    # after the row is gone: bring what depended on it (a parent's host objects) up to date
    async def removed(self, services: "Services", resource: Resource) -> None:
        return None

    # a collection under a parent whose rows are not simply its children of this type (a scale set's
    # instances are VM rows): the rows to list, or None for the generic listing
    async def list_rows(self, services: "Services", parent: ResourceId) -> list[Resource] | None:
        return None

    actions: ClassVar[dict[str, str]] = {}  # lower-case action name -> method name on the class
    unbound_actions: ClassVar[frozenset[str]] = frozenset()  # actions that may run before the resource
    # exists: their method gets the ResourceId instead of the Resource
    read_only: ClassVar[bool] = False  # rows written by kumo itself (e.g. deployment operations): GET only
    # POST /subscriptions/{s}/providers/{namespace}/{action} (e.g. checkNameAvailability): lower-case
    # action name -> method name; the method gets (ctx, subscription id)
    provider_actions: ClassVar[dict[str, str]] = {}


ProviderRead = Callable[["RequestContext", str], Awaitable[Response]]


class ProviderReads:
    """Read-only views a namespace serves under `/subscriptions/{s}/providers/{namespace}/…` that are
    no resource (`…/skus`, `…/locations/{loc}/vmSizes`, the image marketplace). `match` gets the path
    after the namespace and returns the RBAC action it needs with the handler (which gets the
    context and the subscription id), or None when the path is not its own."""

    namespace: ClassVar[str]
    types: ClassVar[tuple["TypeInfo", ...]] = ()  # what `/providers` lists for these views

    def match(self, rest: tuple[str, ...]) -> tuple[str, ProviderRead] | None:
        return None


def match_path(rest: tuple[str, ...], pattern: tuple[str, ...]) -> tuple[str, ...] | None:
    """`rest` against a pattern of lower-case literals and `*` (one segment each), ignoring case;
    the segments the stars matched, as given, or None."""
    if len(rest) != len(pattern):
        return None
    captured = []
    for seg, pat in zip(rest, pattern, strict=True):
        if pat == "*":
            captured.append(seg)
        elif seg.lower() != pat:
            return None
    return tuple(captured)


@dataclass
class TypeInfo:
    """A resource type as `/providers` lists it; `handler` is None for types served elsewhere
    (resourceGroups, subscriptions, locations, operations)."""

    resource_type: str
    api_versions: tuple[str, ...]
    handler: ResourceType | None = None


@dataclass
class Namespace:
    name: str
    types: list[TypeInfo] = field(default_factory=list)
    reads: list[ProviderReads] = field(default_factory=list)


class ProviderRegistry:
    def __init__(self) -> None:
        self.namespaces: dict[str, Namespace] = {}
        self._types: dict[str, ResourceType] = {}

    def add_namespace(self, name: str, *extra_types: TypeInfo) -> Namespace:
        ns = self.namespaces.setdefault(name.lower(), Namespace(name))
        ns.types.extend(extra_types)
        return ns

    def add(self, handler: ResourceType) -> None:
        ns = self.add_namespace(handler.namespace)
        ns.types.append(TypeInfo("/".join(handler.type_path), handler.api_versions, handler))
        self._types[handler.key] = handler

    def add_reads(self, reads: ProviderReads) -> None:
        ns = self.add_namespace(reads.namespace, *reads.types)
        ns.reads.append(reads)

    def provider_read(self, namespace: str, rest: tuple[str, ...]) -> tuple[str, ProviderRead] | None:
        ns = self.namespace(namespace)
        for reads in ns.reads if ns else ():
            if found := reads.match(rest):
                return found
        return None

    def namespace(self, name: str) -> Namespace | None:
        return self.namespaces.get(name.lower())

    def handler(self, type_key: str) -> ResourceType | None:
        return self._types.get(type_key.lower())

    def handlers(self) -> list[ResourceType]:
        return list(self._types.values())
