"""Logical functions (template-functions-logical). The evaluator handles `if` itself so that only the
chosen branch is evaluated; the eager version here serves callers that hold evaluated arguments."""

from __future__ import annotations

from typing import Any

from ..expressions import Function
from ._common import arg_bool, bad_arg, is_number, registrar

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)


@fn("and", 2, None)
def and_(args: list[Any]) -> bool:
    values = [arg_bool("and", args, i) for i in range(len(args))]
    return all(values)


@fn("or", 2, None)
def or_(args: list[Any]) -> bool:
    values = [arg_bool("or", args, i) for i in range(len(args))]
    return any(values)


@fn("not", 1, 1)
def not_(args: list[Any]) -> bool:
    return not arg_bool("not", args, 0)


@fn("bool", 1, 1)
def bool_(args: list[Any]) -> bool:
    """bool('true') / bool('False') / bool(1) / bool(0)."""
    value = args[0]
    if isinstance(value, bool):
        return value
    if is_number(value):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise bad_arg("bool", args, 0, "a bool, an integer or the string 'true' or 'false'")


@fn("true", 0, 0)
def true(args: list[Any]) -> bool:
    return True


@fn("false", 0, 0)
def false(args: list[Any]) -> bool:
    return False


@fn("if", 3, 3)
def if_(args: list[Any]) -> Any:
    return args[1] if arg_bool("if", args, 0) else args[2]
