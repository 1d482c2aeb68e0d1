"""What the function families share: registration with an arity check, argument checks with ARM-style
messages, and ARM's value semantics (equality, string conversion, string ordering, JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..expressions import MAX_STRING, Function, Lambda, TemplateExpressionError, fits_as_json, type_name

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ORDINALS = ("first", "second", "third", "fourth", "fifth")


def registrar(table: dict[str, Function]) -> Callable[..., Callable[[Function], Function]]:
    """`fn = registrar(FUNCTIONS)`, then `@fn("padLeft", 2, 3)` registers a function under its lower-case
    name, wrapped in a check of its argument count (max_args None: no upper limit)."""

    def register(name: str, min_args: int, max_args: int | None) -> Callable[[Function], Function]:
        def decorate(function: Function) -> Function:
            def checked(args: list[Any]) -> Any:
                if len(args) < min_args or (max_args is not None and len(args) > max_args):
                    raise fail(name, f"expects {_arity(min_args, max_args)}, got {len(args)}.")
                return function(args)

            checked.__name__ = function.__name__
            checked.__doc__ = function.__doc__
            table[name.lower()] = checked
            return function

        return decorate

    return register


def _arity(low: int, high: int | None) -> str:
    def count(n: int) -> str:
        return f"{n} parameter{'' if n == 1 else 's'}"

    if high == low:
        return "no parameters" if low == 0 else f"exactly {count(low)}"
    if high is None:
        return f"at least {count(low)}"
    return f"between {low} and {count(high)}"


def fail(name: str, problem: str) -> TemplateExpressionError:
    return TemplateExpressionError(f"The template function '{name}' {problem}")


def ordinal(i: int) -> str:
    return _ORDINALS[i] if i < len(_ORDINALS) else f"#{i + 1}"


def bad_arg(name: str, args: list[Any], i: int, wanted: str) -> TemplateExpressionError:
    return fail(name, f"expects its {ordinal(i)} parameter to be {wanted}, got {type_name(args[i])}.")


# --- types ----------------------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def arg_str(name: str, args: list[Any], i: int) -> str:
    if not isinstance(args[i], str):
        raise bad_arg(name, args, i, "a string")
    return args[i]


def arg_int(name: str, args: list[Any], i: int) -> int:
    if not is_int(args[i]):
        raise bad_arg(name, args, i, "an integer")
    return args[i]


def arg_bool(name: str, args: list[Any], i: int) -> bool:
    if not isinstance(args[i], bool):
        raise bad_arg(name, args, i, "a bool")
    return args[i]


def arg_array(name: str, args: list[Any], i: int) -> list[Any]:
    if not isinstance(args[i], list):
        raise bad_arg(name, args, i, "an array")
    return args[i]


def arg_object(name: str, args: list[Any], i: int) -> dict[str, Any]:
    if not isinstance(args[i], dict):
        raise bad_arg(name, args, i, "an object")
    return args[i]


def arg_lambda(name: str, args: list[Any], i: int, *arities: int) -> Lambda:
    value = args[i]
    if not isinstance(value, Lambda):
        raise bad_arg(name, args, i, "a lambda")
    if value.arity not in arities:
        counts = " or ".join(str(n) for n in arities)
        raise fail(name, f"expects its {ordinal(i)} parameter to be a lambda with {counts} variable(s), got "
                   f"one with {value.arity}.")
    return value


def check_int64(name: str, value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise fail(name, "produced a value outside the range of a 64-bit integer.")
    return value


# --- semantics ------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """ARM's deep equality: types matter (1 is not true()), strings are case-sensitive, object keys are
    compared by name and not by order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def contains_value(items: list[Any], value: Any) -> bool:
    return any(same(item, value) for item in items)


def string_key(value: str) -> tuple[str, tuple[bool, ...]]:
    """Sort key approximating .NET's culture-aware (invariant) string order, which ARM's comparison
    functions use: letters compare case-insensitively first, then lower case sorts before upper case at
    the first difference (so 'a' < 'A' < 'b')."""
    return value.casefold(), tuple(not c.islower() for c in value)


def compare_strings(a: str, b: str) -> int:
    ka, kb = string_key(a), string_key(b)
    return (ka > kb) - (ka < kb)


def number_text(value: int | float) -> str:
    """A number as .NET prints it with ToString(): 1.0 prints as '1'."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value).replace("e+", "E+").replace("e-", "E-")
    return str(value)


def to_json(value: Any) -> str:
    """Compact JSON, as ARM's string() serialises arrays and objects."""
    # Measured first: an array holding the same array twice, nested, doubles in size per level.
    if not fits_as_json(value, MAX_STRING):
        raise TemplateExpressionError(f"The value is longer than {MAX_STRING} characters as JSON.")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (RecursionError, ValueError) as e:
        raise TemplateExpressionError(f"The value can't be written as JSON: {e}") from None


def text(value: Any) -> str:
    """A value converted to a string the way ARM's concat/format/string do: bools as True/False (.NET),
    numbers plainly, null as the empty string, arrays and objects as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if is_number(value):
        return number_text(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return to_json(value)
    raise TemplateExpressionError(f"A value of type {type_name(value)} can't be converted to a string.")


def parse_json(name: str, source: str) -> Any:
    """JSON as ARM (Newtonsoft) reads it, which also accepts single-quoted strings."""
    try:
        return json.loads(source)
    except RecursionError:
        raise fail(name, "can't parse its argument as JSON: it is nested too deeply.") from None
    except json.JSONDecodeError as first:
        try:
            return json.loads(_requote(source))
        except (json.JSONDecodeError, RecursionError):
            raise fail(name, f"can't parse its argument as JSON: {first.msg} at character {first.pos + 1}.") \
                from None


def _requote(source: str) -> str:
    """Rewrite single-quoted JSON strings as double-quoted ones."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c not in "'\"":
            out.append(c)
            i += 1
            continue
        j = i + 1
        body: list[str] = []
        while j < n and source[j] != c:
            if source[j] == "\\" and j + 1 < n:
                body.append("'" if source[j + 1] == "'" else source[j:j + 2])
                j += 2
                continue
            body.append('\\"' if source[j] == '"' else source[j])
            j += 1
        out.append('"' + "".join(body) + '"')
        i = j + 1
    return "".join(out)
