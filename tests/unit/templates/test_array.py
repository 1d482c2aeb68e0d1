"""Array functions, with the examples and outputs of learn.microsoft.com/azure/azure-resource-manager/
templates/template-functions-array (templates from github.com/Azure/azure-docs-json-samples)."""

from __future__ import annotations

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError

from .helpers import arm

NAMES = ["one", "two", "three"]


def test_array() -> None:
    assert arm("[array(parameters('intToConvert'))]", intToConvert=1) == [1]
    assert arm("[array(parameters('stringToConvert'))]", stringToConvert="efgh") == ["efgh"]
    assert arm("[array(parameters('objectToConvert'))]", objectToConvert={"a": "b", "c": "d"}) == [{"a": "b", "c": "d"}]
    assert arm("[array(createArray(1))]") == [1]


def test_concat() -> None:
    assert arm("[concat(parameters('firstArray'), parameters('secondArray'))]", firstArray=["1-1", "1-2", "1-3"],
               secondArray=["2-1", "2-2", "2-3"]) == ["1-1", "1-2", "1-3", "2-1", "2-2", "2-3"]
    assert arm("[concat(parameters('prefix'), '-', 'x')]", prefix="prefix") == "prefix-x"
    assert arm("[concat('vm', 3)]") == "vm3"  # the usual concat('name', copyIndex())
    with pytest.raises(TemplateExpressionError, match="can't combine arrays with a string"):
        arm("[concat(createArray(1), 'a')]")


def test_contains() -> None:
    values = {"stringToTest": "OneTwoThree", "objectToTest": {"one": "a", "two": "b", "three": "c"},
              "arrayToTest": NAMES}
    assert arm("[contains(parameters('stringToTest'), 'e')]", **values) is True
    assert arm("[contains(parameters('stringToTest'), 'z')]", **values) is False
    assert arm("[contains(parameters('objectToTest'), 'one')]", **values) is True
    assert arm("[contains(parameters('objectToTest'), 'a')]", **values) is False
    assert arm("[contains(parameters('arrayToTest'), 'three')]", **values) is True
    assert arm("[contains(parameters('arrayToTest'), 'four')]", **values) is False
    # strings are case-sensitive, object keys are not
    assert arm("[contains('OneTwo', 'one')]") is False
    assert arm("[contains(parameters('objectToTest'), 'ONE')]", **values) is True


def test_create_array() -> None:
    assert arm("[createArray('a', 'b', 'c')]") == ["a", "b", "c"]
    assert arm("[createArray(1, 2, 3)]") == [1, 2, 3]
    assert arm("[createArray(parameters('objectToTest'))]", objectToTest={"one": "a"}) == [{"one": "a"}]
    assert arm("[createArray(parameters('arrayToTest'))]", arrayToTest=NAMES) == [NAMES]
    assert arm("[createArray()]") == []


def test_empty() -> None:
    assert arm("[empty(parameters('testArray'))]", testArray=[]) is True
    assert arm("[empty(parameters('testObject'))]", testObject={}) is True
    assert arm("[empty(parameters('testString'))]", testString="") is True
    assert arm("[empty(null())]") is True  # null.json
    assert arm("[empty('a')]") is False


def test_first_and_last() -> None:
    assert arm("[first(parameters('arrayToTest'))]", arrayToTest=NAMES) == "one"
    assert arm("[first('One Two Three')]") == "O"
    assert arm("[last(parameters('arrayToTest'))]", arrayToTest=NAMES) == "three"
    assert arm("[last('One Two Three')]") == "e"
    assert arm("[first(createArray())]") is None


def test_flatten() -> None:
    nested = [["one", "two"], ["three"], ["four", "five"]]
    assert arm("[flatten(parameters('toFlatten'))]", toFlatten=nested) == ["one", "two", "three", "four", "five"]
    with pytest.raises(TemplateExpressionError, match="array of arrays"):
        arm("[flatten(createArray(1))]")


def test_index_of_and_last_index_of_in_arrays() -> None:
    # the array example of template-functions-array#indexof: comparison is by value and case-sensitive
    values = {"names": NAMES, "numbers": [4, 5, 6], "collection": [NAMES, [4, 5, 6]], "duplicates": [1, 2, 3, 1]}
    assert arm("[lastIndexOf(variables('names'), 'two')]", **values) == 1
    assert arm("[indexOf(variables('names'), 'one')]", **values) == 0
    assert arm("[lastIndexOf(variables('names'), 'Three')]", **values) == -1
    assert arm("[lastIndexOf(variables('numbers'), 4)]", **values) == 0
    assert arm("[indexOf(variables('numbers'), 6)]", **values) == 2
    assert arm("[lastIndexOf(variables('numbers'), '5')]", **values) == -1
    assert arm("[indexOf(variables('collection'), variables('numbers'))]", **values) == 1
    assert arm("[indexOf(variables('duplicates'), 1)]", **values) == 0
    assert arm("[lastIndexOf(variables('duplicates'), 1)]", **values) == 3


def test_intersection() -> None:
    first, second = {"one": "a", "two": "b", "three": "c"}, {"one": "a", "two": "z", "three": "c"}
    assert arm("[intersection(parameters('firstObject'), parameters('secondObject'))]", firstObject=first,
               secondObject=second) == {"one": "a", "three": "c"}
    assert arm("[intersection(parameters('firstArray'), parameters('secondArray'))]", firstArray=NAMES,
               secondArray=["two", "three"]) == ["two", "three"]
    with pytest.raises(TemplateExpressionError, match="all of them to be objects"):
        arm("[intersection(createArray(1), json('{}'))]")


def test_items() -> None:
    entities = {"item002": {"enabled": False, "displayName": "Example item 2", "number": 200},
                "item001": {"enabled": True, "displayName": "Example item 1", "number": 300}}
    assert arm("[items(variables('entities'))]", entities=entities) == [
        {"key": "item001", "value": {"enabled": True, "displayName": "Example item 1", "number": 300}},
        {"key": "item002", "value": {"enabled": False, "displayName": "Example item 2", "number": 200}},
    ]
    assert arm("[items(variables('entities'))[0].value.displayName]", entities=entities) == "Example item 1"


def test_length() -> None:
    assert arm("[length(parameters('arrayToTest'))]", arrayToTest=NAMES) == 3
    assert arm("[length(parameters('stringToTest'))]", stringToTest="One Two Three") == 13
    assert arm("[length(parameters('objectToTest'))]", objectToTest={
        "propA": "one", "propB": "two", "propC": "three", "propD": {"propD-1": "sub", "propD-2": "sub"}}) == 4


def test_range() -> None:
    assert arm("[range(parameters('startingInt'),parameters('numberOfElements'))]", startingInt=5,
               numberOfElements=3) == [5, 6, 7]
    assert arm("[range(0, 0)]") == []
    with pytest.raises(TemplateExpressionError, match="between 0 and 10000"):
        arm("[range(0, 10001)]")


def test_skip_and_take() -> None:
    assert arm("[skip(parameters('testArray'),parameters('elementsToSkip'))]", testArray=NAMES, elementsToSkip=2) \
        == ["three"]
    assert arm("[skip(parameters('testString'),parameters('charactersToSkip'))]", testString="one two three",
               charactersToSkip=4) == "two three"
    assert arm("[take(parameters('testArray'),parameters('elementsToTake'))]", testArray=NAMES, elementsToTake=2) \
        == ["one", "two"]
    assert arm("[take(parameters('testString'),parameters('charactersToTake'))]", testString="one two three",
               charactersToTake=2) == "on"
    # "If this value is 0 or less, all the elements are returned" / "an empty array is returned"
    assert arm("[skip(createArray(1, 2), -1)]") == [1, 2]
    assert arm("[take(createArray(1, 2), 0)]") == []
    assert arm("[skip('abc', 10)]") == ""


def test_union() -> None:
    assert arm("[union(parameters('firstObject'), parameters('secondObject'))]",
               firstObject={"one": "a", "two": "b", "three": "c1"},
               secondObject={"three": "c2", "four": "d", "five": "e"}) \
        == {"one": "a", "two": "b", "three": "c2", "four": "d", "five": "e"}
    assert arm("[union(parameters('firstArray'), parameters('secondArray'))]", firstArray=NAMES,
               secondArray=["three", "four"]) == ["one", "two", "three", "four"]


def test_union_merges_nested_objects_but_not_nested_arrays() -> None:
    first = {"property": {"one": "a", "two": "b", "three": "c1"}, "nestedArray": [1, 2]}
    second = {"property": {"three": "c2", "four": "d", "five": "e"}, "nestedArray": [3, 4]}
    assert arm("[union(variables('firstObject'), variables('secondObject'))]", firstObject=first,
               secondObject=second) == {"property": {"one": "a", "two": "b", "three": "c2", "four": "d", "five": "e"},
                                        "nestedArray": [3, 4]}
    assert first["property"] == {"one": "a", "two": "b", "three": "c1"}  # inputs are not modified
    assert arm("[union(variables('firstArray'), variables('secondArray'))]", firstArray=[["one", "two"], ["three"]],
               secondArray=[["three"], ["four", "two"]]) == [["one", "two"], ["three"], ["four", "two"]]


def test_index_from_end() -> None:
    assert arm("[indexFromEnd(createArray('a', 'b', 'c'), 1)]") == "c"
    assert arm("[indexFromEnd(createArray('a', 'b', 'c'), 3)]") == "a"
    assert arm("[tryIndexFromEnd(createArray('a'), 2)]") is None
    with pytest.raises(TemplateExpressionError, match="between 1 and 1"):
        arm("[indexFromEnd(createArray('a'), 0)]")


def test_wrong_argument_counts_and_types_are_named() -> None:
    with pytest.raises(TemplateExpressionError, match="'first' expects exactly 1 parameter, got 2"):
        arm("[first('a', 'b')]")
    with pytest.raises(TemplateExpressionError, match="'length' expects its first parameter to be an array, "
                                                      "object or string, got int"):
        arm("[length(5)]")
