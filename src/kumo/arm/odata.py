"""The OData `$filter` subset ARM list calls accept: `eq`/`ne` comparisons, `substringof`,
`startswith`, `and`/`or`/`not` and parentheses over a resource's name, type, location, resource
group and tags (`tagName eq 'k' and tagValue eq 'v'`). Parsed with a tokenizer and a small
recursive-descent parser; errors say where."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kumo.arm.errors import bad_request

TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<word>[A-Za-z_$][\w./]*))")

Fields = Callable[[str], Any]  # field name (lower) -> value; "tags" -> dict
# Parsing and matching recurse per parenthesis, `not` and and/or term: bound them well below the stack.
MAX_NESTING = 32
MAX_TERMS = 200


@dataclass
class Node:
    op: str
    args: tuple[Any, ...]


class FilterError(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"unexpected character at position {pos}: {text[pos:pos + 10]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        out.append((kind, value, m.start(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0
        self.terms = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str | None = None, word: str | None = None) -> tuple[str, str, int]:
        t = self.peek()
        if t is None:
            raise FilterError(f"unexpected end of filter, expected {word or kind}")
        if (kind and t[0] != kind) or (word and t[1].lower() != word):
            raise FilterError(f"expected {word or kind} at position {t[2]}, found {t[1]!r}")
        self.i += 1
        return t

    def is_word(self, word: str) -> bool:
        t = self.peek()
        return t is not None and t[0] == "word" and t[1].lower() == word

    def parse(self) -> Node:
        node = self.or_()
        if (t := self.peek()) is not None:
            raise FilterError(f"unexpected {t[1]!r} at position {t[2]}")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.is_word("or"):
            self.i += 1
            node = Node("or", (node, self.and_()))
        return node

    def and_(self) -> Node:
        node = self.unary()
        while self.is_word("and"):
            self.i += 1
            node = Node("and", (node, self.unary()))
        return node

    def unary(self) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise FilterError(f"parentheses and 'not' nest more than {MAX_NESTING} deep")
            return self._unary()
        finally:
            self.depth -= 1

    def _unary(self) -> Node:
        if self.is_word("not"):
            self.i += 1
            return Node("not", (self.unary(),))
        if (t := self.peek()) is not None and t[0] == "lp":
            self.i += 1
            node = self.or_()
            self.take("rp")
            return node
        return self.comparison()

    def comparison(self) -> Node:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise FilterError(f"more than {MAX_TERMS} conditions")
        field = self.take("word")
        name = field[1].lower()
        if name in ("substringof", "startswith", "endswith"):
            self.take("lp")
            a = self.operand()
            self.take("comma")
            b = self.operand()
            self.take("rp")
            return Node(name, (a, b))
        op = self.take("word")[1].lower()
        if op not in ("eq", "ne"):
            raise FilterError(f"unsupported operator {op!r} (use eq or ne)")
        value = self.take("str")[1]
        return Node(op, (name, value))

    def operand(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise FilterError("unexpected end of filter in function arguments")
        self.i += 1
        return ("str", t[1]) if t[0] == "str" else ("field", t[1].lower())


def parse(text: str) -> Node:
    try:
        return _Parser(text).parse()
    except FilterError as e:
        raise bad_request("InvalidFilterInQueryString", f"Invalid $filter '{text[:200]}': {e}.") from None


def _value(arg: tuple[str, str], fields: Fields) -> str:
    kind, v = arg
    return v if kind == "str" else str(fields(v) or "")


def _tag_pairs(node: Node) -> tuple[str, str] | None:
    """`tagName eq 'k' and tagValue eq 'v'` means: tag k has value v."""
    if node.op != "and":
        return None
    a, b = node.args
    if a.op == "eq" and b.op == "eq" and a.args[0] == "tagname" and b.args[0] == "tagvalue":
        return a.args[1], b.args[1]
    return None


def matches(node: Node, fields: Fields) -> bool:
    if (pair := _tag_pairs(node)) is not None:
        tags = {k.lower(): v for k, v in (fields("tags") or {}).items()}
        return tags.get(pair[0].lower()) == pair[1]
    if node.op == "and":
        return all(matches(n, fields) for n in node.args)
    if node.op == "or":
        return any(matches(n, fields) for n in node.args)
    if node.op == "not":
        return not matches(node.args[0], fields)
    if node.op in ("eq", "ne"):
        name, value = node.args
        if name == "tagname":
            hit = value.lower() in {k.lower() for k in (fields("tags") or {})}
        elif name == "tagvalue":
            hit = value in (fields("tags") or {}).values()
        else:
            hit = str(fields(name) or "").lower() == value.lower()
        return hit if node.op == "eq" else not hit
    a, b = (_value(x, fields).lower() for x in node.args)
    if node.op == "substringof":
        return a in b
    if node.op == "startswith":
        return a.startswith(b)
    return a.endswith(b)  # endswith
