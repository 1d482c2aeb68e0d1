"""Microsoft.Resources/deployments at resource-group scope: ARM templates deployed for real through
the template engine (`templates/`), plus their per-resource `operations`, `validate`,
`exportTemplate` and `cancel`. What `az vm create`, `az vmss create` and `az deployment group
create` stand on."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId, parse_resource_id
from kumo.providers.base import ResourceType
from kumo.providers.network.common import canonical
from kumo.providers.resources.templates import engine
from kumo.providers.resources.templates import parameters as params
from kumo.store import Resource

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

API_VERSIONS = ("2024-11-01", "2024-03-01", "2023-07-01", "2022-09-01", "2021-04-01", "2020-10-01", "2019-10-01")
NAME = re.compile(r"^[-\w._()]{1,64}$")
TEMPLATE_SPEC_VERSION = "microsoft.resources/templatespecs/versions"


class DeploymentCanceled(ArmError):
    state = "Canceled"

    def __init__(self, name: str) -> None:
        super().__init__(409, "DeploymentCanceled", f"The deployment '{name}' was canceled.")


class Deployments(ResourceType):
    # 1. the ARM type
    namespace = "Microsoft.Resources"
    type_path = ("deployments",)
    api_versions = API_VERSIONS
    tracked = False  # resource-group deployments have no location or tags of their own
    name_pattern = NAME
    name_rule = "The name can only contain letters, digits, '-', '.', '(', ')' and '_' (1-64 characters)."
    actions = {"validate": "validate_action", "exporttemplate": "export_template", "cancel": "cancel"}
    unbound_actions = frozenset({"validate"})

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[Any]] = {}  # deployment key -> the task deploying it

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = super().normalise(rid, body, existing)["properties"]
        if "templateLink" in props and "template" not in props:
            link = props["templateLink"] or {}
            if not isinstance(link, dict) or not link.get("id"):
                raise bad_request("InvalidTemplate", "kumo has no network access to fetch templateLink.uri; send the "
                                  "template inline or link a template spec version by its id.", "templateLink")
        elif not isinstance(props.get("template"), dict):
            raise bad_request("InvalidRequestContent", "The deployment needs 'properties.template' (a JSON object) "
                              "or 'properties.templateLink'.", "properties.template")
        if props.get("parametersLink"):
            raise bad_request("InvalidTemplate", "kumo has no network access to fetch parametersLink; send "
                              "'properties.parameters' inline.", "properties.parametersLink")
        parameters = props.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise bad_request("InvalidRequestContent", "'properties.parameters' must be an object.")
        out: dict[str, Any] = {"mode": canonical(props.get("mode"), ("Incremental", "Complete"), "properties.mode",
                                                 "Incremental"),
                               "parameters": parameters}
        for key in ("template", "templateLink", "expressionEvaluationOptions", "debugSetting"):
            if props.get(key) is not None:
                out[key] = props[key]
        return {"properties": out}

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        await _prepare(services, rid, body["properties"])  # InvalidTemplate now, before anything is stored

    # 3. GET shape: no template, no secure values
    def view(self, resource: Resource) -> dict[str, Any]:
        body = dict(resource.body)
        props = dict(body.get("properties") or {})
        template = props.pop("template", {}) or {}
        supplied = props.pop("parameters", {}) or {}
        bound = props.pop("boundParameters", None)
        props["parameters"] = bound if bound is not None else params.public_parameters(
            template.get("parameters") or {}, {k: (v or {}).get("value") for k, v in supplied.items()})
        props.setdefault("templateHash", engine.template_hash(template))
        body["properties"] = props
        return body

    # 4. host effects: deploy the template's resources
    async def realise(self, services: "Services", resource: Resource) -> None:
        rid = parse_resource_id(resource.id)
        assert rid is not None
        props = resource.body["properties"]
        started = time.time()
        await _update(services, resource, {"timestamp": engine.now_iso(), "correlationId": str(uuid.uuid4())})
        try:
            prepared = await engine.prepare(services, rid, props)
            await _update(services, resource, {"boundParameters": params.public_parameters(
                prepared.declared, prepared.scope.parameters), "templateHash": engine.template_hash(props["template"])})
            task = asyncio.create_task(engine.DeploymentRun(services, resource, prepared).run())
            self._running[resource.key] = task
            try:
                outputs = await task
            except asyncio.CancelledError:
                if task.cancelled() and not _current_cancelled():
                    raise DeploymentCanceled(resource.name) from None
                raise
            finally:
                self._running.pop(resource.key, None)
        except ArmError as e:
            await _update(services, resource, {"error": e.body()["error"],
                                               "duration": engine.duration(time.time() - started)})
            raise
        await _update(services, resource, {
            "outputs": outputs, "duration": engine.duration(time.time() - started),
            "outputResources": [{"id": r.id} for r in prepared.plan if not r.existing]})

    # 5. actions
    async def validate_action(self, ctx: "RequestContext", target: Resource | ResourceId) -> Response:
        if ctx.method != "POST":
            raise ArmError(405, "MethodNotAllowed", "validate is a POST action.")
        rid = target if isinstance(target, ResourceId) else parse_resource_id(target.id)
        assert rid is not None
        stored = self.normalise(rid, await ctx.object_body(), None)
        prepared = await _prepare(ctx.services, rid, stored["properties"])
        props = {"provisioningState": "Succeeded", "mode": stored["properties"]["mode"],
                 "templateHash": engine.template_hash(stored["properties"]["template"]),
                 "parameters": params.public_parameters(prepared.declared, prepared.scope.parameters),
                 "validatedResources": [{"id": r.id} for r in prepared.plan]}
        return JSONResponse({"id": str(rid), "name": rid.name, "type": self.type, "properties": props})

    async def export_template(self, ctx: "RequestContext", resource: Resource) -> Response:
        if ctx.method != "POST":
            raise ArmError(405, "MethodNotAllowed", "exportTemplate is a POST action.")
        return JSONResponse({"template": resource.body["properties"].get("template", {})})

    async def cancel(self, ctx: "RequestContext", resource: Resource) -> Response:
        if ctx.method != "POST":
            raise ArmError(405, "MethodNotAllowed", "cancel is a POST action.")
        task = self._running.get(resource.key)
        if task is None or resource.provisioning_state not in ("Accepted", "Running", "Creating", "Updating"):
            raise ArmError(409, "DeploymentCannotBeCancelled", f"The deployment '{resource.name}' cannot be "
                           f"canceled: it is {resource.provisioning_state}.")
        task.cancel()
        return Response(status_code=204)


class DeploymentOperations(ResourceType):
    """`…/deployments/{name}/operations/{id}`: one row per resource a deployment touched, written by
    the engine; read-only."""

    namespace = "Microsoft.Resources"
    type_path = ("deployments", "operations")
    api_versions = API_VERSIONS
    tracked = False
    long_running = False
    read_only = True


def _current_cancelled() -> bool:
    task = asyncio.current_task()
    return bool(task and task.cancelling())


async def _update(services: "Services", resource: Resource, fields: dict[str, Any]) -> None:
    """Merge `fields` into the deployment's properties, if this run's generation is still current."""
    async with services.store.write() as tx:
        current = await tx.get_resource(resource.key)
        if current is None or current.desired_gen != resource.desired_gen:
            return
        current.body["properties"].update(fields)
        await tx.put_resource(current)


async def _prepare(services: "Services", rid: ResourceId, props: dict[str, Any]) -> engine.Prepared:
    """Check a deployment before it is stored: a linked template spec version is read into
    `template` (kept with the deployment, as Azure keeps what it deployed)."""
    if "template" not in props:
        version_id = props["templateLink"]["id"]
        async with services.store.read() as tx:
            version = await tx.get_resource(version_id.lower())
        if version is None or version.type != TEMPLATE_SPEC_VERSION:
            raise bad_request("InvalidTemplateSpec", f"The template spec version '{version_id}' was not found; kumo "
                              "links only template spec versions it holds.")
        props["template"] = version.body["properties"]["mainTemplate"]
    return await engine.prepare(services, rid, props)
