"""The metrics API's query parameters: ISO 8601 times and durations, `timespan`, `interval`, `aggregation` and
`metricnames`, parsed with Azure's 400 BadRequest for what does not parse."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from kumo.arm.errors import ArmError, bad_request
from kumo.controllers.metrics.aggregate import aggregation

DEFAULT_SPAN = 3600.0  # no timespan: the last hour
DEFAULT_INTERVAL = 60.0  # Azure's default grain, PT1M
MIN_INTERVAL = 1.0  # kumo's shortest grain (Azure's is PT1M; see docs/metrics.md)
_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
                       r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.I)


def _bad(message: str) -> ArmError:
    return bad_request("BadRequest", message)


def parse_duration(text: str) -> float:
    """An ISO 8601 duration (`PT5S`, `PT1M`, `PT1H30M`, `P1D`, `P1W`) in seconds. Years and months have no
    fixed length, so they are refused. ValueError for anything else."""
    m = _DURATION.match(text.strip())
    if m is None or not any(m.groups()) or text.strip().upper().endswith("T"):
        raise ValueError(f"'{text}' is not an ISO 8601 duration such as PT1M, PT5S or P1D")
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def format_duration(seconds: float) -> str:
    """Seconds as an ISO 8601 duration, the way Azure writes grains: PT5S, PT1M, PT1H, P1D, PT1M30S."""
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{v}{u}" for v, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if v)
    if not whole:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def parse_time(text: str) -> float:
    """An ISO 8601 date-time (any offset; none means UTC, as az's own `utcnow().isoformat()` sends) in
    epoch seconds. A '+' of an offset that arrived unencoded reads as a space: it is taken back."""
    raw = text.strip()
    for candidate in (raw, raw.replace(" ", "+")):
        try:
            t = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    raise ValueError(f"'{text}' is not an ISO 8601 date and time such as 2024-05-01T12:00:00Z")


def format_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timespan(text: str | None, now: float) -> tuple[float, float]:
    """`start/end`, `start/duration`, `duration/end` or a lone `duration` (ending now) as (start, end) epoch
    seconds; none: the last hour. az quotes the timespan before its client encodes it again, so what
    arrives may still be percent-encoded once."""
    if not text:
        return now - DEFAULT_SPAN, now
    if "%" in text:
        text = unquote_plus(text)
    first, sep, second = text.strip().partition("/")
    try:
        if not sep:
            start, end = now - parse_duration(first), now
        elif first.upper().startswith("P"):
            end = parse_time(second)
            start = end - parse_duration(first)
        elif second.upper().startswith("P"):
            start = parse_time(first)
            end = start + parse_duration(second)
        else:
            start, end = parse_time(first), parse_time(second)
    except ValueError as e:
        raise _bad(f"Invalid timespan '{text}': {e}. Use 'startDateTime_ISO/endDateTime_ISO'.") from None
    if end <= start:
        raise _bad(f"Invalid timespan '{text}': its end must be after its start.")
    return start, end


def parse_interval(text: str | None, start: float, end: float) -> float:
    """The grain in seconds: an ISO 8601 duration (default PT1M) or `FULL` (one point for the whole timespan).
    kumo serves grains down to PT1S, shorter than Azure's PT1M; a grain must be whole seconds."""
    if not text:
        return DEFAULT_INTERVAL
    if text.strip().upper() == "FULL":
        return end - start
    try:
        grain = parse_duration(text)
    except ValueError as e:
        raise _bad(f"Invalid interval: {e}.") from None
    if grain < MIN_INTERVAL or not math.isclose(grain, round(grain)):
        raise _bad(f"Invalid interval '{text}': kumo serves whole seconds from PT1S (Azure from PT1M).")
    return float(round(grain))


def parse_aggregations(text: str | None) -> list[str] | None:
    """Azure's spelling of each aggregation asked for (comma separated, any case); None when none is."""
    if not text or not text.strip():
        return None
    found: list[str] = []
    for name in text.split(","):
        if name.strip() and (agg := aggregation(name)) not in found:
            found.append(agg)
    return found or None


def parse_metric_names(text: str | None) -> list[str] | None:
    """The metric names asked for (comma separated; `%2` stands for a comma inside a name), or None."""
    if not text or not text.strip():
        return None
    names = [n.replace("%2", ",").strip() for n in text.split(",")]
    return [n for n in names if n] or None
