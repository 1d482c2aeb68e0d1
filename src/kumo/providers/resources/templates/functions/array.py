"""Array functions (template-functions-array). Functions that Azure lists under several families
(concat, contains, empty, first, last, indexOf, lastIndexOf, intersection, union, length, skip, take)
live here and accept strings and objects too; min and max are in numeric."""

from __future__ import annotations

from typing import Any

from ..expressions import Function, type_name
from ._common import (
    arg_array,
    arg_int,
    arg_object,
    bad_arg,
    contains_value,
    fail,
    ordinal,
    registrar,
    same,
    string_key,
    text,
)

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)


@fn("array", 1, 1)
def array(args: list[Any]) -> list[Any]:
    return args[0] if isinstance(args[0], list) else [args[0]]


@fn("createArray", 0, None)
def create_array(args: list[Any]) -> list[Any]:
    return list(args)


@fn("concat", 1, None)
def concat(args: list[Any]) -> str | list[Any]:
    """Arrays concatenate with arrays; otherwise strings (and numbers, as ARM allows concat('vm', 1))."""
    if any(isinstance(a, list) for a in args):
        result: list[Any] = []
        for i, a in enumerate(args):
            if isinstance(a, list):
                result.extend(a)
            elif a is not None:
                raise fail("concat", f"can't combine arrays with a {type_name(a)} (its {ordinal(i)} parameter).")
        return result
    for i, a in enumerate(args):
        if isinstance(a, dict):
            raise bad_arg("concat", args, i, "a string or an array")
    return "".join(text(a) for a in args)


@fn("contains", 2, 2)
def contains(args: list[Any]) -> bool:
    """Arrays by value, objects by key (case-insensitive), strings by substring (case-sensitive)."""
    container, item = args
    if isinstance(container, list):
        return contains_value(container, item)
    if isinstance(container, dict):
        key = text(item).lower()
        return any(k.lower() == key for k in container)
    if isinstance(container, str):
        return text(item) in container
    raise bad_arg("contains", args, 0, "an array, object or string")


@fn("empty", 1, 1)
def empty(args: list[Any]) -> bool:
    value = args[0]
    if value is None:
        return True
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    raise bad_arg("empty", args, 0, "an array, object or string")


@fn("length", 1, 1)
def length(args: list[Any]) -> int:
    if isinstance(args[0], (str, list, dict)):
        return len(args[0])
    raise bad_arg("length", args, 0, "an array, object or string")


@fn("first", 1, 1)
def first(args: list[Any]) -> Any:
    value = args[0]
    if isinstance(value, (str, list)):
        return value[0] if value else (None if isinstance(value, list) else "")
    if value is None:
        return None
    raise bad_arg("first", args, 0, "an array or string")


@fn("last", 1, 1)
def last(args: list[Any]) -> Any:
    value = args[0]
    if isinstance(value, (str, list)):
        return value[-1] if value else (None if isinstance(value, list) else "")
    if value is None:
        return None
    raise bad_arg("last", args, 0, "an array or string")


def _find(name: str, args: list[Any], reverse: bool) -> int:
    """Strings: case-insensitive substring position; arrays: position of an equal element; -1 if absent."""
    container, item = args
    if isinstance(container, str):
        haystack, needle = container.lower(), text(item).lower()
        return haystack.rfind(needle) if reverse else haystack.find(needle)
    if isinstance(container, list):
        positions = range(len(container) - 1, -1, -1) if reverse else range(len(container))
        return next((i for i in positions if same(container[i], item)), -1)
    raise bad_arg(name, args, 0, "an array or string")


@fn("indexOf", 2, 2)
def index_of(args: list[Any]) -> int:
    return _find("indexOf", args, reverse=False)


@fn("lastIndexOf", 2, 2)
def last_index_of(args: list[Any]) -> int:
    return _find("lastIndexOf", args, reverse=True)


def _count(name: str, args: list[Any]) -> tuple[str | list[Any], int]:
    if not isinstance(args[0], (str, list)):
        raise bad_arg(name, args, 0, "an array or string")
    return args[0], max(arg_int(name, args, 1), 0)


@fn("skip", 2, 2)
def skip(args: list[Any]) -> str | list[Any]:
    original, count = _count("skip", args)
    return original[count:]


@fn("take", 2, 2)
def take(args: list[Any]) -> str | list[Any]:
    original, count = _count("take", args)
    return original[:count]


@fn("range", 2, 2)
def range_(args: list[Any]) -> list[int]:
    start, count = arg_int("range", args, 0), arg_int("range", args, 1)
    if count < 0 or count > 10000:
        raise fail("range", f"expects a count between 0 and 10000, got {count}.")
    if start + count > 2**31 - 1:
        raise fail("range", "expects the sum of startIndex and count to be at most 2147483647.")
    return list(range(start, start + count))


@fn("flatten", 1, 1)
def flatten(args: list[Any]) -> list[Any]:
    result: list[Any] = []
    for i, item in enumerate(arg_array("flatten", args, 0)):
        if not isinstance(item, list):
            raise fail("flatten", f"expects an array of arrays, but element {i} is of type {type_name(item)}.")
        result.extend(item)
    return result


def _collections(name: str, args: list[Any]) -> type:
    """Arrays or objects, not a mix (null arguments are ignored)."""
    kinds = {type(a) for a in args if a is not None}
    if kinds == {list} or kinds == {dict}:
        return kinds.pop()
    raise fail(name, "expects all its parameters to be arrays or all of them to be objects, got "
               f"{', '.join(type_name(a) for a in args)}.")


@fn("intersection", 2, None)
def intersection(args: list[Any]) -> list[Any] | dict[str, Any]:
    values = [a for a in args if a is not None]
    if _collections("intersection", args) is list:
        result: list[Any] = []
        for item in values[0]:
            if not contains_value(result, item) and all(contains_value(other, item) for other in values[1:]):
                result.append(item)
        return result
    return {k: v for k, v in values[0].items() if all(k in o and same(o[k], v) for o in values[1:])}


def _merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    # ARM merges nested objects deeply; anything else (arrays included) is replaced by the later value.
    for key, value in new.items():
        current = into.get(key)
        into[key] = _merge(dict(current), value) if isinstance(current, dict) and isinstance(value, dict) else value
    return into


@fn("union", 1, None)
def union(args: list[Any]) -> list[Any] | dict[str, Any]:
    values = [a for a in args if a is not None]
    if _collections("union", args) is list:
        result: list[Any] = []
        for value in values:
            for item in value:
                if not contains_value(result, item):
                    result.append(item)
        return result
    merged: dict[str, Any] = {}
    for value in values:
        _merge(merged, value)
    return merged


@fn("items", 1, 1)
def items(args: list[Any]) -> list[dict[str, Any]]:
    """An object's entries as [{key, value}], sorted by key as ARM sorts them."""
    obj = arg_object("items", args, 0)
    return [{"key": k, "value": obj[k]} for k in sorted(obj, key=string_key)]


def _from_end(name: str, args: list[Any], strict: bool) -> Any:
    array_, position = arg_array(name, args, 0), arg_int(name, args, 1)
    if 1 <= position <= len(array_):
        return array_[-position]
    if strict:
        raise fail(name, f"expects a reverse index between 1 and {len(array_)}, got {position}.")
    return None


@fn("indexFromEnd", 2, 2)
def index_from_end(args: list[Any]) -> Any:
    """indexFromEnd(array, 1) is the last element."""
    return _from_end("indexFromEnd", args, strict=True)


@fn("tryIndexFromEnd", 2, 2)
def try_index_from_end(args: list[Any]) -> Any:
    return _from_end("tryIndexFromEnd", args, strict=False)

