"""String functions (template-functions-string). concat, contains, empty, first, last, indexOf,
lastIndexOf, length, skip and take accept arrays too and live in array; json is in object."""

from __future__ import annotations

import base64 as b64
import binascii
import re
import uuid
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from ..expressions import MAX_STRING, Function, type_name
from . import _hashing, _netformat
from ._common import arg_array, arg_int, arg_str, bad_arg, fail, is_number, parse_json, registrar, text

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)


def _strings(name: str, args: list[Any]) -> list[str]:
    return [arg_str(name, args, i) for i in range(len(args))]


def _decode_base64(name: str, value: str) -> str:
    try:
        return b64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise fail(name, "expects valid base64 holding UTF-8 text.") from None


@fn("base64", 1, 1)
def base64(args: list[Any]) -> str:
    return b64.b64encode(arg_str("base64", args, 0).encode("utf-8")).decode("ascii")


@fn("base64ToString", 1, 1)
def base64_to_string(args: list[Any]) -> str:
    return _decode_base64("base64ToString", arg_str("base64ToString", args, 0))


@fn("base64ToJson", 1, 1)
def base64_to_json(args: list[Any]) -> Any:
    return parse_json("base64ToJson", _decode_base64("base64ToJson", arg_str("base64ToJson", args, 0)))


@fn("dataUri", 1, 1)
def data_uri(args: list[Any]) -> str:
    encoded = b64.b64encode(text(args[0]).encode("utf-8")).decode("ascii")
    return f"data:text/plain;charset=utf8;base64,{encoded}"


@fn("dataUriToString", 1, 1)
def data_uri_to_string(args: list[Any]) -> str:
    value = arg_str("dataUriToString", args, 0)
    header, comma, data = value.partition(",")
    if not header.lower().startswith("data:") or not comma:
        raise fail("dataUriToString", "expects a data URI such as 'data:;base64,SGVsbG8='.")
    if header.lower().endswith(";base64"):
        return _decode_base64("dataUriToString", data)
    return unquote(data)


@fn("startsWith", 2, 2)
def starts_with(args: list[Any]) -> bool:
    """Case-insensitive."""
    value, prefix = _strings("startsWith", args)
    return value.lower().startswith(prefix.lower())


@fn("endsWith", 2, 2)
def ends_with(args: list[Any]) -> bool:
    """Case-insensitive."""
    value, suffix = _strings("endsWith", args)
    return value.lower().endswith(suffix.lower())


@fn("format", 1, None)
def format_(args: list[Any]) -> str:
    """.NET composite formatting: format('{0}, {1}. Formatted number: {2:N0}', 'Hello', 'User', 8175133)."""
    return _netformat.composite(arg_str("format", args, 0), args[1:])


@fn("guid", 1, None)
def guid(args: list[Any]) -> str:
    return _hashing.deterministic_guid(_strings("guid", args))


@fn("newGuid", 0, 0)
def new_guid(args: list[Any]) -> str:
    return str(uuid.uuid4())


@fn("uniqueString", 1, None)
def unique_string(args: list[Any]) -> str:
    return _hashing.unique_string(_strings("uniqueString", args))


@fn("join", 2, 2)
def join(args: list[Any]) -> str:
    items, delimiter = arg_array("join", args, 0), arg_str("join", args, 1)
    for item in items:
        if isinstance(item, (list, dict)):
            raise fail("join", f"expects an array of strings, but it holds a value of type {type_name(item)}.")
    return delimiter.join(text(item) for item in items)


@fn("padLeft", 2, 3)
def pad_left(args: list[Any]) -> str:
    """padLeft('123', 10, '0') is '0000000123'; the default padding is a space."""
    if not isinstance(args[0], str) and not is_number(args[0]):
        raise bad_arg("padLeft", args, 0, "a string or an integer")
    total = arg_int("padLeft", args, 1)
    padding = arg_str("padLeft", args, 2) if len(args) > 2 else " "
    if len(padding) != 1:
        raise fail("padLeft", f"expects a single padding character, got '{padding}'.")
    if total > MAX_STRING:
        raise fail("padLeft", f"expects a total length of at most {MAX_STRING}, got {total}.")
    return text(args[0]).rjust(total, padding)


@fn("replace", 3, 3)
def replace(args: list[Any]) -> str:
    """Case-sensitive replacement of every occurrence."""
    original, old, new = _strings("replace", args)
    if not old:
        raise fail("replace", "can't replace an empty string.")
    if len(original) + original.count(old) * (len(new) - len(old)) > MAX_STRING:  # known before building it
        raise fail("replace", f"would produce a string longer than {MAX_STRING} characters.")
    return original.replace(old, new)


@fn("split", 2, 2)
def split(args: list[Any]) -> list[str]:
    """split('one;two,three', createArray(',', ';')): the delimiter, or any of an array of them."""
    value = arg_str("split", args, 0)
    delimiters = args[1] if isinstance(args[1], list) else [args[1]]
    if not all(isinstance(d, str) for d in delimiters):
        raise bad_arg("split", args, 1, "a string or an array of strings")
    # At each position .NET tries the delimiters in the order given; an alternation does the same.
    usable = [re.escape(d) for d in delimiters if d]
    return re.split("|".join(usable), value) if usable else [value]


@fn("string", 1, 1)
def string(args: list[Any]) -> str:
    """Strings as they are, bools as True/False, arrays and objects as compact JSON."""
    return text(args[0])


@fn("substring", 1, 3)
def substring(args: list[Any]) -> str:
    value = arg_str("substring", args, 0)
    start = arg_int("substring", args, 1) if len(args) > 1 else 0
    count = arg_int("substring", args, 2) if len(args) > 2 else len(value) - start
    if start < 0 or count < 0 or start + count > len(value):
        # ARM's own wording, as documented.
        raise fail("substring", "failed: the index and length parameters must refer to a location within the "
                   f"string. The index parameter: '{start}', the length parameter: '{count}', the length of the "
                   f"string parameter: '{len(value)}'.")
    return value[start:start + count]


@fn("toLower", 1, 1)
def to_lower(args: list[Any]) -> str:
    return arg_str("toLower", args, 0).lower()


@fn("toUpper", 1, 1)
def to_upper(args: list[Any]) -> str:
    return arg_str("toUpper", args, 0).upper()


@fn("trim", 1, 1)
def trim(args: list[Any]) -> str:
    return arg_str("trim", args, 0).strip()


@fn("uri", 2, 2)
def uri(args: list[Any]) -> str:
    """Resolve a relative URI against a base as RFC 3986 section 5 (and .NET's Uri) does:
    uri('http://contoso.org/firstpath/', 'myscript.sh') keeps firstpath, without the trailing slash it
    is replaced."""
    base, relative = _strings("uri", args)
    if not urlsplit(base).scheme or not urlsplit(base).netloc:
        raise fail("uri", f"expects an absolute base URI, got '{base}'.")
    return urljoin(base, relative)


@fn("uriComponent", 1, 1)
def uri_component(args: list[Any]) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters (as .NET's EscapeDataString)."""
    return quote(arg_str("uriComponent", args, 0), safe="")


@fn("uriComponentToString", 1, 1)
def uri_component_to_string(args: list[Any]) -> str:
    return unquote(arg_str("uriComponentToString", args, 0))
