"""Object functions, with the examples and outputs of template-functions-object."""

from __future__ import annotations

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError

from .helpers import arm


def test_create_object() -> None:
    assert arm("[createObject('intProp', 1, 'stringProp', 'abc', 'boolProp', true(), 'arrayProp', "
               "createArray('a', 'b', 'c'), 'objectProp', createObject('key1', 'value1'))]") == {
        "intProp": 1, "stringProp": "abc", "boolProp": True, "arrayProp": ["a", "b", "c"],
        "objectProp": {"key1": "value1"}}
    assert arm("[createObject()]") == {}
    with pytest.raises(TemplateExpressionError, match="even number"):
        arm("[createObject('a')]")


def test_json() -> None:
    # json.json: jsonEmptyObject 'null', jsonObject '{"a": "b"}', jsonString '"test"', ...
    assert arm("[empty(json(parameters('jsonEmptyObject')))]", jsonEmptyObject="null") is True
    assert arm("[json(parameters('jsonObject'))]", jsonObject='{"a": "b"}') == {"a": "b"}
    assert arm("[json(parameters('jsonString'))]", jsonString='"test"') == "test"
    assert arm("[json(parameters('jsonBoolean'))]", jsonBoolean="true") is True
    assert arm("[json(parameters('jsonInt'))]", jsonInt="3") == 3
    assert arm("[json(parameters('jsonArray'))]", jsonArray="[1,2,3 ]") == [1, 2, 3]
    assert arm("""[json(concat('{"a": "', parameters('concatValue'), '"}'))]""", concatValue="demo value") \
        == {"a": "demo value"}


def test_json_accepts_single_quoted_strings_as_newtonsoft_does() -> None:
    assert arm("[json('{''one'': ''a'', ''two'': \"b\"}')]") == {"one": "a", "two": "b"}
    with pytest.raises(TemplateExpressionError, match="can't parse its argument as JSON"):
        arm("[json('{not json')]")


def test_null() -> None:
    assert arm("[empty(null())]") is True
    assert arm("[null()]") is None


def test_object_keys_and_shallow_merge() -> None:
    assert arm("""[objectKeys(json('{"a": 1, "b": 2}'))]""") == ["a", "b"]
    first, second = {"one": "a", "nested": {"a": 1, "nested": {"c": 3}}}, {"two": "b", "nested": {"b": 2}}
    assert arm("[shallowMerge(createArray(variables('first'), variables('second')))]", first=first, second=second) \
        == {"one": "a", "nested": {"b": 2}, "two": "b"}
    assert arm("[shallowMerge(createArray(createObject('one', 'a'), createObject('two', 'b'), "
               "createObject('two', 'c')))]") == {"one": "a", "two": "c"}


def test_try_get() -> None:
    value = {"Name": "x", "list": [1, {"deep": True}]}
    assert arm("[tryGet(parameters('v'), 'name')]", v=value) == "x"
    assert arm("[tryGet(parameters('v'), 'missing')]", v=value) is None
    assert arm("[tryGet(parameters('v'), 'list', 1, 'deep')]", v=value) is True
    assert arm("[tryGet(parameters('v'), 'list', 5, 'deep')]", v=value) is None
