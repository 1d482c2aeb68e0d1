"""Numeric functions (template-functions-numeric). ARM integers are 64-bit; div and mod truncate toward
zero as .NET does (div(-7, 2) is -3 and mod(-7, 2) is -1), unlike Python's // and %."""

from __future__ import annotations

import re
from typing import Any

from ..expressions import Function
from ._common import arg_int, bad_arg, check_int64, fail, is_int, is_number, registrar

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)

_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _operands(name: str, args: list[Any]) -> tuple[int, int]:
    return arg_int(name, args, 0), arg_int(name, args, 1)


def _truncated_division(name: str, a: int, b: int) -> int:
    if b == 0:
        raise fail(name, "can't divide by zero.")
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


@fn("add", 2, 2)
def add(args: list[Any]) -> int:
    a, b = _operands("add", args)
    return check_int64("add", a + b)


@fn("sub", 2, 2)
def sub(args: list[Any]) -> int:
    a, b = _operands("sub", args)
    return check_int64("sub", a - b)


@fn("mul", 2, 2)
def mul(args: list[Any]) -> int:
    a, b = _operands("mul", args)
    return check_int64("mul", a * b)


@fn("div", 2, 2)
def div(args: list[Any]) -> int:
    a, b = _operands("div", args)
    return check_int64("div", _truncated_division("div", a, b))


@fn("mod", 2, 2)
def mod(args: list[Any]) -> int:
    a, b = _operands("mod", args)
    return a - b * _truncated_division("mod", a, b)


@fn("int", 1, 1)
def int_(args: list[Any]) -> int:
    """int('4') is 4; a float is rounded half to even, as .NET's Convert.ToInt64 does."""
    value = args[0]
    if is_int(value):
        return value
    if isinstance(value, float):
        return check_int64("int", round(value))
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return check_int64("int", int(value))
    raise bad_arg("int", args, 0, "an integer or a string holding one")


@fn("float", 1, 1)
def float_(args: list[Any]) -> float:
    value = args[0]
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise bad_arg("float", args, 0, "a number or a string holding one")


def _numbers(name: str, args: list[Any]) -> list[int | float]:
    """min/max take integers, or arrays of them: max(1, 2) and max(createArray(1, 2))."""
    values: list[Any] = []
    for i, arg in enumerate(args):
        items = arg if isinstance(arg, list) else [arg]
        for item in items:
            if not is_number(item):
                raise bad_arg(name, args, i, "an integer or an array of integers")
            values.append(item)
    if not values:
        raise fail(name, "expects at least one integer.")
    return values


@fn("min", 1, None)
def min_(args: list[Any]) -> int | float:
    return min(_numbers("min", args))


@fn("max", 1, None)
def max_(args: list[Any]) -> int | float:
    return max(_numbers("max", args))
