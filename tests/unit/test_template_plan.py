"""The template planner and parameters without a server: copy loops, conditions, nested children,
dependsOn in every form Azure accepts, the graph's cycle check, and parameter binding."""

from __future__ import annotations

from typing import Any

import pytest

from kumo.arm.errors import ArmError
from kumo.providers.resources.templates import parameters
from kumo.providers.resources.templates.context import (DeploymentInfo, TemplateScope, user_functions,
                                                        variable_definitions)
from kumo.providers.resources.templates.plan import Planner, evaluate_body

SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg"
NET = f"{RG}/providers/Microsoft.Network"


def scope(params: dict[str, Any] | None = None, variables: dict[str, Any] | None = None) -> TemplateScope:
    info = DeploymentInfo(name="d", subscription_id=SUB, tenant_id="t", subscription_name="s",
                          resource_group={"id": RG, "name": "rg", "location": "local"}, template={},
                          mode="Incremental", endpoint="https://localhost:8443/", location="local")
    return TemplateScope(info, params or {}, variable_definitions(variables), lambda ns, t: {"apiVersions": ["x"]})


def plan(resources: Any, **kw: Any) -> dict[str, Any]:
    return {r.name: r for r in Planner(scope(**kw), RG).plan(resources)}


def nsg(name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "Microsoft.Network/networkSecurityGroups", "apiVersion": "2023-09-01", "name": name, **extra}


def test_copy_loops_expand_with_their_index_and_serial_batches_chain() -> None:
    planned = plan([nsg("[concat('n', copyIndex(1))]", copy={"name": "l", "count": 5, "mode": "serial",
                                                              "batchSize": 2})])
    assert sorted(planned) == ["n1", "n2", "n3", "n4", "n5"]
    assert planned["n1"].depends_on == set() and planned["n2"].depends_on == set()
    assert planned["n3"].depends_on == {f"{NET}/networkSecurityGroups/n1".lower(),
                                        f"{NET}/networkSecurityGroups/n2".lower()}
    assert planned["n5"].depends_on == {f"{NET}/networkSecurityGroups/n3".lower(),
                                        f"{NET}/networkSecurityGroups/n4".lower()}


def test_depends_on_accepts_names_types_ids_loops_and_skips_false_conditions() -> None:
    planned = plan([
        nsg("a"), nsg("b", condition="[equals(1, 2)]"),
        nsg("[concat('c', copyIndex())]", copy={"name": "cs", "count": 2}),
        nsg("z", dependsOn=["a", "Microsoft.Network/NETWORKSECURITYGROUPS/a", "b", "cs",
                            "[resourceId('Microsoft.Network/networkSecurityGroups', 'a')]"])])
    assert "b" not in planned  # condition false: not deployed, and depending on it is no error
    assert planned["z"].depends_on == {f"{NET}/networkSecurityGroups/{n}".lower() for n in ("a", "c0", "c1")}


def test_nested_children_get_full_names_types_and_their_parent() -> None:
    vnet = {"type": "Microsoft.Network/virtualNetworks", "apiVersion": "x", "name": "v",
            "resources": [{"type": "subnets", "apiVersion": "x", "name": "s1"},
                          {"type": "Microsoft.Network/virtualNetworks/subnets", "apiVersion": "x", "name": "v/s2"}]}
    planned = plan([vnet])
    assert planned["v/s1"].type == "Microsoft.Network/virtualNetworks/subnets"
    assert planned["v/s1"].id == f"{NET}/virtualNetworks/v/subnets/s1"
    assert planned["v/s2"].depends_on == {f"{NET}/virtualNetworks/v".lower()}


@pytest.mark.parametrize("resources, message", [
    ([nsg("a", dependsOn=["b"]), nsg("b", dependsOn=["c"]), nsg("c", dependsOn=["a"])], "Circular dependency"),
    ([nsg("a", dependsOn=["nowhere"])], "'nowhere', which is not defined"),
    ([nsg("a"), nsg("A")], "defined multiple times"),
    ([{"type": "Microsoft.Network/virtualNetworks/subnets", "apiVersion": "x", "name": "only-one"}],
     "incorrect segment lengths"),
    ([nsg("x", copy={"name": "l", "count": 801})], "from 0 to 800"),
    ([nsg("[badFunction()]")], "badFunction"),
])
def test_bad_graphs_are_invalid_templates(resources: Any, message: str) -> None:
    with pytest.raises(ArmError) as e:
        plan(resources)
    assert e.value.code == "InvalidTemplate" and message in e.value.message


def test_cycles_are_named() -> None:
    with pytest.raises(ArmError) as e:
        plan([nsg("a", dependsOn=["b"]), nsg("b", dependsOn=["a"])])
    assert "a -> b -> a" in e.value.message


def test_bodies_evaluate_with_property_copy_and_variables() -> None:
    s = scope(params={"n": 2}, variables={"prefix": "p", "copy": [{"name": "list", "count": 2,
                                                                   "input": "[copyIndex('list')]"}]})
    r = Planner(s, RG).plan([nsg("x", location="[resourceGroup().location]", properties={
        "copy": [{"name": "rules", "count": "[parameters('n')]",
                  "input": {"name": "[concat(variables('prefix'), copyIndex('rules'))]"}}],
        "list": "[variables('list')]"})])[0]
    body = evaluate_body(r, s)
    assert body == {"location": "local", "properties": {"rules": [{"name": "p0"}, {"name": "p1"}], "list": [0, 1]}}


def test_parameters_bind_defaults_types_and_limits() -> None:
    declared = {"a": {"type": "int", "defaultValue": 3, "minValue": 1, "maxValue": 5},
                "b": {"type": "string", "defaultValue": "[concat('x', string(parameters('a')))]"},
                "c": {"type": "array", "allowedValues": ["u", "v"]},
                "s": {"type": "secureString"}}

    def functions_for(bound: dict[str, Any]) -> Any:
        return scope(params=bound).functions()

    bound = parameters.bind(declared, {"c": {"value": ["v"]}, "s": {"value": "pw"}}, functions_for)
    assert bound == {"a": 3, "b": "x3", "c": ["v"], "s": "pw"}
    assert parameters.public_parameters(declared, bound)["s"] == {"type": "SecureString"}
    for supplied, message in (({"a": {"value": "3"}, "c": {"value": []}, "s": {"value": ""}}, "Expected 'Integer'"),
                              ({"a": {"value": 9}, "c": {"value": []}, "s": {"value": ""}}, "at most 5"),
                              ({"c": {"value": ["w"]}, "s": {"value": ""}}, "allowed value"),
                              ({"c": {"value": []}}, "'s' is not provided"),
                              ({"c": {"value": []}, "s": {"value": ""}, "zz": {"value": 1}}, "'zz'")):
        with pytest.raises(ArmError) as e:
            parameters.bind(declared, supplied, functions_for)
        assert message in e.value.message, (supplied, e.value.message)


def test_user_defined_functions_see_only_their_arguments() -> None:
    fns = user_functions([{"namespace": "kumo", "members": {"name": {
        "parameters": [{"name": "base", "type": "string"}, {"name": "n", "type": "int"}],
        "output": {"type": "string", "value": "[format('{0}-{1}', toLower(parameters('base')), parameters('n'))]"}}}}])
    s = scope()
    s.user_functions = fns
    r = Planner(s, RG).plan([nsg("[kumo.name('WEB', copyIndex())]", copy={"name": "l", "count": 2})])
    assert [p.name for p in r] == ["web-0", "web-1"]
    with pytest.raises(ArmError) as e:
        Planner(s, RG).plan([nsg("[kumo.name('x')]")])
    assert "expects 2 arguments" in e.value.message
