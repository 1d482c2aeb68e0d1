"""Running a deployment: prepare (bind parameters, plan the resources) and deploy them through the
same provider code the REST API uses, independent ones in parallel, dependents after what they
depend on. Each resource gets a deployment operation row with its own status and error; a failure
fails the deployment with Azure's DeploymentFailed envelope, and resources that depend on a failed
one are not attempted (as in Azure)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kumo.aio import uninterrupted
from kumo.arm.errors import ArmError
from kumo.arm.ids import ResourceId, parse_resource_id, resource_group_key
from kumo.providers import lifecycle
from kumo.providers.resources.templates import parameters as params
from kumo.providers.resources.templates.context import (DeploymentInfo, NeedsReference, TemplateScope,
                                                        user_functions, variable_definitions)
from kumo.providers.resources.templates.expressions import TemplateExpressionError, evaluate_json
from kumo.providers.resources.templates.plan import (DEPLOYMENTS_TYPE, PlannedResource, Planner, evaluate_body,
                                                     expression_error, invalid_template)
from kumo.store import Resource

if TYPE_CHECKING:
    from kumo.arm.context import Services

OPERATIONS_TYPE = "Microsoft.Resources/deployments/operations"
OUTPUT_TYPES = {"string": str, "securestring": str, "int": int, "bool": bool, "object": dict, "secureobject": dict,
                "array": list}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration(seconds: float) -> str:
    return f"PT{seconds:.7f}S"


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return str(int.from_bytes(digest[:8], "big"))


@dataclass
class Prepared:
    template: dict[str, Any]
    scope: TemplateScope
    plan: list[PlannedResource]
    declared: dict[str, Any]


def providers_function(services: "Services") -> Callable[[str, str | None], Any]:
    def providers(namespace: str, resource_type: str | None) -> Any:
        ns = services.providers.namespace(namespace)
        if ns is None:
            raise TemplateExpressionError(f"The resource namespace '{namespace}' is not registered in kumo.")
        types = [{"resourceType": t.resource_type, "locations": ["local"], "apiVersions": list(t.api_versions)}
                 for t in ns.types]
        if resource_type is None:
            return {"namespace": ns.name, "resourceTypes": types}
        for t in types:
            if t["resourceType"].lower() == resource_type.lower():
                return {"namespace": ns.name, **t}
        raise TemplateExpressionError(f"The resource type '{resource_type}' is not served by '{ns.name}' in kumo.")
    return providers


async def prepare(services: "Services", rid: ResourceId, props: dict[str, Any]) -> Prepared:
    """Everything that can be checked before deploying: parameters, variables, the resource graph."""
    from kumo.providers.resources.resource_groups import view as group_view

    template = props["template"]
    async with services.store.read() as tx:
        group = await tx.get_resource(resource_group_key(rid.subscription, rid.resource_group or ""))
        subscription = await tx.get_subscription(rid.subscription)
    assert group is not None and subscription is not None
    info = DeploymentInfo(name=rid.name, subscription_id=subscription.id, tenant_id=subscription.tenant_id,
                          subscription_name=subscription.display_name, resource_group=group_view(group),
                          template=template, mode=props["mode"], endpoint=services.settings.endpoint,
                          location=group.location or "local")
    try:
        variables = variable_definitions(template.get("variables"))
        functions = user_functions(template.get("functions"))
    except TemplateExpressionError as e:
        raise invalid_template(str(e)) from None
    declared = template.get("parameters") or {}
    providers = providers_function(services)

    def functions_for(bound: dict[str, Any]) -> Any:
        return TemplateScope(info, bound, {}, providers, user_functions=functions).functions()

    bound = params.bind(declared, props.get("parameters") or {}, functions_for)
    scope = TemplateScope(info, bound, variables, providers, user_functions=functions)
    base = f"/subscriptions/{rid.subscription}/resourceGroups/{group.name}"
    plan = Planner(scope, base).plan(template.get("resources", []))
    return Prepared(template, scope, plan, declared)


class DeploymentRun:
    """One run of a deployment's resources; `run()` returns its outputs or raises DeploymentFailed."""

    def __init__(self, services: "Services", deployment: Resource, prepared: Prepared) -> None:
        self.services = services
        self.deployment = deployment
        self.prepared = prepared
        self.scope = prepared.scope
        self.planned = {r.key: r for r in prepared.plan}
        self.done = {r.key: asyncio.Event() for r in prepared.plan}
        self.status: dict[str, str] = {}  # key -> Succeeded | Failed | Skipped
        self.errors: list[dict[str, Any]] = []
        self.waiting: dict[str, str] = {}  # resource key -> the key it waits on (for reference())

    async def run(self) -> dict[str, Any]:
        for r in self.prepared.plan:
            if r.existing:  # declared with `existing`: read, never deployed
                self.status[r.key] = "Succeeded"
                self.done[r.key].set()
        deploys = [asyncio.ensure_future(self._deploy(r)) for r in self.prepared.plan if not r.existing]
        try:
            await asyncio.gather(*deploys)
        except asyncio.CancelledError:
            # gather ends at its first canceled child; the others may still be writing their Canceled
            # operation rows, and the deployment must not end before them
            await asyncio.wait(deploys)
            raise
        if self.errors:
            raise deployment_failed(self.deployment.id, self.errors)
        if self.prepared.scope.info.mode == "Complete":
            await self._complete_mode()
        return await self._outputs()

    # -- one resource ---------------------------------------------------------------------------
    async def _deploy(self, r: PlannedResource) -> None:
        try:
            for dep in r.depends_on:
                if dep in self.done:
                    await self.done[dep].wait()
            if any(self.status.get(dep) not in (None, "Succeeded") for dep in r.depends_on if dep in self.done):
                self.status[r.key] = "Skipped"  # Azure does not attempt what depends on a failure
                return
            started = time.time()
            try:
                # the Running row is written whole, and then marked Canceled on a cancel: none stays Running
                await uninterrupted(self._record(r, "Running", started))
                await self._apply(r)
            except asyncio.CancelledError:  # the deployment was canceled (or kumo stops) mid-way
                await uninterrupted(self._record(r, "Canceled", started))
                raise
            except ArmError as e:
                self.status[r.key] = "Failed"
                error = e.body()["error"]
                self.errors.append(error)
                await uninterrupted(self._record(r, "Failed", started, error=error,
                                                 status_code=_status_name(e.status)))
                return
            self.status[r.key] = "Succeeded"
            await uninterrupted(self._record(r, "Succeeded", started, status_code="OK"))
        finally:
            self.done[r.key].set()

    async def _apply(self, r: PlannedResource) -> None:
        body = await self.with_references(lambda: evaluate_body(r, self.scope), r.key)
        rid = parse_resource_id(r.id)
        handler = self.services.providers.handler(r.type)
        if rid is None or handler is None:
            namespace = r.type.split("/")[0]
            if self.services.providers.namespace(namespace) is None:
                raise ArmError(400, "NoRegisteredProviderFound", f"No registered resource provider found for "
                               f"location 'local' and API version '{r.api_version}' for type '{r.type}'. kumo does "
                               f"not serve the namespace '{namespace}'.")
            raise ArmError(400, "InvalidResourceType", f"The resource type '{r.type}' could not be found in the "
                           f"namespace '{namespace}': kumo does not serve it yet.")
        if r.is_deployment:
            body = nested_body(body, self.scope, self.prepared)
        _resource, _created, op = await lifecycle.apply_desired(
            self.services, rid, handler, body, f"deployment {self.deployment.name}")
        if op is not None:
            finished = await self.services.operations.wait(op.id)
            if finished.status != "Succeeded":
                error = finished.error or {"code": "ResourceDeploymentFailure", "message": "The resource failed."}
                raise ArmError(finished.error_status or 400, error.get("code", "Failed"), error.get("message", ""),
                               target=error.get("target"), details=error.get("details"))
        await self._fetch(r.id)

    # -- reference(): the state of other resources, waiting for those this deployment makes ---------
    async def with_references(self, evaluate: Callable[[], Any], waiter: str | None = None) -> Any:
        for _ in range(1000):
            try:
                return evaluate()
            except NeedsReference as need:
                await self._reference(need.resource_id, waiter)
        raise invalid_template("Too many distinct resources referenced by one expression")

    async def _reference(self, resource_id: str, waiter: str | None) -> None:
        key = resource_id.lower()
        if key in self.done and not self.done[key].is_set():
            if waiter is not None:
                chain, at = [waiter], key
                while at is not None:
                    if at == waiter:
                        names = [self.planned[k].name for k in chain if k in self.planned]
                        raise invalid_template("Circular dependency detected on resource: " + " -> ".join(names))
                    chain.append(at)
                    at = self.waiting.get(at)
                self.waiting[waiter] = key
            try:
                await self.done[key].wait()
            finally:
                self.waiting.pop(waiter or "", None)
        if self.status.get(key) not in (None, "Succeeded"):
            raise ArmError(400, "ResourceNotFound", f"The resource '{resource_id}' referenced by the template failed "
                           "to deploy.")
        await self._fetch(resource_id)

    async def _fetch(self, resource_id: str) -> None:
        async with self.services.store.read() as tx:
            resource = await tx.get_resource(resource_id.lower())
        if resource is None:
            rid = parse_resource_id(resource_id)
            raise ArmError(404, "ResourceNotFound", f"The Resource '{rid.type if rid else resource_id}/"
                           f"{rid.name if rid else ''}' under resource group "
                           f"'{rid.resource_group if rid else ''}' was not found.")
        handler = self.services.providers.handler(resource.type)
        self.scope.references[resource_id.lower()] = handler.view(resource) if handler else resource.body

    # -- after the resources ----------------------------------------------------------------------------
    async def _outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in (self.prepared.template.get("outputs") or {}).items():
            if not isinstance(spec, dict) or "type" not in spec:
                raise invalid_template(f"The template output '{name}' needs a 'type'")
            kind = str(spec["type"]).lower()
            functions = self.scope.functions()
            try:
                if "condition" in spec and not await self._evaluate(spec["condition"], functions):
                    continue
                if isinstance(spec.get("copy"), dict):
                    copy = spec["copy"]
                    count = await self._evaluate(copy.get("count"), functions)
                    value = [await self._evaluate(copy.get("input"), self.scope.functions({name: i}, name))
                             for i in range(int(count))]
                else:
                    value = await self._evaluate(spec.get("value"), functions)
            except TemplateExpressionError as e:
                raise expression_error(f"output '{name}'", e) from None
            expected = OUTPUT_TYPES.get(kind)
            if expected is None or not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise invalid_template(f"The template output '{name}' is not valid: the value is not of type "
                                       f"'{spec['type']}'")
            out[name] = {"type": params.TYPES.get(kind, spec["type"])}
            if kind not in params.SECURE:
                out[name]["value"] = value
        return out

    async def _evaluate(self, value: Any, functions: dict[str, Any]) -> Any:
        return await self.with_references(lambda: evaluate_json(value, functions))

    async def _complete_mode(self) -> None:
        """Complete mode: the group keeps only what the template declares (and deployments)."""
        d = self.deployment
        async with self.services.store.read() as tx:
            members = await tx.list_resources(d.subscription_id, resource_group=d.resource_group,
                                              top_level_only=True)
        keep = set(self.planned)
        for member in members:
            if member.type in (DEPLOYMENTS_TYPE, "microsoft.resources/resourcegroups") or member.key in keep:
                continue
            await lifecycle.delete_tree(self.services, member)

    # -- deployment operations: one row per resource, what `az deployment operation group list` shows --
    async def _record(self, r: PlannedResource, state: str, started: float, *,
                      error: dict[str, Any] | None = None, status_code: str | None = None) -> None:
        d = self.deployment
        op_id = hashlib.sha1(f"{d.key}:{d.desired_gen}:{r.key}".encode()).hexdigest()[:16].upper()
        op_rid = f"{d.id}/operations/{op_id}"
        props: dict[str, Any] = {
            "provisioningOperation": "Create", "provisioningState": state, "timestamp": now_iso(),
            "duration": duration(time.time() - started), "trackingId": str(uuid.uuid4()),
            "targetResource": {"id": r.id, "resourceType": r.type, "resourceName": r.name,
                               "apiVersion": r.api_version}}
        if status_code:
            props["statusCode"] = status_code
        if error is not None:
            props["statusMessage"] = {"status": "Failed", "error": error}
        row = Resource(key=op_rid.lower(), id=op_rid, subscription_id=d.subscription_id,
                       resource_group=d.resource_group, type=OPERATIONS_TYPE.lower(), name=op_id,
                       body={"id": op_rid, "operationId": op_id, "properties": props}, provisioning_state=state,
                       parent_key=d.key)
        async with self.services.store.write() as tx:
            await tx.put_resource(row)


def deployment_failed(target: str, errors: list[dict[str, Any]]) -> ArmError:
    return ArmError(400, "DeploymentFailed", "At least one resource deployment operation failed. Please list "
                    "deployment operations for details. Please see https://aka.ms/arm-deployment-operations for usage "
                    "details.", target=target, details=errors)


def nested_body(body: dict[str, Any], scope: TemplateScope, prepared: Prepared) -> dict[str, Any]:
    """A nested deployment's request body. With the default `outer` scope its template sees the
    parent's parameters and variables, so they travel with it."""
    props = dict(body.get("properties") or {})
    props.setdefault("mode", "Incremental")
    if str((props.get("expressionEvaluationOptions") or {}).get("scope", "outer")).lower() != "inner":
        template = dict(props.get("template") or {})
        template["parameters"] = prepared.declared
        template["variables"] = prepared.template.get("variables") or {}
        props["template"] = template
        props["parameters"] = {k: {"value": v} for k, v in scope.parameters.items()}
    return {**body, "properties": props}


def _status_name(status: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            500: "InternalServerError"}.get(status, str(status))
