"""The template functions that need a deployment around them, as Azure groups them: deployment
(deployment, environment, parameters, variables, copyIndex) and resource (resourceId and its
siblings, reference, list*, providers, resourceGroup, subscription, tenant, pickZones).

Expressions are evaluated synchronously; what needs the store (another resource's state for
`reference()`) is looked up in `TemplateScope.references`, which the engine fills before (re)trying:
a miss raises `NeedsReference`, the engine fetches or waits for that resource, then evaluates again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kumo.arm.ids import GUID
from kumo.providers.resources.templates.expressions import Function, TemplateExpressionError, evaluate_json
from kumo.providers.resources.templates.functions import PURE_FUNCTIONS


class NeedsReference(Exception):  # noqa: N818 - a request to the engine, not an error
    """`reference()` asked for a resource whose state is not at hand yet."""

    def __init__(self, resource_id: str) -> None:
        super().__init__(resource_id)
        self.resource_id = resource_id


@dataclass(frozen=True)
class CopyVariable:
    """A variable from the `copy` array of `variables`: `count` values of `input`."""

    count: Any
    input: Any


def variable_definitions(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TemplateExpressionError("'variables' must be an object.")
    out = {k: v for k, v in raw.items() if k.lower() != "copy"}
    for loop in raw.get("copy") or []:
        if not isinstance(loop, dict) or not loop.get("name") or "count" not in loop:
            raise TemplateExpressionError("Each entry of the variables' copy needs a 'name', a 'count' and an 'input'.")
        out[str(loop["name"])] = CopyVariable(loop["count"], loop.get("input"))
    return out


@dataclass
class DeploymentInfo:
    """Who and where: what deployment(), resourceGroup(), subscription() and tenant() return."""

    name: str
    subscription_id: str
    tenant_id: str
    subscription_name: str
    resource_group: dict[str, Any]  # the resource group's GET body
    template: dict[str, Any]
    mode: str
    endpoint: str  # kumo's ARM endpoint, for environment()
    location: str


@dataclass
class TemplateScope:
    """Everything expressions of one template can see."""

    info: DeploymentInfo
    parameters: dict[str, Any]
    variable_defs: dict[str, Any]
    providers: Callable[[str, str | None], Any]  # providers(namespace, type) -> Azure's provider shape
    names: dict[str, str] = field(default_factory=dict)  # resource name or symbolic name -> resource id
    references: dict[str, dict[str, Any]] = field(default_factory=dict)  # resource id (lower) -> GET body
    user_functions: dict[str, Function] = field(default_factory=dict)  # "ns.name" -> function
    _variables: dict[str, Any] = field(default_factory=dict)
    _evaluating: list[str] = field(default_factory=list)

    def functions(self, copy: dict[str, int] | None = None, own_loop: str | None = None) -> dict[str, Function]:
        """The function table for one evaluation site: `copy` maps loop names to the current index,
        `own_loop` is the loop copyIndex() without a name refers to."""
        fns = dict(PURE_FUNCTIONS)
        fns.update({
            "parameters": self._parameters,
            "variables": self._variable,
            "deployment": lambda args: _arity("deployment", args, 0) or self._deployment(),
            "environment": lambda args: _arity("environment", args, 0) or self._environment(),
            "resourcegroup": lambda args: _arity("resourceGroup", args, 0) or self.info.resource_group,
            "subscription": lambda args: _arity("subscription", args, 0) or self._subscription(),
            "tenant": lambda args: _arity("tenant", args, 0) or self._tenant(),
            "resourceid": lambda args: self._resource_id(args),
            "subscriptionresourceid": lambda args: self._subscription_resource_id(args),
            "tenantresourceid": lambda args: _typed_id("", args, "tenantResourceId"),
            "extensionresourceid": lambda args: self._extension_resource_id(args),
            "reference": self._reference,
            "providers": lambda args: self.providers(str(args[0]), str(args[1]) if len(args) > 1 else None),
            "pickzones": lambda args: [],  # kumo's locations have no availability zones
            "copyindex": lambda args: _copy_index(args, copy or {}, own_loop),
        })
        fns.update(self.user_functions)
        return fns

    # -- deployment family ------------------------------------------------------------------------
    def _parameters(self, args: list[Any]) -> Any:
        name = str(args[0]) if args else ""
        for key, value in self.parameters.items():
            if key.lower() == name.lower():
                return value
        raise TemplateExpressionError(f"The template parameter '{name}' is not found. Please see "
                                      "https://aka.ms/arm-syntax-parameters for usage details.")

    def _variable(self, args: list[Any]) -> Any:
        name = str(args[0]) if args else ""
        key = next((k for k in self.variable_defs if k.lower() == name.lower()), None)
        if key is None:
            raise TemplateExpressionError(f"The template variable '{name}' is not found. Please see "
                                          "https://aka.ms/arm-syntax-variables for usage details.")
        if key in self._variables:
            return self._variables[key]
        if key in self._evaluating:
            raise TemplateExpressionError("The template variables form a cycle: "
                                          + " -> ".join([*self._evaluating, key]))
        self._evaluating.append(key)
        try:
            value = self.evaluate_variable(key)
        finally:
            self._evaluating.pop()
        self._variables[key] = value
        return value

    def evaluate_variable(self, key: str) -> Any:
        definition = self.variable_defs[key]
        if isinstance(definition, CopyVariable):  # made by the variables' own `copy` section
            count = evaluate_json(definition.count, self.functions())
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 800:
                raise TemplateExpressionError(f"The copy count of variable '{key}' must be an integer from 0 to "
                                              f"800, not {count!r}.")
            return [evaluate_json(definition.input, self.functions({key: i}, key)) for i in range(count)]
        return evaluate_json(definition, self.functions())

    def _deployment(self) -> dict[str, Any]:
        template = self.info.template
        return {"name": self.info.name, "location": self.info.location, "properties": {
            "template": {"contentVersion": template.get("contentVersion", "1.0.0.0"),
                         **({"$schema": template["$schema"]} if "$schema" in template else {})},
            "templateHash": "", "parameters": {}, "mode": self.info.mode, "provisioningState": "Accepted"}}

    def _environment(self) -> dict[str, Any]:
        endpoint = self.info.endpoint.rstrip("/")
        return {"name": "kumo", "gallery": endpoint, "graph": endpoint, "portal": endpoint,
                "graphAudience": endpoint, "activeDirectoryDataLake": endpoint, "batch": endpoint,
                "media": endpoint, "sqlManagement": endpoint, "vmImageAliasDoc": "", "resourceManager": endpoint + "/",
                "authentication": {"loginEndpoint": endpoint + "/", "audiences": [endpoint + "/"],
                                   "tenant": "common", "identityProvider": "AAD"},
                "suffixes": {"acrLoginServer": ".azurecr.io", "sqlServerHostname": ".database.windows.net",
                             "keyvaultDns": ".vault.azure.net", "storage": "core.windows.net"}}

    def _subscription(self) -> dict[str, Any]:
        sub = self.info.subscription_id
        return {"id": f"/subscriptions/{sub}", "subscriptionId": sub, "tenantId": self.info.tenant_id,
                "displayName": self.info.subscription_name}

    def _tenant(self) -> dict[str, Any]:
        return {"id": f"/tenants/{self.info.tenant_id}", "tenantId": self.info.tenant_id, "countryCode": "US",
                "displayName": "kumo"}

    # -- resource family ---------------------------------------------------------------------------
    def _resource_id(self, args: list[Any]) -> str:
        """resourceId([subscriptionId], [resourceGroupName], type, name1, [name2, …])."""
        strings = [str(a) for a in args]
        at = next((i for i, a in enumerate(strings) if "/" in a), None)
        if at is None or at > 2:
            raise TemplateExpressionError("The template function 'resourceId' expects a resource type such as "
                                          "'Microsoft.Network/virtualNetworks' followed by the resource names.")
        sub, rg = self.info.subscription_id, self.info.resource_group["name"]
        if at == 2:
            sub, rg = strings[0], strings[1]
        elif at == 1:
            rg = strings[0]
        return _typed_id(f"/subscriptions/{sub}/resourceGroups/{rg}", strings[at:], "resourceId")

    def _subscription_resource_id(self, args: list[Any]) -> str:
        strings = [str(a) for a in args]
        sub = self.info.subscription_id
        if strings and GUID.match(strings[0]) and len(strings) > 1 and "/" in strings[1]:
            sub, strings = strings[0], strings[1:]
        return _typed_id(f"/subscriptions/{sub}", strings, "subscriptionResourceId")

    @staticmethod
    def _extension_resource_id(args: list[Any]) -> str:
        strings = [str(a) for a in args]
        if len(strings) < 3:
            raise TemplateExpressionError("The template function 'extensionResourceId' expects a base resource id, "
                                          "an extension resource type and its names.")
        return _typed_id(strings[0].rstrip("/"), strings[1:], "extensionResourceId")

    def resolve(self, name_or_id: str) -> str:
        """A resource id, or the name / symbolic name of a resource in this template, as an id."""
        if name_or_id.startswith("/"):
            return name_or_id
        found = self.names.get(name_or_id.lower())
        if found is None:
            raise TemplateExpressionError(f"The resource '{name_or_id}' is not defined in the template; pass "
                                          "its full resource id (resourceId(...)) instead.")
        return found

    def _reference(self, args: list[Any]) -> Any:
        if not args or not isinstance(args[0], str):
            raise TemplateExpressionError("The template function 'reference' expects a resource id or name.")
        rid = self.resolve(args[0])
        body = self.references.get(rid.lower())
        if body is None:
            raise NeedsReference(rid)
        full = len(args) > 2 and str(args[2]).lower() == "full"
        if full:
            return {**body, "resourceId": body.get("id", rid)}
        return body.get("properties", {})


def _arity(name: str, args: list[Any], n: int) -> None:
    if len(args) != n:
        raise TemplateExpressionError(f"The template function '{name}' expects {n} parameters, got {len(args)}.")


def _typed_id(base: str, parts: list[str], function: str) -> str:
    if not parts or "/" not in parts[0]:
        raise TemplateExpressionError(f"The template function '{function}' expects a resource type followed by "
                                      "its names.")
    namespace, *types = [t for t in parts[0].split("/") if t]
    names = parts[1:]
    if len(types) != len(names) or not types:
        raise TemplateExpressionError(f"Unable to evaluate template language function '{function}': the type "
                                      f"'{parts[0]}' requires {len(types)} resource name argument(s), got "
                                      f"{len(names)}.")
    segments = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"{base}/providers/{namespace}/{segments}"


def _copy_index(args: list[Any], copy: dict[str, int], own_loop: str | None) -> int:
    loop, offset = own_loop, 0
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, str)):
            raise TemplateExpressionError("The template function 'copyIndex' takes a loop name and/or an integer "
                                          "offset.")
        if isinstance(a, int):
            offset = a
        else:
            loop = a
    if loop is None or loop.lower() not in {k.lower() for k in copy}:
        where = f"loop '{loop}'" if loop else "a copy loop"
        raise TemplateExpressionError(f"The template function 'copyIndex' is not expected at this location: it "
                                      f"must be used inside {where}.")
    index = next(v for k, v in copy.items() if k.lower() == loop.lower())
    return index + offset



def user_functions(raw: Any) -> dict[str, Function]:
    """A template's `functions`: each member evaluates its `output.value` with `parameters()`
    bound to its arguments and the pure functions only (Azure lets them use nothing else)."""
    out: dict[str, Function] = {}
    if raw is None:
        return out
    if not isinstance(raw, list):
        raise TemplateExpressionError("'functions' must be an array of namespaces.")
    for ns in raw:
        namespace = str((ns or {}).get("namespace", ""))
        for name, member in ((ns or {}).get("members") or {}).items():
            out[f"{namespace}.{name}".lower()] = _user_function(f"{namespace}.{name}", member or {})
    return out


def _user_function(full_name: str, member: dict[str, Any]) -> Function:
    names = [str(p.get("name")) for p in member.get("parameters") or []]
    output = (member.get("output") or {}).get("value")

    def call(args: list[Any]) -> Any:
        if len(args) != len(names):
            raise TemplateExpressionError(f"The user function '{full_name}' expects {len(names)} arguments, got "
                                          f"{len(args)}.")
        values = {n.lower(): a for n, a in zip(names, args, strict=True)}

        def parameter(a: list[Any]) -> Any:
            key = str(a[0]) if a else ""
            if key.lower() not in values:
                raise TemplateExpressionError(f"The user function '{full_name}' has no parameter '{key}'.")
            return values[key.lower()]

        return evaluate_json(output, {**PURE_FUNCTIONS, "parameters": parameter})
    return call
