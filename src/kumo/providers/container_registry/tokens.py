"""Microsoft.ContainerRegistry/registries/scopeMaps and /tokens: repository-scoped credentials.
A scope map lists actions (`repositories/app/content/read`, …/content/write, …/content/delete,
…/metadata/read, …/metadata/write); a token names a scope map, and its passwords come from the
registry's generateCredentials action (stored hashed, shown only once)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.arm.lro import iso
from kumo.providers.base import ResourceType
from kumo.providers.container_registry.registries import API_VERSIONS, password_view, without_secrets
from kumo.providers.network.common import canonical
from kumo.registry.target import SECRETS
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import Services

NAME = re.compile(r"^[a-zA-Z0-9-]{5,50}$")
NAME_RULE = "The name must be 5-50 characters long and contain only alphanumeric characters and '-'."
ACTION = re.compile(r"^(repositories/[a-z0-9*][a-z0-9._/*-]*/(content/(read|write|delete)|metadata/(read|write))"
                    r"|gateway/[a-z0-9-]+/(config|message)/(read|write))$")


class _RegistryChild(ResourceType):
    namespace = "Microsoft.ContainerRegistry"
    api_versions = API_VERSIONS
    tracked = False
    long_running = False
    name_pattern = NAME
    name_rule = NAME_RULE

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        old = (existing.body.get("properties") or {}) if existing else {}
        resource.body["properties"]["creationDate"] = old.get("creationDate") or iso(time.time())

    def view(self, resource: Resource) -> dict[str, Any]:
        return without_secrets(resource.body)


class ScopeMaps(_RegistryChild):
    type_path = ("registries", "scopeMaps")

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = super().normalise(rid, body, existing)["properties"]
        actions = props.get("actions")
        if not isinstance(actions, list) or not actions:
            raise bad_request("InvalidRequestContent", "'properties.actions' must be a non-empty list.",
                              "properties.actions")
        for action in actions:
            if not isinstance(action, str) or not ACTION.match(action):
                raise bad_request("InvalidScopeMapAction", f"The action '{action}' is invalid. Actions look like "
                                  "'repositories/<repository>/content/read' (content/read|write|delete, "
                                  "metadata/read|write).", "properties.actions")
        return {"properties": {"actions": list(dict.fromkeys(actions)), "type": "UserDefined",
                               "description": str(props.get("description") or "")}}

    async def check_delete(self, tx: Tx, resource: Resource) -> None:
        registry_key = resource.key.rsplit("/scopemaps/", 1)[0]
        for token in await tx.list_resources(resource.subscription_id, parent_key=registry_key):
            if str((token.body.get("properties") or {}).get("scopeMapId", "")).lower() == resource.key:
                raise ArmError(409, "ScopeMapInUse", f"The scope map {resource.name} is used by token {token.name}; "
                               "delete or update the token first.")


class Tokens(_RegistryChild):
    type_path = ("registries", "tokens")

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = super().normalise(rid, body, existing)["properties"]
        scope_map = props.get("scopeMapId")
        if not isinstance(scope_map, str) or not scope_map:
            raise bad_request("InvalidRequestContent", "'properties.scopeMapId' is required.", "properties.scopeMapId")
        status = canonical(props.get("status"), ("enabled", "disabled"), "properties.status", "enabled")
        return {"properties": {"scopeMapId": scope_map, "status": status}}

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        scope_map = body["properties"]["scopeMapId"].lower()
        registry = rid.parent
        assert registry is not None
        if not scope_map.startswith(registry.key + "/scopemaps/"):
            raise bad_request("InvalidScopeMapId", "'properties.scopeMapId' must be a scope map of the token's "
                              "registry.", "properties.scopeMapId")
        async with services.store.read() as tx:
            if await tx.get_resource(scope_map) is None:
                raise ArmError(404, "ScopeMapNotFound", f"The scope map {scope_map.rsplit('/', 1)[-1]} does not "
                               "exist.")

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        await super().write_through(tx, resource, existing)
        secrets = (existing.body.get(SECRETS) if existing else None) or {}
        resource.body[SECRETS] = secrets
        resource.body["properties"]["credentials"] = password_view(secrets.get("passwords") or {})
