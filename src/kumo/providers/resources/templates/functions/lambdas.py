"""Lambda functions (template-functions-lambda): filter, map, reduce, sort, toObject, mapValues, groupBy.
Their lambda arguments arrive as callables made by the evaluator from lambda('x', body)."""

from __future__ import annotations

from functools import cmp_to_key
from typing import Any

from ..expressions import Function, Lambda, type_name
from ._common import arg_array, arg_lambda, arg_object, fail, registrar

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)


def _call(lam: Lambda, item: Any, index: int) -> Any:
    # Lambdas over array elements may declare a second variable for the element's index.
    return lam(item, index) if lam.arity == 2 else lam(item)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(name, f"expects its lambda to return a bool, got {type_name(value)}.")
    return value


def _key(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise fail(name, f"expects its key lambda to return a string, got {type_name(value)}.")
    return value


@fn("filter", 2, 2)
def filter_(args: list[Any]) -> list[Any]:
    items, lam = arg_array("filter", args, 0), arg_lambda("filter", args, 1, 1, 2)
    return [item for i, item in enumerate(items) if _bool("filter", _call(lam, item, i))]


@fn("map", 2, 2)
def map_(args: list[Any]) -> list[Any]:
    items, lam = arg_array("map", args, 0), arg_lambda("map", args, 1, 1, 2)
    return [_call(lam, item, i) for i, item in enumerate(items)]


@fn("reduce", 3, 3)
def reduce(args: list[Any]) -> Any:
    """reduce(array, initial, lambda('current', 'next'[, 'index'], ...))."""
    items, value, lam = arg_array("reduce", args, 0), args[1], arg_lambda("reduce", args, 2, 2, 3)
    for i, item in enumerate(items):
        value = lam(value, item, i) if lam.arity == 3 else lam(value, item)
    return value


@fn("sort", 2, 2)
def sort(args: list[Any]) -> list[Any]:
    """The lambda says whether its first argument sorts before its second; the sort is stable."""
    items, lam = arg_array("sort", args, 0), arg_lambda("sort", args, 1, 2)

    def compare(a: Any, b: Any) -> int:
        if _bool("sort", lam(a, b)):
            return -1
        return 1 if _bool("sort", lam(b, a)) else 0

    return sorted(items, key=cmp_to_key(compare))


@fn("toObject", 2, 3)
def to_object(args: list[Any]) -> dict[str, Any]:
    items, key = arg_array("toObject", args, 0), arg_lambda("toObject", args, 1, 1)
    value = arg_lambda("toObject", args, 2, 1) if len(args) > 2 else None
    return {_key("toObject", key(item)): value(item) if value else item for item in items}


@fn("mapValues", 2, 2)
def map_values(args: list[Any]) -> dict[str, Any]:
    obj, lam = arg_object("mapValues", args, 0), arg_lambda("mapValues", args, 1, 1)
    return {k: lam(v) for k, v in obj.items()}


@fn("groupBy", 2, 2)
def group_by(args: list[Any]) -> dict[str, list[Any]]:
    items, lam = arg_array("groupBy", args, 0), arg_lambda("groupBy", args, 1, 1)
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(_key("groupBy", lam(item)), []).append(item)
    return groups
