"""ARM template language expressions: the text of a JSON string value such as
"[concat('vm-', parameters('name'))]".

A tokenizer and a recursive-descent parser turn the text inside the brackets into a tree of immutable
nodes (cached per text: a large template repeats the same expressions many times); the evaluator walks
the tree with a table of functions. Function names are case-insensitive (the table's keys are
lower-case). `if`, `lambda` and `lambdaVariables` are special forms evaluated here, because `if` must
evaluate only the chosen branch and a lambda's body must not be evaluated until it is called.

Grammar (whitespace allowed between tokens):

    expression := primary postfix*
    primary    := 'string' | integer | name ['.' name] '(' [expression (',' expression)*] ')'
    postfix    := '.' name | '?.' name | '[' expression ']' | '?[' expression ']'

Strings use single quotes with '' as the escape. There are no float, boolean or null literals: ARM
spells those float('1.5'), true(), false() and null(). `ns.fn(...)` calls a user-defined function,
looked up as 'ns.fn'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

Function = Callable[[list[Any]], Any]

# Bounds that keep a hostile template from taking unbounded time, memory or stack. The length is
# Azure's documented limit for one expression; the others are far above what real templates need.
MAX_EXPRESSION_LENGTH = 24_576
MAX_NESTING = 64  # calls and indexes inside one another (the parser and evaluator recurse per level)
MAX_CALLS = 250_000  # function and lambda calls in one evaluation (nested map/reduce over range())
MAX_STRING = 4 * 1024 * 1024  # characters in one value: ARM's request limit is 4 MB
MAX_ITEMS = 100_000  # elements or properties in one array or object
MAX_NODES = 1_000_000  # values in one result, counted as a walk (shared sub-arrays count every time)


class TemplateExpressionError(Exception):
    """A malformed expression or a failed evaluation. `position` is the 1-based character position in
    `expression` (the text the position refers to), when known."""

    def __init__(self, message: str, position: int | None = None, expression: str | None = None):
        super().__init__(message, position, expression)
        self.message = message
        self.position = position
        self.expression = expression

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        where = f"at character {self.position}"
        if self.expression is not None:
            where += f" of '{self.expression}'"
        return f"{self.message} ({where})"


def type_name(value: Any) -> str:
    """The ARM name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, Lambda):
        return "lambda"
    return type(value).__name__


# --- tokens ---------------------------------------------------------------------------------------


class Token(NamedTuple):
    kind: str  # 'string', 'int', 'name', 'eof', or the punctuation itself: ( ) [ ] , . ?. ?[
    value: Any
    pos: int  # 1-based


_SPACE = re.compile(r"\s+")
_STRING = re.compile(r"'(?:[^']|'')*'")
_INT = re.compile(r"-?\d+")
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_PUNCT = ("?.", "?[", "(", ")", "[", "]", ",", ".")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        if m := _SPACE.match(text, i):
            i = m.end()
            continue
        c = text[i]
        if c == "'":
            m = _STRING.match(text, i)
            if m is None:
                raise TemplateExpressionError("The string literal is not terminated (a closing ' is missing).",
                                              i + 1, text)
            tokens.append(Token("string", m.group()[1:-1].replace("''", "'"), i + 1))
        elif m := _INT.match(text, i):
            if text.startswith(".", m.end()) and m.end() + 1 < n and text[m.end() + 1].isdigit():
                raise TemplateExpressionError("Template expressions have no floating-point literals; "
                                              "use float('1.5') instead.", i + 1, text)
            tokens.append(Token("int", int(m.group()), i + 1))
        elif m := _NAME.match(text, i):
            tokens.append(Token("name", m.group(), i + 1))
        else:
            punct = next((p for p in _PUNCT if text.startswith(p, i)), None)
            if punct is None:
                raise TemplateExpressionError(f"The character '{c}' is not expected here.", i + 1, text)
            tokens.append(Token(punct, punct, i + 1))
            i += len(punct)
            continue
        i = m.end()
    tokens.append(Token("eof", None, n + 1))
    return tokens


# --- nodes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | int
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # as written, for messages
    args: tuple[Node, ...]
    pos: int
    key: str = field(init=False, repr=False, compare=False)  # the lower-case name functions are looked up by

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.name.lower())


@dataclass(frozen=True, slots=True)
class Property:
    target: Node
    name: str
    pos: int
    safe: bool  # ?.


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    index: Node
    pos: int
    safe: bool  # ?[


Node = Literal | Call | Property | Index


# --- parser ---------------------------------------------------------------------------------------


def _describe(token: Token) -> str:
    if token.kind == "eof":
        return "the end of the expression"
    if token.kind == "string":
        return f"the string '{token.value}'"
    return f"'{token.value}'"


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def error(self, message: str, token: Token) -> TemplateExpressionError:
        return TemplateExpressionError(message, token.pos, self.text)

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def expect(self, kind: str, context: str) -> Token:
        token = self.take()
        if token.kind != kind:
            raise self.error(f"Expected '{kind}' {context} but found {_describe(token)}.", token)
        return token

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise self.error("The template language expression is empty.", self.peek())
        node = self.expression()
        token = self.peek()
        if token.kind != "eof":
            raise self.error(f"Unexpected {_describe(token)}; expected the end of the expression.", token)
        return node

    def expression(self) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise self.error(f"The expression nests calls and indexes more than {MAX_NESTING} levels deep.",
                                 self.peek())
            return self._expression()
        finally:
            self.depth -= 1

    def _expression(self) -> Node:
        node = self.primary()
        while True:
            token = self.peek()
            if token.kind in (".", "?."):
                self.take()
                name = self.take()
                if name.kind != "name":
                    raise self.error(f"Expected a property name after '{token.kind}' but found {_describe(name)}.",
                                     name)
                node = Property(node, name.value, token.pos, token.kind == "?.")
            elif token.kind in ("[", "?["):
                self.take()
                index = self.expression()
                self.expect("]", f"to close the index that '{token.kind}' opened")
                node = Index(node, index, token.pos, token.kind == "?[")
            else:
                return node

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("string", "int"):
            return Literal(token.value, token.pos)
        if token.kind != "name":
            raise self.error(f"Expected a function call, a string or an integer but found {_describe(token)}.",
                             token)
        name = token.value
        if self.peek().kind == "." and self.peek(1).kind == "name" and self.peek(2).kind == "(":
            self.take()
            name += "." + self.take().value  # a user-defined function: namespace.name(...)
        if self.peek().kind != "(":
            hint = " (use true(), false() or null())" if name.lower() in ("true", "false", "null") else ""
            raise self.error(f"'{name}' must be followed by '(': template expressions have no bare names{hint}.",
                             token)
        self.take()
        args: list[Node] = []
        if self.peek().kind == ")":
            self.take()
        else:
            while True:
                args.append(self.expression())
                sep = self.take()
                if sep.kind == ")":
                    break
                if sep.kind != ",":
                    raise self.error(f"Expected ',' or ')' in the arguments of '{name}' but found {_describe(sep)}.",
                                     sep)
        return Call(name, tuple(args), token.pos)


@lru_cache(maxsize=16384)
def parse(expression: str) -> Node:
    """Parse the text inside the brackets of a template expression (positions are 1-based in it)."""
    return _Parser(expression).parse()


# --- evaluator ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    functions: Mapping[str, Function]
    offset: int  # added to node positions: 1 when the text shown in errors includes the leading '['
    text: str | None  # the text errors refer to
    calls: list[int] = field(default_factory=lambda: [0])  # shared by the lambdas the evaluation makes


class Lambda:
    """What lambda('x', body) evaluates to: a callable for filter/map/reduce/sort/toObject/... to call
    with as many values as it has variables."""

    __slots__ = ("names", "_body", "_context", "_scope")

    def __init__(self, names: tuple[str, ...], body: Node, context: _Context, scope: dict[str, Any]):
        self.names = names
        self._body = body
        self._context = context
        self._scope = scope

    @property
    def arity(self) -> int:
        return len(self.names)

    def __call__(self, *values: Any) -> Any:
        if len(values) != len(self.names):
            raise TemplateExpressionError(f"The lambda with variables {', '.join(self.names)} expects "
                                          f"{len(self.names)} value(s) but was given {len(values)}.")
        self._context.calls[0] += 1
        if self._context.calls[0] > MAX_CALLS:
            raise TemplateExpressionError(f"The expression makes more than {MAX_CALLS} function calls.")
        scope = dict(self._scope)
        scope.update(zip((name.lower() for name in self.names), values, strict=True))
        return _eval(self._body, self._context, scope)

    def __repr__(self) -> str:
        return f"<lambda {', '.join(self.names)}>"


def _locate(error: TemplateExpressionError, pos: int, context: _Context) -> TemplateExpressionError:
    # The innermost node that knows its position claims the error; outer ones leave it alone.
    if error.position is None:
        error.position = pos + context.offset
        if error.expression is None:
            error.expression = context.text
    return error


def _eval(node: Node, context: _Context, scope: dict[str, Any]) -> Any:
    kind = type(node)
    if kind is Literal:
        return node.value
    if kind is Call:
        return _call(node, context, scope)
    return _access(node, context, scope)[0]


def _call(node: Call, context: _Context, scope: dict[str, Any]) -> Any:
    key = node.key
    try:
        if key == "if":
            return _if(node, context, scope)
        if key == "lambda":
            return _lambda(node, context, scope)
        if key == "lambdavariables":
            return _lambda_variable(node, context, scope)
        function = context.functions.get(key)
        if function is None:
            raise TemplateExpressionError(f"The template function '{node.name}' is not valid. Please see "
                                          "https://aka.ms/arm-functions for usage details.")
        context.calls[0] += 1
        if context.calls[0] > MAX_CALLS:
            raise TemplateExpressionError(f"The expression makes more than {MAX_CALLS} function calls.")
        return check_size(node.name, function([_eval(arg, context, scope) for arg in node.args]))
    except TemplateExpressionError as e:
        _locate(e, node.pos, context)
        raise
    except (TypeError, ValueError, ArithmeticError, LookupError) as e:
        error = TemplateExpressionError(f"The template function '{node.name}' failed: {e}")
        raise _locate(error, node.pos, context) from e


def _if(node: Call, context: _Context, scope: dict[str, Any]) -> Any:
    if len(node.args) != 3:
        raise TemplateExpressionError("The template function 'if' expects exactly 3 parameters (condition, "
                                      f"trueValue, falseValue), got {len(node.args)}.")
    condition = _eval(node.args[0], context, scope)
    if not isinstance(condition, bool):
        raise TemplateExpressionError("The template function 'if' expects its condition to be a bool, got "
                                      f"{type_name(condition)}.")
    return _eval(node.args[1 if condition else 2], context, scope)


def _lambda(node: Call, context: _Context, scope: dict[str, Any]) -> Lambda:
    if len(node.args) < 2:
        raise TemplateExpressionError("The template function 'lambda' expects one or more variable names "
                                      "followed by the lambda's body.")
    names: list[str] = []
    for arg in node.args[:-1]:
        if type(arg) is not Literal or not isinstance(arg.value, str) or not _NAME.fullmatch(arg.value):
            error = TemplateExpressionError("A lambda variable name must be a string literal such as 'x'.")
            raise _locate(error, arg.pos, context)
        if arg.value.lower() in (name.lower() for name in names):
            raise _locate(TemplateExpressionError(f"The lambda variable '{arg.value}' is declared twice."),
                          arg.pos, context)
        names.append(arg.value)
    return Lambda(tuple(names), node.args[-1], context, scope)


def _lambda_variable(node: Call, context: _Context, scope: dict[str, Any]) -> Any:
    if len(node.args) != 1:
        raise TemplateExpressionError("The template function 'lambdaVariables' expects exactly 1 parameter, "
                                      f"got {len(node.args)}.")
    name = _eval(node.args[0], context, scope)
    if not isinstance(name, str):
        raise TemplateExpressionError(f"The template function 'lambdaVariables' expects a string, got "
                                      f"{type_name(name)}.")
    if name.lower() not in scope:
        where = f"the variables in scope are {', '.join(scope)}" if scope else "it can only be used in a lambda's body"
        raise TemplateExpressionError(f"The lambda variable '{name}' is not defined: {where}.")
    return scope[name.lower()]


_MISSING = object()


def _access(node: Node, context: _Context, scope: dict[str, Any]) -> tuple[Any, bool]:
    """Evaluate a chain of .name / [index] accesses; the flag says a null-safe access (?. ?[) found
    nothing, which short-circuits the rest of the chain to null."""
    if type(node) not in (Property, Index):
        return _eval(node, context, scope), False
    base, short = _access(node.target, context, scope)
    if short or (node.safe and base is None):
        return None, True
    try:
        if type(node) is Property:
            value = _property(base, node.name, node.safe)
        else:
            value = _index(base, _eval(node.index, context, scope), node.safe)
    except TemplateExpressionError as e:
        _locate(e, node.pos, context)
        raise
    if value is _MISSING:
        return None, True
    return value, False


def _property(base: Any, name: str, safe: bool) -> Any:
    if isinstance(base, dict):
        if name in base:
            return base[name]
        lowered = name.lower()
        for key, value in base.items():
            if key.lower() == lowered:
                return value
        if safe:
            return _MISSING
        available = ", ".join(base) or "none"
        raise TemplateExpressionError(f"The language expression property '{name}' doesn't exist, available "
                                      f"properties are '{available}'.")
    if base is None:
        raise TemplateExpressionError(f"The language expression property '{name}' can't be evaluated because "
                                      "the value is null (use '?.' to allow null).")
    raise TemplateExpressionError(f"The language expression property '{name}' can't be evaluated on a value of "
                                  f"type {type_name(base)}; only objects have properties.")


def _index(base: Any, index: Any, safe: bool) -> Any:
    if isinstance(base, list):
        if not isinstance(index, int) or isinstance(index, bool):
            raise TemplateExpressionError(f"An array can only be indexed by an integer, not by a value of type "
                                          f"{type_name(index)}.")
        if 0 <= index < len(base):
            return base[index]
        if safe:
            return _MISSING
        raise TemplateExpressionError(f"The language expression array index '{index}' is out of bounds: the "
                                      f"array has {len(base)} element(s).")
    if isinstance(base, dict):
        if not isinstance(index, str):
            raise TemplateExpressionError(f"An object can only be indexed by a string, not by a value of type "
                                          f"{type_name(index)}.")
        return _property(base, index, safe)
    if base is None:
        raise TemplateExpressionError("The value is null and can't be indexed (use '?[' to allow null).")
    raise TemplateExpressionError(f"A value of type {type_name(base)} can't be indexed; only arrays and objects "
                                  "can.")


def _result(value: Any) -> Any:
    if isinstance(value, Lambda):
        raise TemplateExpressionError("A lambda can only be passed to a function that takes one (filter, map, "
                                      "reduce, sort, toObject, mapValues, groupBy).")
    _check_tree(value)
    return value


def check_size(name: str, value: Any) -> Any:
    """A function's result, refused when one string, array or object is too large (an O(1) check, so
    repeated doubling stops at twice the limit)."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise TemplateExpressionError(f"The template function '{name}' produced a string longer than "
                                      f"{MAX_STRING} characters.")
    if isinstance(value, (list, dict)) and len(value) > MAX_ITEMS:
        raise TemplateExpressionError(f"The template function '{name}' produced an {type_name(value)} with more "
                                      f"than {MAX_ITEMS} items.")
    return value


def fits_as_json(value: Any, limit: int) -> bool:
    """Whether `value` written as JSON stays within about `limit` characters (a walk that stops early)."""
    stack, size = [value], 0
    while stack:
        v = stack.pop()
        size += len(v) + 3 if isinstance(v, str) else 2  # with its quotes and the comma after it
        if size > limit:
            return False
        if isinstance(v, dict):
            size += sum(len(k) + 3 for k in v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


def _check_tree(value: Any) -> None:
    """Refuse a result whose serialised form would be huge or too deep (arrays that hold the same array
    twice double at each level) or that holds a number JSON can't carry (float('1e400'))."""
    stack, seen = [(value, 1)], 0
    while stack:
        v, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES or depth > MAX_NESTING * 2:
            raise TemplateExpressionError(f"The expression's value is too large or nested too deeply (more than "
                                          f"{MAX_NODES} values or {MAX_NESTING * 2} levels).")
        if isinstance(v, float) and not math.isfinite(v):
            raise TemplateExpressionError(f"The expression's value holds the number {v}, which is not finite.")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


# --- public entry points --------------------------------------------------------------------------


def is_expression(value: str) -> bool:
    """A JSON string is an expression when it is wrapped in [ ] and doesn't start with the '[[' escape."""
    return len(value) >= 2 and value[0] == "[" and value[-1] == "]" and value[1] != "["


def unescape(value: str) -> str:
    """'[[foo]' is the escape for the literal '[foo]'; other strings are returned unchanged."""
    if value.startswith("[[") and value.endswith("]"):
        return value[1:]
    return value


def evaluate(node: Node, functions: Mapping[str, Function]) -> Any:
    """Evaluate a parsed expression; `functions` is keyed by lower-case function name."""
    return _result(_eval(node, _Context(functions, 0, None), {}))


def evaluate_string(value: str, functions: Mapping[str, Function]) -> Any:
    """Evaluate a JSON string value: an expression, an escaped '[[...]' literal or a plain string.
    Error positions refer to `value` itself (so the leading '[' is character 1)."""
    if not is_expression(value):
        return unescape(value)
    if len(value) > MAX_EXPRESSION_LENGTH:
        raise TemplateExpressionError(f"The template language expression is {len(value)} characters long; the "
                                      f"limit is {MAX_EXPRESSION_LENGTH}.")
    try:
        node = parse(value[1:-1])
    except TemplateExpressionError as e:
        position = None if e.position is None else e.position + 1
        raise TemplateExpressionError(e.message, position, value) from None
    try:
        return _result(_eval(node, _Context(functions, 1, value), {}))
    except RecursionError:  # a lambda that recurses through user functions: refused, not a crash
        raise TemplateExpressionError("The expression recurses too deeply.", None, value) from None


def evaluate_json(value: Any, functions: Mapping[str, Function]) -> Any:
    """Evaluate every string (values and object keys) in a JSON value, returning a new value."""
    if isinstance(value, str):
        return evaluate_string(value, functions)
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = evaluate_string(key, functions)
            if not isinstance(name, str):
                raise TemplateExpressionError(f"The property name '{key}' must evaluate to a string, got "
                                              f"{type_name(name)}.")
            result[name] = evaluate_json(item, functions)
        return result
    if isinstance(value, list):
        return [evaluate_json(item, functions) for item in value]
    return value
