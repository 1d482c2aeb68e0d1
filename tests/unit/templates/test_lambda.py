"""Lambda functions, with the examples and outputs of template-functions-lambda."""

from __future__ import annotations

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError

from .helpers import arm

DOGS = [
    {"name": "Evie", "age": 5, "interests": ["Ball", "Frisbee"]},
    {"name": "Casper", "age": 3, "interests": ["Other dogs"]},
    {"name": "Indy", "age": 2, "interests": ["Butter"]},
    {"name": "Kira", "age": 8, "interests": ["Rubs"]},
]


def test_filter() -> None:
    assert arm("[filter(variables('dogs'), lambda('dog', greaterOrEquals(lambdaVariables('dog').age, 5)))]",
               dogs=DOGS) == [DOGS[0], DOGS[3]]
    assert arm("[filter(variables('itemForLoop'), lambda('i', greater(lambdaVariables('i'), 5)))]",
               itemForLoop=list(range(10))) == [6, 7, 8, 9]
    assert arm("[filter(range(0, 10), lambda('i', equals(0, mod(lambdaVariables('i'), 2))))]") == [0, 2, 4, 6, 8]
    with pytest.raises(TemplateExpressionError, match="'filter' expects its lambda to return a bool"):
        arm("[filter(range(0, 2), lambda('i', 1))]")


def test_map() -> None:
    assert arm("[map(variables('dogs'), lambda('dog', lambdaVariables('dog').name))]", dogs=DOGS) \
        == ["Evie", "Casper", "Indy", "Kira"]
    assert arm("[map(variables('dogs'), lambda('dog', format('Hello {0}!', lambdaVariables('dog').name)))]",
               dogs=DOGS) == ["Hello Evie!", "Hello Casper!", "Hello Indy!", "Hello Kira!"]
    assert arm("[map(range(0, length(variables('dogs'))), lambda('i', createObject('i', lambdaVariables('i'), "
               "'dog', variables('dogs')[lambdaVariables('i')].name, 'greeting', format('Ahoy, {0}!', "
               "variables('dogs')[lambdaVariables('i')].name))))]", dogs=DOGS) == [
        {"i": 0, "dog": "Evie", "greeting": "Ahoy, Evie!"}, {"i": 1, "dog": "Casper", "greeting": "Ahoy, Casper!"},
        {"i": 2, "dog": "Indy", "greeting": "Ahoy, Indy!"}, {"i": 3, "dog": "Kira", "greeting": "Ahoy, Kira!"}]


def test_reduce() -> None:
    ages = "map(variables('dogs'), lambda('dog', lambdaVariables('dog').age))"
    add = "lambda('cur', 'next', add(lambdaVariables('cur'), lambdaVariables('next')))"
    assert arm(f"[reduce({ages}, 0, {add})]", dogs=DOGS) == 18
    assert arm(f"[reduce({ages}, 1, {add})]", dogs=DOGS) == 19
    assert arm("[reduce(createArray(createObject('foo', 123), createObject('bar', 456), createObject('baz', 789)), "
               "createObject(), lambda('cur', 'next', union(lambdaVariables('cur'), lambdaVariables('next'))))]") \
        == {"foo": 123, "bar": 456, "baz": 789}


def test_sort() -> None:
    assert arm("[sort(variables('dogs'), lambda('a', 'b', less(lambdaVariables('a').age, lambdaVariables('b').age)))]",
               dogs=DOGS) == [DOGS[2], DOGS[1], DOGS[0], DOGS[3]]


def test_to_object() -> None:
    by_name = {dog["name"]: dog for dog in DOGS}
    assert arm("[toObject(variables('dogs'), lambda('entry', lambdaVariables('entry').name))]", dogs=DOGS) == by_name
    assert arm("[toObject(variables('dogs'), lambda('entry', lambdaVariables('entry').name), lambda('entry', "
               "lambdaVariables('entry')))]", dogs=DOGS) == by_name
    nested = [{"name": d["name"], "properties": {"age": d["age"], "interests": d["interests"]}} for d in DOGS]
    assert arm("[toObject(variables('dogs'), lambda('entry', lambdaVariables('entry').name), lambda('entry', "
               "lambdaVariables('entry').properties))]", dogs=nested) == {
        "Evie": {"age": 5, "interests": ["Ball", "Frisbee"]}, "Casper": {"age": 3, "interests": ["Other dogs"]},
        "Indy": {"age": 2, "interests": ["Butter"]}, "Kira": {"age": 8, "interests": ["Rubs"]}}


def test_map_values_and_group_by() -> None:
    assert arm("[mapValues(createObject('foo', 'foo'), lambda('val', toUpper(lambdaVariables('val'))))]") \
        == {"foo": "FOO"}
    assert arm("[groupBy(createArray('foo', 'bar', 'baz'), lambda('x', substring(lambdaVariables('x'), 0, 1)))]") \
        == {"f": ["foo"], "b": ["bar", "baz"]}


def test_errors_inside_a_lambda_point_into_its_body() -> None:
    with pytest.raises(TemplateExpressionError) as caught:
        arm("[map(createArray(1), lambda('x', div(lambdaVariables('x'), 0)))]")
    assert "can't divide by zero" in caught.value.message
    assert caught.value.position == 34
