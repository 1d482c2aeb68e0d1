"""Object functions (template-functions-object). contains, empty, intersection, union, length and items
accept arrays as well and live in array."""

from __future__ import annotations

from typing import Any

from ..expressions import Function, type_name
from ._common import arg_array, arg_object, arg_str, fail, is_int, parse_json, registrar

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)


@fn("createObject", 0, None)
def create_object(args: list[Any]) -> dict[str, Any]:
    """createObject(key1, value1, key2, value2, ...)."""
    if len(args) % 2:
        raise fail("createObject", f"expects an even number of parameters (keys and values), got {len(args)}.")
    return {arg_str("createObject", args, i): args[i + 1] for i in range(0, len(args), 2)}


@fn("json", 1, 1)
def json_(args: list[Any]) -> Any:
    """json('{"a": "b"}') is an object, json('null') is null."""
    return parse_json("json", arg_str("json", args, 0))


@fn("null", 0, 0)
def null(args: list[Any]) -> None:
    return None


@fn("objectKeys", 1, 1)
def object_keys(args: list[Any]) -> list[str]:
    return list(arg_object("objectKeys", args, 0))


@fn("shallowMerge", 1, 1)
def shallow_merge(args: list[Any]) -> dict[str, Any]:
    """Merge an array of objects; later objects replace earlier top-level properties wholesale."""
    merged: dict[str, Any] = {}
    for i, item in enumerate(arg_array("shallowMerge", args, 0)):
        if item is None:
            continue
        if not isinstance(item, dict):
            raise fail("shallowMerge", f"expects an array of objects, but element {i} is of type {type_name(item)}.")
        merged.update(item)
    return merged


@fn("tryGet", 2, None)
def try_get(args: list[Any]) -> Any:
    """tryGet(value, key or index, ...): the value at that path, or null where any step is missing."""
    value = args[0]
    for key in args[1:]:
        if isinstance(value, dict) and isinstance(key, str):
            match = next((k for k in value if k.lower() == key.lower()), None) if key not in value else key
            value = None if match is None else value[match]
        elif isinstance(value, list) and is_int(key):
            value = value[key] if 0 <= key < len(value) else None
        elif value is None:
            return None
        else:
            raise fail("tryGet", f"can't look up a {type_name(key)} key in a value of type {type_name(value)}.")
    return value
