""".NET composite formatting for format(): '{0}', '{1,-8}', '{2:N0}', '{{' and '}}', with the invariant
culture's standard numeric format strings (C D E F G N P R X) and the common custom ones ('0.00',
'#,##0', '000'). Numbers round half away from zero, as .NET does."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ..expressions import TemplateExpressionError
from ._common import is_int, is_number, number_text, text

_ITEM = re.compile(r"\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?(?::(.*))?", re.S)
_STANDARD = re.compile(r"([A-Za-z])(\d{0,2})")


def _error(problem: str) -> TemplateExpressionError:
    return TemplateExpressionError(f"The template function 'format' {problem}")


def composite(pattern: str, values: list[Any]) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c in "{}" and pattern.startswith(c * 2, i):
            out.append(c)
            i += 2
        elif c == "}":
            raise _error(f"found an unmatched '}}' at character {i + 1} of its format string.")
        elif c == "{":
            end = pattern.find("}", i)
            m = _ITEM.fullmatch(pattern, i + 1, end) if end > 0 else None
            if m is None:
                raise _error(f"found an invalid format item at character {i + 1} of its format string.")
            index = int(m.group(1))
            if index >= len(values):
                raise _error(f"refers to argument {{{index}}} but has only {len(values)} argument(s) to format.")
            formatted = format_value(values[index], m.group(3) or "")
            width = int(m.group(2) or 0)
            if abs(width) >= 1_000_000:  # .NET's own limit on an alignment
                raise _error(f"has an alignment of {width}; it must be less than 1000000.")
            out.append(formatted.rjust(width) if width >= 0 else formatted.ljust(-width))
            i = end + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def format_value(value: Any, spec: str) -> str:
    if spec and is_number(value):
        return format_number(value, spec)
    return text(value)


def _grouped(digits: str) -> str:
    head = len(digits) % 3 or 3
    return ",".join([digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)])


def _fixed(value: Decimal, decimals: int, group: bool) -> str:
    rounded = abs(value).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{rounded:f}".partition(".")
    body = (_grouped(whole) if group else whole) + (f".{fraction}" if decimals else "")
    return ("-" if value < 0 and rounded != 0 else "") + body


def _decimal(value: int | float) -> Decimal:
    # repr() gives the shortest round-trip digits, which is what .NET rounds from.
    return Decimal(value) if is_int(value) else Decimal(repr(value))


def format_number(value: int | float, spec: str) -> str:
    m = _STANDARD.fullmatch(spec)
    if m is None:
        return _custom(value, spec)
    kind, precision = m.group(1), m.group(2)
    digits = int(precision) if precision else None
    number = _decimal(value)
    upper = kind.upper()
    if upper in ("D", "X"):
        if not is_int(value):
            raise _error(f"can only apply '{spec}' to integers.")
        if upper == "D":
            return ("-" if value < 0 else "") + str(abs(value)).zfill(digits or 0)
        hexadecimal = format(value & 0xFFFFFFFFFFFFFFFF, "X" if kind == "X" else "x")
        return hexadecimal.zfill(digits or 0)
    if upper == "N":
        return _fixed(number, 2 if digits is None else digits, group=True)
    if upper == "F":
        return _fixed(number, 2 if digits is None else digits, group=False)
    if upper == "P":
        return _fixed(number * 100, 2 if digits is None else digits, group=True) + " %"
    if upper == "C":
        amount = "\u00a4" + _fixed(abs(number), 2 if digits is None else digits, group=True)
        return f"({amount})" if number < 0 else amount
    if upper == "E":
        mantissa, exponent = f"{abs(number):.{6 if digits is None else digits}E}".split("E")
        sign = "-" if number < 0 else ""
        return f"{sign}{mantissa}{kind}{exponent[0]}{abs(int(exponent)):03d}"
    if upper in ("G", "R"):
        return number_text(value)
    raise _error(f"doesn't support the numeric format string '{spec}'.")


def _custom(value: int | float, spec: str) -> str:
    """Custom numeric formats: '0' (digit), '#' (optional digit), '.', ',' (grouping), '%', literals in
    quotes, and ';' sections for positive;negative;zero."""
    sections = spec.split(";")
    number = _decimal(value)
    section = sections[0]
    if number < 0 and len(sections) > 1 and sections[1]:
        section, number = sections[1], -number
    elif number == 0 and len(sections) > 2 and sections[2]:
        section = sections[2]
    literal = re.sub(r"'[^']*'|\"[^\"]*\"|\\.", lambda m: "\0" * len(m.group()), section)
    places = [i for i, c in enumerate(literal) if c in "0#"]
    if not places:
        return section
    if "%" in literal:
        number *= 100
    start, end = places[0], places[-1] + 1
    pattern = literal[start:end]
    whole, _, fraction = pattern.partition(".")
    min_whole = len(whole.replace(",", "").lstrip("#"))
    min_fraction, max_fraction = len(fraction.rstrip("#")), fraction.count("0") + fraction.count("#")
    rounded = abs(number).quantize(Decimal(1).scaleb(-max_fraction), rounding=ROUND_HALF_UP)
    int_digits, _, frac_digits = f"{rounded:f}".partition(".")
    int_digits = int_digits.lstrip("0").zfill(min_whole) if min_whole else int_digits.lstrip("0")
    frac_digits = frac_digits.rstrip("0").ljust(min_fraction, "0")
    if "," in whole and int_digits:
        int_digits = _grouped(int_digits)
    body = int_digits + ("." + frac_digits if frac_digits else "")
    sign = "-" if number < 0 and rounded != 0 else ""
    return sign + _unquote(section[:start]) + body + _unquote(section[end:])


def _unquote(part: str) -> str:
    return re.sub(r"'([^']*)'|\"([^\"]*)\"|\\(.)", lambda m: next(g for g in m.groups() if g is not None), part)
