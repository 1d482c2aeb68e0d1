"""Microsoft.Resources/templateSpecs and their versions: stored ARM templates, a control-plane
resource in Azure too (no host effects), answered synchronously as Azure does."""

from __future__ import annotations

import re
from typing import Any

from kumo.arm.errors import bad_request
from kumo.arm.ids import ResourceId
from kumo.providers.base import ResourceType
from kumo.store import Resource

NAME = re.compile(r"^[-\w.()]{1,90}$")
NAME_RULE = "The name can only contain letters, digits, '-', '.', '(', ')' and '_' (1-90 characters)."
API_VERSIONS = ("2022-02-01", "2021-05-01", "2021-03-01-preview")


class _TemplateSpecFamily(ResourceType):
    """What template specs and their versions share: namespace, api-versions, naming, synchronous PUT."""

    namespace = "Microsoft.Resources"
    api_versions = API_VERSIONS
    long_running = False
    name_pattern = NAME
    name_rule = NAME_RULE


class TemplateSpecs(_TemplateSpecFamily):
    # 1. the ARM type
    type_path = ("templateSpecs",)

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = super().normalise(rid, body, existing)["properties"]
        for key in ("description", "displayName"):
            if key in props and props[key] is not None and not isinstance(props[key], str):
                raise bad_request("InvalidRequestContent", f"'properties.{key}' must be a string.",
                                  f"properties.{key}")
        keep = {k: props[k] for k in ("description", "displayName", "metadata") if props.get(k) is not None}
        return {"properties": keep}


class TemplateSpecVersions(_TemplateSpecFamily):
    type_path = ("templateSpecs", "versions")

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = super().normalise(rid, body, existing)["properties"]
        template = props.get("mainTemplate")
        if not isinstance(template, dict):
            raise bad_request("InvalidRequestContent", "'properties.mainTemplate' is required and must be a "
                              "JSON object (an ARM template).", "properties.mainTemplate")
        linked = props.get("linkedTemplates") or []
        if not isinstance(linked, list):
            raise bad_request("InvalidRequestContent", "'properties.linkedTemplates' must be an array.",
                              "properties.linkedTemplates")
        keep = {k: props[k] for k in ("description", "mainTemplate", "linkedTemplates", "metadata",
                                       "uiFormDefinition") if props.get(k) is not None}
        return {"properties": keep}
