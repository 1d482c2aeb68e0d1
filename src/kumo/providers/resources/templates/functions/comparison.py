"""Comparison functions (template-functions-comparison)."""

from __future__ import annotations

from typing import Any

from ..expressions import Function, type_name
from ._common import compare_strings, fail, is_number, registrar, same

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)


@fn("coalesce", 1, None)
def coalesce(args: list[Any]) -> Any:
    """The first argument that isn't null (empty strings, arrays and objects are not null)."""
    return next((a for a in args if a is not None), None)


@fn("equals", 2, 2)
def equals(args: list[Any]) -> bool:
    return same(args[0], args[1])


def _compare(name: str, args: list[Any]) -> int:
    """Integers numerically; strings in .NET's culture-aware order, in which 'A' is greater than 'a'."""
    a, b = args
    if is_number(a) and is_number(b):
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        return compare_strings(a, b)
    raise fail(name, f"expects two integers or two strings, got {type_name(a)} and {type_name(b)}.")


@fn("greater", 2, 2)
def greater(args: list[Any]) -> bool:
    return _compare("greater", args) > 0


@fn("greaterOrEquals", 2, 2)
def greater_or_equals(args: list[Any]) -> bool:
    return _compare("greaterOrEquals", args) >= 0


@fn("less", 2, 2)
def less(args: list[Any]) -> bool:
    return _compare("less", args) < 0


@fn("lessOrEquals", 2, 2)
def less_or_equals(args: list[Any]) -> bool:
    return _compare("lessOrEquals", args) <= 0
