"""Microsoft.Insights/autoscaleSettings: a virtual machine scale set's scaling rules. A control-plane
resource answered synchronously, as Azure does (PUT 201/200, DELETE 200/204; a 202 breaks az). The
body rules are in `autoscale_schema`; the evaluator that acts on them is `kumo.controllers.autoscale`,
which keeps its last scale actions in the body's hidden `kumo` member so cooldowns survive a restart."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId, parse_resource_id
from kumo.providers.base import ResourceType
from kumo.providers.insights import autoscale_schema as schema
from kumo.providers.insights.autoscale_schema import INTERNAL, NAMESPACE
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

TYPE_KEY = "microsoft.insights/autoscalesettings"
API_VERSIONS = ("2022-10-01", "2021-05-01-preview", "2015-04-01")
# Azure's rule for autoscale setting names: 1-260 characters, none of :<>+/&%\?| or control characters,
# not ending in a space or a period.
NAME = re.compile(r"^[^:<>+/&%\\?|\x00-\x1f]{1,260}(?<![ .])$")


def target_of(resource: Resource) -> str:
    return (resource.body.get("properties") or {}).get("targetResourceUri") or ""


class AutoscaleSettings(ResourceType):
    # 1. the ARM type
    namespace = NAMESPACE
    type_path = ("autoscaleSettings",)
    api_versions = API_VERSIONS
    long_running = False
    name_pattern = NAME
    name_rule = "The name can't contain :<>+/&%\\?| or control characters, nor end in a space or a period."

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = body.get("properties")
        if not isinstance(props, dict):
            raise ArmError(400, "UnsupportedRequestContent", "'properties' is required and must be a JSON object "
                           "holding the autoscale setting.", target="properties")
        out: dict[str, Any] = {"properties": schema.normalise(rid.name, props)}
        if existing is not None and existing.body.get(INTERNAL):  # never from the request: kumo's own
            out[INTERNAL] = copy.deepcopy(existing.body[INTERNAL])
        return out

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        target = body["properties"]["targetResourceUri"]
        trid = parse_resource_id(target)
        assert trid is not None  # normalise checked it
        async with services.store.read() as tx:
            existing = await tx.get_resource(rid.key)
            if existing is not None and target_of(existing).lower() != target.lower():
                raise bad_request("TargetResourceIdIsImmutable", f"The autoscale setting '{rid.name}' under resource "
                                  f"group '{rid.resource_group}' is referencing target resource "
                                  f"'{target_of(existing)}'. The target resource reference is immutable. If you want "
                                  "to change it, please create a new autoscale setting with a different name.",
                                  "properties.targetResourceUri")
            if trid.subscription.lower() != rid.subscription.lower() or await tx.get_resource(trid.key) is None:
                raise bad_request("TargetResourceNotFound", f"The target resource id '{target}' was not found in "
                                  f"subscription '{rid.subscription}'.", "properties.targetResourceUri")
            for other in await tx.list_resources(rid.subscription.lower(), type=TYPE_KEY):
                if other.key != rid.key and target_of(other).lower() == target.lower():
                    raise ArmError(409, "Conflict", f"The target resource '{target}' already has the autoscale "
                                   f"setting '{other.id}'; a resource can have only one autoscale setting.",
                                   target="properties.targetResourceUri")

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        # the evaluator may have recorded a scale action since this PUT read the row: keep the newest
        current = await tx.get_resource(resource.key)
        if current is not None and current.body.get(INTERNAL):
            resource.body[INTERNAL] = current.body[INTERNAL]

    # 3. GET shape: Azure's, without kumo's bookkeeping (autoscale settings have no provisioningState)
    def view(self, resource: Resource) -> dict[str, Any]:
        body = {k: v for k, v in resource.body.items() if k != INTERNAL}
        body["properties"] = {k: v for k, v in (body.get("properties") or {}).items() if k != "provisioningState"}
        return body
