"""Generators of ARM template expressions (any text, and well-formed calls of every function with hostile
arguments) and the check each must pass: a value or a TemplateExpressionError, within a time bound."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import strategies as st

from kumo.providers.resources.templates.expressions import TemplateExpressionError, evaluate_string
from kumo.providers.resources.templates.functions import PURE_FUNCTIONS

TIME_LIMIT = 10.0  # seconds for one expression, generous for a loaded 2-core machine
VALUES: dict[str, Any] = {"s": "text", "n": 7, "a": [1, [2, 3], {"k": "v"}], "o": {"a": {"b": [1, 2]}}, "z": None}


def _lookup(args: list[Any]) -> Any:
    if not args or not isinstance(args[0], str) or args[0] not in VALUES:
        raise TemplateExpressionError(f"The parameter '{args[0] if args else ''}' is not defined.")
    return VALUES[args[0]]


FUNCTIONS = {**PURE_FUNCTIONS, "parameters": _lookup, "variables": _lookup}
NAMES = sorted(PURE_FUNCTIONS) + ["parameters", "variables", "lambda", "lambdaVariables", "if", "nosuchfn",
                                  "ns.udf"]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# Literals that stress sizes and ranges: huge and negative ints, long strings, JSON-ish and format text.
_STRINGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["s", "n", "a", "o", "z", "x", "{0}", "{0,999999}", "{0,-5:N2}", "{0:D}", "[[]]", "P1Y",
                     "2020-01-01T00:00:00Z", "PT-99999999H", "[1,[2,{\"a\":3}]]", "{'a': 1}", "1e400", "NaN",
                     "http://a/b?c#d", "%zz", "!!!", "10.0.0.0/8", "a" * 300]),
)
_INTS = st.one_of(st.integers(-3, 12), st.integers(-(2**70), 2**70),
                  st.sampled_from([0, 10000, 10001, 2**31 - 1, 2**31, 2**63 - 1, -(2**63), 4 * 1024 * 1024 + 1]))
_LITERALS = st.one_of(_STRINGS.map(_quote), _INTS.map(str))


def _call(args: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(NAMES), args).map(lambda t: f"{t[0]}({', '.join(t[1])})")


def _postfix(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(inner, st.sampled_from([".a", "?.b", "[0]", "?[1]", "['k']", "[-1]", ".length"])).map(
        lambda t: t[0] + t[1])


EXPRESSIONS: st.SearchStrategy[str] = st.recursive(
    _LITERALS | _call(st.just([])),
    lambda inner: _call(st.lists(inner, max_size=4)) | _postfix(inner),
    max_leaves=25,
).map(lambda body: f"[{body}]")

# Calls whose argument types fit, so evaluation gets past type checks to the size and range edges.
_SHAPES = [
    "padLeft({s}, {i}, {c})", "padLeft({i}, {i})", "substring({s}, {i}, {i})", "substring({s}, {i})",
    "range({i}, {i})", "format({s}, {i}, {s})", "format({f}, {i})", "dateTimeAdd({d}, {s})",
    "dateTimeAdd({d}, {p})", "dateTimeFromEpoch({i})", "dateTimeToEpoch({s})", "skip({x}, {i})",
    "take({x}, {i})", "skip({s}, {i})", "take({s}, {i})", "split({s}, {s})", "replace({s}, {s}, {s})",
    "indexOf({s}, {s})", "lastIndexOf({x}, {i})", "uri({s}, {s})", "uriComponentToString({s})",
    "base64ToString({s})", "base64ToJson({s})", "dataUriToString({s})", "json({s})", "int({s})",
    "float({s})", "bool({s})", "guid({s}, {s})", "uniqueString({s})", "string({x})", "length({x})",
    "first({x})", "last({s})", "min({i}, {i})", "max({x})", "add({i}, {i})", "sub({i}, {i})",
    "mul({i}, {i})", "div({i}, {i})", "mod({i}, {i})", "indexFromEnd({x}, {i})", "tryIndexFromEnd({x}, {i})",
    "createObject({s}, {i}, {s}, {x})", "items(createObject({s}, {x}))", "toObject({x}, lambda('e', {s}))",
    "map(range(0, {i}), lambda('e', lambdaVariables('e')))", "flatten(createArray({x}, {x}))",
    "union({x}, {x})", "intersection({x}, {x})", "join(split({s}, {s}), {s})", "trim({s})", "toUpper({s})",
    "contains({x}, {i})", "startsWith({s}, {s})", "empty({x})", "coalesce(null(), {x})", "sort({x}, "
    "lambda('a', 'b', less(lambdaVariables('a'), lambdaVariables('b'))))", "parameters({s}){postfix}",
    "variables('o'){postfix}", "tryGet(variables('o'), {s}, {s})", "shallowMerge(createArray({x}, {x}))",
]
_SLOTS = {
    "s": _STRINGS.map(_quote), "i": _INTS.map(str), "c": st.sampled_from(["'0'", "'ab'", "''", "' '"]),
    "f": st.sampled_from(["'{0:N2}'", "'{0:D9}'", "'{0:X}'", "'{0:E99}'", "'{0:P}'", "'{0:#,##0.00}'",
                          "'{0,-999999}'", "'{0,999998}'", "'{1}'", "'{0:C}'", "'{{{0}}}'", "'{0:R}'"]),
    "d": st.sampled_from(["'2020-01-01'", "'9999-12-31T23:59:59Z'", "'0001-01-01'", "'2020-13-45'", "utcNow()"]),
    "p": st.sampled_from(["'P1Y'", "'-P1D'", "'PT1H'", "'P99999999Y'", "'PT9999999999S'", "'P'", "'1D'"]),
    "x": st.sampled_from(["range(0, 3)", "createArray()", "variables('a')", "variables('o')", "'str'", "null()",
                          "createArray(createArray(1), createArray(2))", "json('[1,[2,[3]]]')", "7"]),
    "postfix": st.sampled_from(["", ".a", "?.missing", "[0]", "?[5]", ".a.b[1]", "['a']['b'][-1]"]),
}


@st.composite
def _typed(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(_SHAPES))
    out, rest = [], shape
    while "{" in rest:
        head, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        out += [head, draw(_SLOTS[slot])]
    return "[" + "".join(out) + rest + "]"


TYPED: st.SearchStrategy[str] = _typed()

# Any text at all between the brackets, and any text with no brackets.
ANY_TEXT: st.SearchStrategy[str] = st.one_of(st.text(max_size=200).map(lambda t: f"[{t}]"), st.text(max_size=200))


def check(value: str) -> str:
    """Evaluate one JSON string value; return 'value' or 'error'. Any other exception, or taking longer
    than TIME_LIMIT, fails (raises AssertionError, or the exception itself)."""
    started = time.monotonic()
    try:
        evaluate_string(value, FUNCTIONS)
        outcome = "value"
    except TemplateExpressionError as e:
        assert str(e), "a template error must say what is wrong"
        outcome = "error"
    elapsed = time.monotonic() - started
    assert elapsed < TIME_LIMIT, f"{value[:200]!r} took {elapsed:.1f}s"
    return outcome


# Expressions built to exhaust memory, time or stack; each must end in a TemplateExpressionError.
_DOUBLE = "lambda('a', 'b', {op})"
BOMBS: dict[str, str] = {
    "nested calls": "[" + "concat(" * 5000 + "'a'" + ")" * 5000 + "]",
    "nested indexes": "[createArray(1)" + "[0]" * 3000 + "]",
    "long expression": "[concat(" + ",".join(["'x'"] * 10000) + ")]",
    "padLeft 2e9": "[padLeft('a', 2000000000, 'x')]",
    "format alignment": "[format('{0,999999999}', 1)]",
    "replace growth": "[replace(padLeft('a', 10000, 'a'), 'a', padLeft('b', 10000, 'b'))]",
    "array doubling": "[reduce(range(0, 60), createArray(1), "
                      + _DOUBLE.format(op="concat(lambdaVariables('a'), lambdaVariables('a'))") + ")]",
    "shared nesting": "[reduce(range(0, 60), createArray(1), "
                      + _DOUBLE.format(op="createArray(lambdaVariables('a'), lambdaVariables('a'))") + ")]",
    "string of shared nesting": "[string(reduce(range(0, 40), createArray(1), "
                                + _DOUBLE.format(op="createArray(lambdaVariables('a'), lambdaVariables('a'))")
                                + "))]",
    "string doubling": "[reduce(range(0, 60), 'ab', "
                       + _DOUBLE.format(op="concat(lambdaVariables('a'), lambdaVariables('a'))") + ")]",
    "nested map": "[length(map(range(0, 10000), lambda('x', map(range(0, 10000), lambda('y', "
                  "lambdaVariables('y'))))))]",
    "json nesting": "[json('" + "[" * 100_000 + "')]",
    "json infinity": "[json('1e400')]",
    "range huge": "[range(0, 2147483647)]",
}
TIME_BOMBS = ("nested map", "shared nesting", "string of shared nesting")  # threaten time, not memory
