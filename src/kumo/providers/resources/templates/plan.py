"""From a template's `resources` to a plan: every resource instance (copy loops expanded, conditions
applied, nested children flattened) with its type, name, id and the instances it depends on, in
a graph checked for cycles. Only what names the resources is evaluated here; bodies are evaluated
at deploy time, when `reference()` can see what was deployed before them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kumo.arm.errors import ArmError
from kumo.providers.resources.templates.context import NeedsReference, TemplateScope
from kumo.providers.resources.templates.expressions import TemplateExpressionError, evaluate_json, evaluate_string

DEPLOYMENTS_TYPE = "microsoft.resources/deployments"
TEMPLATE_ONLY_KEYS = {"type", "name", "apiversion", "dependson", "copy", "condition", "resources", "comments",
                      "metadata", "existing", "scope", "resourcegroup", "subscriptionid", "import"}


def invalid_template(message: str) -> ArmError:
    return ArmError(400, "InvalidTemplate", f"Deployment template validation failed: '{message}'.")


def expression_error(where: str, e: TemplateExpressionError) -> ArmError:
    return invalid_template(f"The template {where} is not valid: {e}")


@dataclass
class PlannedResource:
    key: str  # the resource id, lower-case
    id: str
    type: str  # Microsoft.Network/virtualNetworks/subnets
    name: str  # v1/s1
    api_version: str
    definition: dict[str, Any]  # the resource as written, bodies unevaluated
    copy: dict[str, int]  # copy loop indices in effect
    loop: str | None  # the loop copyIndex() without a name refers to
    where: str  # for messages: "resource 'Microsoft.Network/virtualNetworks/v1'"
    symbolic: str | None = None
    existing: bool = False
    depends_on: set[str] = field(default_factory=set)  # keys of planned resources

    @property
    def is_deployment(self) -> bool:
        return self.type.lower() == DEPLOYMENTS_TYPE


@dataclass
class _Pending:
    resource: PlannedResource
    raw_depends: list[Any]
    parent_key: str | None
    batch_after: list[str]  # keys of the previous batch of a serial copy loop


class Planner:
    def __init__(self, scope: TemplateScope, resource_group_id: str) -> None:
        self.scope = scope
        self.base = resource_group_id
        self.pending: list[_Pending] = []
        self.loops: dict[str, list[str]] = {}  # copy loop name (lower) -> instance keys
        self.skipped: set[str] = set()  # names, ids and "type/name" of resources whose condition is false

    def plan(self, resources: Any) -> list[PlannedResource]:
        if isinstance(resources, dict):  # languageVersion 2.0: symbolic names
            items = [(symbolic, r) for symbolic, r in resources.items()]
        elif isinstance(resources, list):
            items = [(None, r) for r in resources]
        else:
            raise invalid_template("'resources' must be an array (or an object of symbolic names)")
        for i, (symbolic, r) in enumerate(items):
            self._add(r, f"resources[{i}]", symbolic, parent=None, outer_copy={})
        return self._link()

    # -- expansion -----------------------------------------------------------------------------------
    def _eval(self, value: Any, where: str, copy: dict[str, int], loop: str | None) -> Any:
        try:
            return evaluate_json(value, self.scope.functions(copy, loop))
        except TemplateExpressionError as e:
            raise expression_error(where, e) from None
        except NeedsReference:  # as in Azure: what names the resources is known before any deploys
            raise invalid_template(f"The template {where} is not valid: the function 'reference' is not expected "
                                   "here; a resource's type, name, condition, copy count and dependsOn must be known "
                                   "before deployment") from None

    def _add(self, r: Any, where: str, symbolic: str | None, parent: PlannedResource | None,
             outer_copy: dict[str, int]) -> None:
        if not isinstance(r, dict) or "type" not in r or ("name" not in r and not r.get("existing")):
            raise invalid_template(f"The template resource at '{where}' needs a 'type' and a 'name'")
        spec = r.get("copy")
        if spec is None:
            self._instance(r, where, symbolic, parent, dict(outer_copy), None, [])
            return
        if not isinstance(spec, dict) or not spec.get("name") or "count" not in spec:
            raise invalid_template(f"The copy of resource '{where}' needs a 'name' and a 'count'")
        loop = str(spec["name"])
        count = self._eval(spec["count"], f"resource '{where}' copy count", outer_copy, None)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 800:
            raise invalid_template(f"The copy count of resource '{where}' must be an integer from 0 to 800, "
                                   f"not {count!r}")
        serial = str(spec.get("mode", "parallel")).lower() == "serial"
        batch = int(spec.get("batchSize", 1) or 1) if serial else count or 1
        keys = self.loops.setdefault(loop.lower(), [])
        for i in range(count):
            after = keys[(i // batch - 1) * batch:(i // batch) * batch] if serial and i >= batch else []
            self._instance(r, f"{where}[{i}]", symbolic, parent, {**outer_copy, loop: i}, loop, list(after))

    def _instance(self, r: dict[str, Any], where: str, symbolic: str | None, parent: PlannedResource | None,
                  copy: dict[str, int], loop: str | None, after: list[str]) -> None:
        rtype = str(self._eval(r["type"], f"resource '{where}' type", copy, loop))
        name = str(self._eval(r.get("name", ""), f"resource '{where}' name", copy, loop))
        if parent is not None:
            if rtype.count("/") == 0:  # a nested child names its type and name relative to its parent
                rtype = f"{parent.type}/{rtype}"
            if not name.lower().startswith(parent.name.lower() + "/"):
                name = f"{parent.name}/{name}"
        rid = self._id(r, rtype, name, where, copy, loop)
        label = f"resource '{rtype}/{name}'"
        if "condition" in r:
            condition = self._eval(r["condition"], f"{label} condition", copy, loop)
            if not isinstance(condition, bool):
                raise invalid_template(f"The condition of {label} must be a boolean, not {condition!r}")
            if not condition:
                self.skipped |= {name.lower(), rid.lower(), f"{rtype}/{name}".lower(), (symbolic or "").lower()}
                return
        api = str(self._eval(r.get("apiVersion", ""), f"{label} apiVersion", copy, loop))
        planned = PlannedResource(key=rid.lower(), id=rid, type=rtype, name=name, api_version=api, definition=r,
                                  copy=copy, loop=loop, where=label, symbolic=symbolic,
                                  existing=bool(r.get("existing")))
        if loop is not None:
            self.loops[loop.lower()].append(planned.key)
        raw = r.get("dependsOn") or []
        if not isinstance(raw, list):
            raise invalid_template(f"The dependsOn of {label} must be an array")
        self.pending.append(_Pending(planned, raw, parent.key if parent else None, after))
        self.scope.names.setdefault(name.lower(), rid)
        if symbolic:
            self.scope.names[symbolic.lower()] = rid
        for i, child in enumerate(r.get("resources") or []):
            self._add(child, f"{where}.resources[{i}]", None, planned, copy)

    def _id(self, r: dict[str, Any], rtype: str, name: str, where: str, copy: dict[str, int],
            loop: str | None) -> str:
        parts = [p for p in rtype.split("/") if p]
        names = [n for n in name.split("/") if n]
        if len(parts) < 2 or len(names) != len(parts) - 1:
            raise invalid_template(f"The template resource '{name}' at '{where}' for type '{rtype}' has incorrect "
                                   f"segment lengths. A nested resource type must have identical number of "
                                   f"segments as its resource name")
        base = self.base
        if "resourceGroup" in r or "subscriptionId" in r:  # a nested deployment aimed at another group
            sub = str(self._eval(r.get("subscriptionId", self.scope.info.subscription_id), where, copy, loop))
            group = str(self._eval(r.get("resourceGroup", self.scope.info.resource_group["name"]), where, copy,
                                   loop))
            base = f"/subscriptions/{sub}/resourceGroups/{group}"
        segments = "/".join(f"{t}/{n}" for t, n in zip(parts[1:], names, strict=True))
        return f"{base}/providers/{parts[0]}/{segments}"

    # -- the graph ----------------------------------------------------------------------------------
    def _link(self) -> list[PlannedResource]:
        by_key: dict[str, PlannedResource] = {}
        for p in self.pending:
            if p.resource.key in by_key:
                raise invalid_template(f"The resource '{p.resource.id}' is defined multiple times in a template")
            by_key[p.resource.key] = p.resource
        for p in self.pending:
            res = p.resource
            if p.parent_key in by_key:
                res.depends_on.add(p.parent_key)  # a nested child needs its parent
            res.depends_on.update(p.batch_after)
            for i, raw in enumerate(p.raw_depends):
                target = self._eval(raw, f"{res.where} dependsOn[{i}]", res.copy, res.loop)
                res.depends_on.update(self._match(str(target), by_key, res.where))
            res.depends_on.discard(res.key)
        _check_cycles(by_key)
        return [p.resource for p in self.pending]

    def _match(self, target: str, by_key: dict[str, PlannedResource], where: str) -> set[str]:
        low = target.lower()
        if low in self.loops:
            return set(self.loops[low])
        found = {k for k, r in by_key.items()
                 if low in (k, r.name.lower(), f"{r.type}/{r.name}".lower(), (r.symbolic or "").lower())
                 or k.endswith("/providers/" + low)}
        if not found and low not in self.skipped and not any(low.endswith("/" + s) for s in self.skipped if s):
            raise invalid_template(f"The {where} depends on '{target}', which is not defined in the template")
        return found


def _check_cycles(by_key: dict[str, PlannedResource]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(key: str, path: list[str]) -> None:
        state[key] = 1
        for dep in sorted(by_key[key].depends_on):
            if dep not in by_key:
                continue
            if state.get(dep) == 1:
                cycle = [by_key[k].name for k in path[path.index(dep):]] + [by_key[dep].name]
                raise invalid_template("Circular dependency detected on resource: " + " -> ".join(cycle))
            if state.get(dep) is None:
                visit(dep, [*path, dep])
        state[key] = 2

    for key in by_key:
        if key not in state:
            visit(key, [key])


def evaluate_body(resource: PlannedResource, scope: TemplateScope) -> dict[str, Any]:
    """The request body for the resource's provider: everything but the template's own keys,
    evaluated, with property copy loops expanded. Raises NeedsReference through, ArmError otherwise."""
    raw = {k: v for k, v in resource.definition.items() if k.lower() not in TEMPLATE_ONLY_KEYS}
    template = None
    if resource.is_deployment and isinstance(raw.get("properties"), dict):
        # a nested template is evaluated by its own deployment (seeing the parent's parameters and
        # variables when its scope is `outer`), so its copy loops and references work as written
        raw = {**raw, "properties": dict(raw["properties"])}
        template = raw["properties"].pop("template", None)
    body = _expand(raw, scope, resource, resource.where)
    if template is not None:
        body["properties"]["template"] = template
    return body


def _expand(value: Any, scope: TemplateScope, res: PlannedResource, where: str) -> Any:
    """evaluate_json, plus Azure's property iteration: a `copy` array inside an object makes
    each named property an array of `input` evaluated `count` times."""
    functions = scope.functions(res.copy, res.loop)
    try:
        if isinstance(value, str):
            return evaluate_string(value, functions)
        if isinstance(value, list):
            return [_expand(v, scope, res, where) for v in value]
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.lower() == "copy" and isinstance(item, list):
                for loop in item:
                    name, count = loop.get("name"), evaluate_json(loop.get("count"), functions)
                    if not name or isinstance(count, bool) or not isinstance(count, int):
                        raise invalid_template(f"A property copy in {res.where} needs a name and an integer count")
                    out[name] = [_expand(loop.get("input"), scope, _at(res, name, i), where) for i in range(count)]
                continue
            out[str(evaluate_string(key, functions))] = _expand(item, scope, res, where)
        return out
    except TemplateExpressionError as e:
        raise expression_error(res.where, e) from None


def _at(res: PlannedResource, loop: str, index: int) -> PlannedResource:
    return PlannedResource(res.key, res.id, res.type, res.name, res.api_version, res.definition,
                           {**res.copy, loop: index}, loop, res.where, res.symbolic, res.existing)
