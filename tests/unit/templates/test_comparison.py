"""Comparison functions, with the examples and outputs of template-functions-comparison."""

from __future__ import annotations

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError

from .helpers import arm

OBJECT_TO_TEST = {"null1": None, "null2": None, "string": "default", "int": 1, "object": {"first": "default"},
                  "array": [1]}


@pytest.mark.parametrize("last, expected", [
    ("string", "default"), ("int", 1), ("object", {"first": "default"}), ("array", [1]),
])
def test_coalesce(last: str, expected: object) -> None:
    expression = ("[coalesce(parameters('objectToTest').null1, parameters('objectToTest').null2, "
                  f"parameters('objectToTest').{last})]")
    assert arm(expression, objectToTest=OBJECT_TO_TEST) == expected


def test_coalesce_of_nulls_is_null_and_empty_values_are_not_null() -> None:
    assert arm("[empty(coalesce(parameters('objectToTest').null1, parameters('objectToTest').null2))]",
               objectToTest=OBJECT_TO_TEST) is True
    assert arm("[coalesce(null(), '', 'x')]") == ""


def test_equals() -> None:
    values = {"firstInt": 1, "secondInt": 1, "firstString": "a", "secondString": "a", "firstArray": ["a", "b"],
              "secondArray": ["a", "b"], "firstObject": {"a": "b"}, "secondObject": {"a": "b"}}
    for kind in ("Int", "String", "Array", "Object"):
        assert arm(f"[equals(parameters('first{kind}'), parameters('second{kind}') )]", **values) is True
    assert arm("[not(equals(1, 2))]") is True  # not-equals.json


def test_equals_is_strict_about_types_and_case() -> None:
    assert arm("[equals('demo', 'Demo')]") is False  # Bicep's =~ exists because equals is case-sensitive
    assert arm("[equals(1, true())]") is False
    assert arm("[equals(1, '1')]") is False
    assert arm("""[equals(json('{"a": [1, {"b": null}]}'), json('{"a": [1, {"b": null}]}'))]""") is True
    assert arm("""[equals(json('{"a": 1, "b": 2}'), json('{"b": 2, "a": 1}'))]""") is True
    assert arm("[equals(createArray(1, 2), createArray(2, 1))]") is False


@pytest.mark.parametrize("function, ints, strings", [
    # firstInt 1, secondInt 2, firstString 'A', secondString 'a': .NET's culture-aware order puts 'a' before 'A'
    ("greater", False, True),
    ("greaterOrEquals", False, True),
    ("less", True, False),
    ("lessOrEquals", True, False),
])
def test_ordering(function: str, ints: bool, strings: bool) -> None:
    values = {"firstInt": 1, "secondInt": 2, "firstString": "A", "secondString": "a"}
    assert arm(f"[{function}(parameters('firstInt'), parameters('secondInt') )]", **values) is ints
    assert arm(f"[{function}(parameters('firstString'), parameters('secondString'))]", **values) is strings


def test_ordering_of_strings_is_alphabetical_before_case() -> None:
    assert arm("[less('apple', 'Banana')]") is True  # ordinal order would put 'B' first
    assert arm("[greaterOrEquals('b', 'b')]") is True
    assert arm("[less(10, 9)]") is False
    with pytest.raises(TemplateExpressionError, match="two integers or two strings, got int and string"):
        arm("[greater(1, 'a')]")
