"""Date functions (template-functions-date): utcNow, dateTimeAdd, dateTimeFromEpoch, dateTimeToEpoch.

Formats are .NET date format strings in the invariant culture, as ARM uses: utcNow('d') is
'03/05/2019' and utcNow() is 'yyyyMMddTHHmmssZ'. Without a format, dateTimeAdd and dateTimeFromEpoch
return ISO 8601 ('2023-05-02T15:16:13Z'). Times are UTC; a base time with an offset is converted.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ..expressions import Function
from ._common import arg_int, arg_str, fail, registrar

FUNCTIONS: dict[str, Function] = {}
fn = registrar(FUNCTIONS)

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_STANDARD = {  # the invariant culture's standard date and time format strings
    "d": "MM/dd/yyyy", "D": "dddd, dd MMMM yyyy", "f": "dddd, dd MMMM yyyy HH:mm",
    "F": "dddd, dd MMMM yyyy HH:mm:ss", "g": "MM/dd/yyyy HH:mm", "G": "MM/dd/yyyy HH:mm:ss", "m": "MMMM dd",
    "M": "MMMM dd", "o": "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffK", "O": "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffK",
    "r": "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'", "R": "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'",
    "s": "yyyy'-'MM'-'dd'T'HH':'mm':'ss", "t": "HH:mm", "T": "HH:mm:ss", "u": "yyyy'-'MM'-'dd HH':'mm':'ss'Z'",
    "U": "dddd, dd MMMM yyyy HH:mm:ss", "y": "yyyy MMMM", "Y": "yyyy MMMM",
}
_SPECIFIERS = "dfFghHKmMstyz"


def _now() -> datetime:
    return datetime.now(UTC)  # tests replace this


def format_datetime(name: str, moment: datetime, pattern: str) -> str:
    """Format an aware UTC datetime with a .NET standard or custom date format string."""
    if len(pattern) == 1:
        if pattern not in _STANDARD:
            raise fail(name, f"doesn't support the date format string '{pattern}'.")
        pattern = _STANDARD[pattern]
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c in "'\"":
            end = pattern.find(c, i + 1)
            end = n if end < 0 else end
            out.append(pattern[i + 1:end])
            i = end + 1
        elif c == "\\" and i + 1 < n:
            out.append(pattern[i + 1])
            i += 2
        elif c == "%" and i + 1 < n:
            out.append(_field(moment, pattern[i + 1], 1, out))
            i += 2
        elif c in _SPECIFIERS:
            run = 1
            while i + run < n and pattern[i + run] == c:
                run += 1
            out.append(_field(moment, c, run, out))
            i += run
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _field(m: datetime, c: str, run: int, out: list[str]) -> str:
    if c == "d":
        return (str(m.day), f"{m.day:02d}", _DAYS[m.weekday()][:3], _DAYS[m.weekday()])[min(run, 4) - 1]
    if c == "M":
        return (str(m.month), f"{m.month:02d}", _MONTHS[m.month - 1][:3], _MONTHS[m.month - 1])[min(run, 4) - 1]
    if c == "y":
        return str(m.year % 100) if run == 1 else f"{m.year % 100:02d}" if run == 2 else str(m.year).zfill(run)
    if c in "hH":
        hour = m.hour if c == "H" else (m.hour % 12 or 12)
        return f"{hour:02d}" if run > 1 else str(hour)
    if c in "ms":
        value = m.minute if c == "m" else m.second
        return f"{value:02d}" if run > 1 else str(value)
    if c in "fF":
        digits = f"{m.microsecond:06d}0"[:min(run, 7)]
        if c == "F":
            digits = digits.rstrip("0")
            if not digits and out and out[-1].endswith("."):
                out[-1] = out[-1][:-1]  # .NET drops the '.' before an empty F field
        return digits
    if c == "t":
        designator = "AM" if m.hour < 12 else "PM"
        return designator[:1] if run == 1 else designator
    if c == "z":
        return ("+0", "+00", "+00:00")[min(run, 3) - 1]
    if c == "K":
        return "Z"
    return "A.D."  # g


def iso(moment: datetime) -> str:
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


_ISO = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{2}):?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?\s*"
                  r"(Z|[+-]\d{2}(?::?\d{2})?)?", re.I)
_US = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AP]M)?)?\s*(Z)?", re.I)


def parse_datetime(name: str, value: str) -> datetime:
    """ISO 8601 in its extended or basic form (utcNow()'s default '20190305T175318Z'), or the invariant
    culture's 'MM/dd/yyyy HH:mm:ss'. Without an offset the time is taken as UTC."""
    value = value.strip()
    try:
        if m := _ISO.fullmatch(value):
            year, month, day, hour, minute, second, fraction, zone = m.groups()
            micro = int((fraction or "0")[:6].ljust(6, "0"))
            moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                              micro, tzinfo=_zone(zone))
            return moment.astimezone(UTC)
        if m := _US.fullmatch(value):
            month, day, year, hour, minute, second, half, _ = m.groups()
            hour_24 = int(hour or 0)
            if half:
                hour_24 = hour_24 % 12 + (12 if half.upper() == "PM" else 0)
            return datetime(int(year), int(month), int(day), hour_24, int(minute or 0), int(second or 0), tzinfo=UTC)
    except ValueError:
        pass
    raise fail(name, f"can't read '{value}' as a date and time; use ISO 8601 such as '2020-04-07T14:53:14Z'.")


def _zone(zone: str | None) -> timezone:
    if not zone or zone.upper() == "Z":
        return UTC
    hours, minutes = int(zone[1:3]), int(zone[3:].lstrip(":") or 0)
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if zone[0] == "-" else offset)


_NUMBER = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(rf"(-)?P(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
                       rf"(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?", re.I)


def add_duration(name: str, moment: datetime, duration: str) -> datetime:
    """Add an ISO 8601 duration such as 'P3Y', '-P9D' or 'PT1H30M'; years and months are calendar
    arithmetic (Jan 31 + P1M is Feb 28/29), the rest exact."""
    m = _DURATION.fullmatch(duration.strip())
    if m is None or not any(m.groups()[1:]) or duration.strip().upper().endswith("T"):
        raise fail(name, f"can't read '{duration}' as an ISO 8601 duration such as 'P1D' or 'PT1H'.")
    sign = -1 if m.group(1) else 1
    years, months, weeks, days, hours, minutes, seconds = (float((g or "0").replace(",", ".")) for g in m.groups()[1:])
    if not (years.is_integer() and months.is_integer()):
        raise fail(name, "supports only whole numbers of years and months in a duration.")
    total_months = moment.year * 12 + moment.month - 1 + sign * int(years * 12 + months)
    year, month = divmod(total_months, 12)
    if not 1 <= year <= 9999:
        raise fail(name, "produced a date outside the years 1 to 9999.")
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    shifted = moment.replace(year=year, month=month + 1, day=day)
    delta = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        return shifted + sign * delta
    except OverflowError:
        raise fail(name, "produced a date outside the years 1 to 9999.") from None


@fn("utcNow", 0, 1)
def utc_now(args: list[Any]) -> str:
    """The current UTC time, formatted with a .NET format string (default 'yyyyMMddTHHmmssZ')."""
    pattern = arg_str("utcNow", args, 0) if args else "yyyyMMddTHHmmssZ"
    return format_datetime("utcNow", _now(), pattern)


@fn("dateTimeAdd", 2, 3)
def date_time_add(args: list[Any]) -> str:
    base = parse_datetime("dateTimeAdd", arg_str("dateTimeAdd", args, 0))
    result = add_duration("dateTimeAdd", base, arg_str("dateTimeAdd", args, 1))
    return format_datetime("dateTimeAdd", result, arg_str("dateTimeAdd", args, 2)) if len(args) > 2 else iso(result)


@fn("dateTimeFromEpoch", 1, 1)
def date_time_from_epoch(args: list[Any]) -> str:
    """dateTimeFromEpoch(1683040573) is '2023-05-02T15:16:13Z'."""
    seconds = arg_int("dateTimeFromEpoch", args, 0)
    try:
        return iso(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds))
    except OverflowError:
        raise fail("dateTimeFromEpoch", f"can't represent {seconds} seconds after 1970 as a date.") from None


@fn("dateTimeToEpoch", 1, 1)
def date_time_to_epoch(args: list[Any]) -> int:
    moment = parse_datetime("dateTimeToEpoch", arg_str("dateTimeToEpoch", args, 0))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
