"""The body rules of Microsoft.Insights/autoscalesettings (api-version 2022-10-01): Azure's published
schema and limits, enums canonicalised case-insensitively, defaults filled the way Azure answers
(`name`, `enabled`, `timeAggregation`, `dividePerInstance`, `predictiveAutoscalePolicy`), unknown
fields kept and read-only ones dropped (az PUTs back what it GETs).

kumo extension: Azure's shortest timeGrain and cooldown are PT1M and its shortest timeWindow PT5M;
kumo accepts any duration from one second, so demos and tests react in seconds. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import parse_resource_id
from kumo.providers.insights import timezones

NAMESPACE = "Microsoft.Insights"
VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
INTERNAL = "kumo"  # top-level body key for kumo's own bookkeeping (last scale actions); GET never shows it

MAX_PROFILES, MAX_RULES, MAX_INSTANCES = 20, 10, 1000
STATISTICS = ("Average", "Min", "Max", "Sum", "Count")
TIME_AGGREGATIONS = ("Average", "Minimum", "Maximum", "Total", "Count", "Last")
OPERATORS = ("Equals", "NotEquals", "GreaterThan", "GreaterThanOrEqual", "LessThan", "LessThanOrEqual")
DIRECTIONS = ("None", "Increase", "Decrease")
SCALE_TYPES = ("ChangeCount", "PercentChangeCount", "ExactCount", "ServiceAllowedNextValue")
FREQUENCIES = ("None", "Second", "Minute", "Hour", "Day", "Week", "Month", "Year")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")  # datetime.weekday() order
SCALE_MODES = ("Disabled", "ForecastOnly", "Enabled")
HOUR, DAY = 3600.0, 86400.0
# (kumo's minimum, Azure's minimum, maximum) in seconds
GRAIN_LIMITS = (1.0, 60.0, 12 * HOUR)
WINDOW_LIMITS = (1.0, 300.0, 12 * HOUR)
COOLDOWN_LIMITS = (1.0, 60.0, 7 * DAY)

DURATION = re.compile(r"^P(?!$)(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
                      r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE)


# -- ISO 8601 durations ------------------------------------------------------------------------

def parse_duration(text: Any) -> float | None:
    """`PT5M` → 300.0; weeks, days, hours, minutes and (fractional) seconds; None if not a duration."""
    if not isinstance(text, str) or not (m := DURATION.match(text.strip())):
        return None
    w, d, h, mi, s = (float(m.group(g) or 0) for g in "wdhms")
    return w * 7 * DAY + d * DAY + h * HOUR + mi * 60 + s


def format_duration(seconds: float) -> str:
    """300 → `PT5M`, 10 → `PT10S`, 90 → `PT1M30S` (for messages and the activity log)."""
    whole = int(seconds)
    days, rest = divmod(whole, int(DAY))
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    frac = seconds - whole
    out = "P" + (f"{days}D" if days else "")
    time = (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s + frac:g}S" if s or frac else "")
    return out + ("T" + time if time else ("" if days else "T0S"))


# -- errors ------------------------------------------------------------------------------------

def _content(message: str, target: str) -> ArmError:
    """Content that does not fit the schema (a missing field, a wrong type, an unknown enum value)."""
    return ArmError(400, "UnsupportedRequestContent", message, target=target)


def _bad(message: str, target: str) -> ArmError:
    """Content that fits the schema but breaks one of autoscale's rules."""
    return bad_request("BadRequest", message, target)


def _object(value: Any, where: str, *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _content(f"'{where}' is required and must be a JSON object.", where)
    return value


def _enum(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if isinstance(value, str):
        for a in allowed:
            if a.lower() == value.strip().lower():
                return a
    raise _content(f"The value '{value}' of '{where}' is not valid. Allowed values: {', '.join(allowed)}.", where)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _content(f"'{where}' is required and must be a non-empty string.", where)
    return value


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _content(f"'{where}' must be true or false.", where)


def _whole(value: Any, where: str) -> int:
    """Capacities and scale values are strings holding whole numbers in the schema; numbers pass too."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    raise _content(f"'{where}' must be a string holding a whole number, such as \"1\"; got {value!r}.", where)


def _duration(value: Any, where: str, limits: tuple[float, float, float]) -> str:
    seconds = parse_duration(value)
    if seconds is None:
        raise _content(f"'{where}' must be an ISO 8601 duration such as PT1M or PT10S; got {value!r}.", where)
    low, azure_low, high = limits
    if not low <= seconds <= high:
        raise _bad(f"'{where}' is {value}: it must be between {format_duration(azure_low)} and "
                   f"{format_duration(high)} (kumo also accepts durations down to {format_duration(low)}).", where)
    return value.strip().upper()


# -- the setting ---------------------------------------------------------------------------------

def normalise(setting_name: str, props: dict[str, Any]) -> dict[str, Any]:
    """A PUT's `properties` → the stored `properties`, in the order Azure answers them."""
    profiles = props.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        raise _content("'properties.profiles' is required: an array of 1 to 20 autoscale profiles.",
                       "properties.profiles")
    if len(profiles) > MAX_PROFILES:
        raise _bad(f"The autoscale setting has {len(profiles)} profiles; at most {MAX_PROFILES} are allowed.",
                   "properties.profiles")
    target = target_uri(props.get("targetResourceUri"))
    out: dict[str, Any] = {
        "profiles": [_profile(p, i, target) for i, p in enumerate(profiles)],
        "enabled": _bool(props.get("enabled", True), "properties.enabled"),
        "name": props.get("name") if isinstance(props.get("name"), str) and props["name"] else setting_name,
        "targetResourceUri": target,
    }
    if props.get("targetResourceLocation") is not None:
        out["targetResourceLocation"] = str(props["targetResourceLocation"])
    raw_notes = props.get("notifications")
    if raw_notes is not None and not isinstance(raw_notes, list):
        raise _content("'properties.notifications' must be an array.", "properties.notifications")
    out["notifications"] = [_notification(n, i) for i, n in enumerate(raw_notes or [])]
    out["predictiveAutoscalePolicy"] = _predictive(props.get("predictiveAutoscalePolicy"))
    for key, value in props.items():  # unknown fields are kept as given; read-only ones are not
        if key not in out and key != "provisioningState" and key != "targetResourceLocation":
            out[key] = value
    return out


def target_uri(value: Any) -> str:
    uri = _text(value, "properties.targetResourceUri")
    rid = parse_resource_id(uri)
    if rid is None or rid.resource_group is None:
        raise _content(f"'properties.targetResourceUri' must be a resource id; got '{uri}'.",
                       "properties.targetResourceUri")
    if rid.type.lower() != VMSS_TYPE.lower():
        raise _bad(f"kumo's autoscale scales virtual machine scale sets ({VMSS_TYPE}); the target '{uri}' is a "
                   f"{rid.type}.", "properties.targetResourceUri")
    return uri


def _capacity(raw: Any, where: str) -> dict[str, str]:
    cap = _object(raw, f"{where}.capacity")
    low, high, default = (_whole(cap.get(k), f"{where}.capacity.{k}") for k in ("minimum", "maximum", "default"))
    if low > default:
        raise _bad(f"The minimum capacity value '{low}' that you specified in the autoscale setting is greater than "
                   f"the default capacity of '{default}'.  Enter a minimum capacity less than '{default}'.",
                   f"{where}.capacity")
    if default > high:
        raise _bad(f"The default capacity value '{default}' that you specified in the autoscale setting is greater "
                   f"than the maximum capacity of '{high}'.  Enter a default capacity less than or equal to "
                   f"'{high}'.", f"{where}.capacity")
    if high > MAX_INSTANCES:
        raise _bad(f"The maximum capacity value '{high}' that you specified in the autoscale setting exceeds "
                   f"{MAX_INSTANCES}, the most instances a virtual machine scale set can have.", f"{where}.capacity")
    return {"minimum": str(low), "maximum": str(high), "default": str(default)}


def _profile(raw: Any, i: int, target: str) -> dict[str, Any]:
    where = f"properties.profiles[{i}]"
    p = _object(raw, where)
    cap = _capacity(p.get("capacity"), where)
    rules = p.get("rules")
    if rules is not None and not isinstance(rules, list):
        raise _content(f"'{where}.rules' must be an array.", f"{where}.rules")
    if len(rules or []) > MAX_RULES:
        raise _bad(f"Profile '{p.get('name')}' has {len(rules or [])} rules; at most {MAX_RULES} are allowed.",
                   f"{where}.rules")
    out: dict[str, Any] = {"name": _text(p.get("name"), f"{where}.name"), "capacity": cap,
                           "rules": [_rule(r, f"{where}.rules[{j}]", cap, target) for j, r in enumerate(rules or [])]}
    fixed, recurrence = p.get("fixedDate"), p.get("recurrence")
    if fixed is not None and recurrence is not None:
        raise _bad(f"Profile '{out['name']}' has both fixedDate and recurrence; a profile has at most one of them.",
                   where)
    if fixed is not None:
        out["fixedDate"] = _fixed_date(fixed, f"{where}.fixedDate")
    if recurrence is not None:
        out["recurrence"] = _recurrence(recurrence, f"{where}.recurrence")
    out.update({k: v for k, v in p.items() if k not in out})
    return out


def _rule(raw: Any, where: str, cap: dict[str, str], target: str) -> dict[str, Any]:
    r = _object(raw, where)
    trigger = _trigger(r.get("metricTrigger"), f"{where}.metricTrigger", target)
    action = _action(r.get("scaleAction"), f"{where}.scaleAction", cap)
    return {"metricTrigger": trigger, "scaleAction": action,
            **{k: v for k, v in r.items() if k not in ("metricTrigger", "scaleAction")}}


def _trigger(raw: Any, where: str, target: str) -> dict[str, Any]:
    t = _object(raw, where)
    resource = t.get("metricResourceUri") or target
    if not isinstance(resource, str) or parse_resource_id(resource) is None:
        raise _content(f"'{where}.metricResourceUri' must be a resource id; got {resource!r}.",
                       f"{where}.metricResourceUri")
    namespace = t.get("metricNamespace")
    if namespace is not None and not isinstance(namespace, str):
        raise _content(f"'{where}.metricNamespace' must be a string.", f"{where}.metricNamespace")
    grain = _duration(t.get("timeGrain"), f"{where}.timeGrain", GRAIN_LIMITS)
    window = _duration(t.get("timeWindow"), f"{where}.timeWindow", WINDOW_LIMITS)
    if (parse_duration(window) or 0) < (parse_duration(grain) or 0):
        raise _bad(f"'{where}.timeWindow' ({window}) is shorter than its timeGrain ({grain}): the window must hold at "
                   "least one grain.", f"{where}.timeWindow")
    threshold = t.get("threshold")
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            pass
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise _content(f"'{where}.threshold' is required and must be a number.", f"{where}.threshold")
    out: dict[str, Any] = {
        "metricName": _text(t.get("metricName"), f"{where}.metricName"),
        "metricNamespace": namespace or "",
        "metricResourceUri": resource,
    }
    if t.get("metricResourceLocation") is not None:
        out["metricResourceLocation"] = str(t["metricResourceLocation"])
    out.update({
        "timeGrain": grain,
        "statistic": _enum(t.get("statistic"), STATISTICS, f"{where}.statistic"),
        "timeWindow": window,
        "timeAggregation": _enum(t.get("timeAggregation") or "Average", TIME_AGGREGATIONS,
                                 f"{where}.timeAggregation"),
        "operator": _enum(t.get("operator"), OPERATORS, f"{where}.operator"),
        "threshold": float(threshold),
        "dimensions": _dimensions(t.get("dimensions"), f"{where}.dimensions"),
        "dividePerInstance": _bool(t.get("dividePerInstance", False), f"{where}.dividePerInstance"),
    })
    out.update({k: v for k, v in t.items() if k not in out})
    return out


def _dimensions(raw: Any, where: str) -> list[dict[str, Any]] | None:
    if raw is None or raw == []:
        return raw
    if not isinstance(raw, list):
        raise _content(f"'{where}' must be an array.", where)
    for j, d in enumerate(raw):
        d = _object(d, f"{where}[{j}]")
        _text(d.get("DimensionName"), f"{where}[{j}].DimensionName")
        _enum(d.get("Operator"), ("Equals", "NotEquals"), f"{where}[{j}].Operator")
        if not isinstance(d.get("Values"), list):
            raise _content(f"'{where}[{j}].Values' must be an array of strings.", f"{where}[{j}].Values")
    # kumo's metrics are one series per resource: a dimension filter could not be honoured
    raise _bad(f"'{where}' filters by dimension; kumo's metrics have no dimensions, so a rule cannot filter by "
               "them. Remove the dimensions.", where)


def _action(raw: Any, where: str, cap: dict[str, str]) -> dict[str, Any]:
    a = _object(raw, where)
    kind = _enum(a.get("type"), SCALE_TYPES, f"{where}.type")
    value = _whole(a.get("value", "1"), f"{where}.value")
    if kind in ("ChangeCount", "PercentChangeCount") and value < 1:
        raise _bad(f"'{where}.value' must be 1 or greater for {kind}.", f"{where}.value")
    low, high = int(cap["minimum"]), int(cap["maximum"])
    if kind == "ChangeCount" and value > high - low:
        raise bad_request("InvalidActionValue", f"The autoscale setting you provided has an invalid scale action "
                          f"value ('{value}'). Specify a scale value less than or equal to the difference between the "
                          f"capacity maximum {high} and the capacity minimum {low}.", f"{where}.value")
    if kind == "ExactCount" and value > MAX_INSTANCES:
        raise bad_request("InvalidActionValue", f"The autoscale setting you provided has an invalid scale action "
                          f"value ('{value}'): an exact count is at most {MAX_INSTANCES}.", f"{where}.value")
    out = {"direction": _enum(a.get("direction"), DIRECTIONS, f"{where}.direction"), "type": kind,
           "value": str(value), "cooldown": _duration(a.get("cooldown"), f"{where}.cooldown", COOLDOWN_LIMITS)}
    out.update({k: v for k, v in a.items() if k not in out})
    return out


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 date-time (naive when it names no offset), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return None


def _format_time(t: datetime) -> str:
    text = t.replace(microsecond=0).isoformat() if t.microsecond == 0 else t.isoformat()
    return text.replace("+00:00", "Z")


def _zone_name(value: Any, where: str, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise _content(f"'{where}' is required: a time zone such as 'Pacific Standard Time' or 'UTC'.", where)
        return None
    name = timezones.canonical(value) if isinstance(value, str) else None
    if name is None:
        raise _bad(f"'{where}' names an unknown time zone '{value}'. Use a Windows time zone name such as 'Pacific "
                   "Standard Time' or 'UTC' (`az monitor autoscale profile list-timezones`), or an IANA name.", where)
    return name


def _fixed_date(raw: Any, where: str) -> dict[str, Any]:
    f = _object(raw, where)
    tz = _zone_name(f.get("timeZone"), f"{where}.timeZone", required=False)
    start, end = parse_time(f.get("start")), parse_time(f.get("end"))
    if start is None or end is None:
        raise _content(f"'{where}.start' and '{where}.end' are required ISO 8601 date-times.", where)
    zone = timezones.zone(tz or "")
    if absolute(end, zone) <= absolute(start, zone):
        raise _bad(f"'{where}.end' ({f.get('end')}) must be later than its start ({f.get('start')}).", where)
    if (absolute(end, zone) - absolute(start, zone)).days > 365:
        raise _bad(f"The number of days between the start and end of '{where}' can't exceed 365.", where)
    out: dict[str, Any] = {"timeZone": tz} if tz else {}
    out.update(start=_format_time(start), end=_format_time(end))
    out.update({k: v for k, v in f.items() if k not in ("timeZone", "start", "end")})
    return out


def absolute(t: datetime, zone: Any) -> datetime:
    """A date-time in UTC: a naive one is read in the profile's time zone."""
    return (t if t.tzinfo else t.replace(tzinfo=zone)).astimezone(timezone.utc)


def _int_list(raw: Any, where: str, low: int, high: int) -> list[int]:
    if not isinstance(raw, list) or not raw:
        raise _content(f"'{where}' is required: a non-empty array of whole numbers from {low} to {high}.", where)
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise _bad(f"'{where}' holds {v!r}; values must be whole numbers from {low} to {high}.", where)
        out.append(v)
    return out


def _recurrence(raw: Any, where: str) -> dict[str, Any]:
    r = _object(raw, where)
    frequency = _enum(r.get("frequency"), FREQUENCIES, f"{where}.frequency")
    if frequency != "Week":
        raise _bad(f"'{where}.frequency' is {frequency}; it must be Week (a schedule repeats every week; set "
                   "schedule.days to every day for a daily schedule).", f"{where}.frequency")
    s = _object(r.get("schedule"), f"{where}.schedule")
    days = s.get("days")
    if not isinstance(days, list) or not days:
        raise _content(f"'{where}.schedule.days' is required: a non-empty array of day names (Sunday to Saturday).",
                       f"{where}.schedule.days")
    schedule: dict[str, Any] = {
        "timeZone": _zone_name(s.get("timeZone"), f"{where}.schedule.timeZone", required=True),
        "days": [_enum(d, DAYS, f"{where}.schedule.days") for d in days],
        "hours": _int_list(s.get("hours"), f"{where}.schedule.hours", 0, 23),
        "minutes": _int_list(s.get("minutes"), f"{where}.schedule.minutes", 0, 59),
    }
    schedule.update({k: v for k, v in s.items() if k not in schedule})
    return {"frequency": frequency, "schedule": schedule,
            **{k: v for k, v in r.items() if k not in ("frequency", "schedule")}}


def loopback_uri(uri: str) -> bool:
    """Whether a webhook address stays on this host: http(s) to localhost or a loopback IP."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _notification(raw: Any, i: int) -> dict[str, Any]:
    where = f"properties.notifications[{i}]"
    n = _object(raw, where)
    out: dict[str, Any] = {"operation": _enum(n.get("operation"), ("Scale",), f"{where}.operation")}
    email = _object(n.get("email"), f"{where}.email", required=False)
    emails = email.get("customEmails") or []
    if not isinstance(emails, list) or not all(isinstance(e, str) and "@" in e for e in emails):
        raise _content(f"'{where}.email.customEmails' must be an array of e-mail addresses.",
                       f"{where}.email.customEmails")
    out["email"] = {
        "sendToSubscriptionAdministrator": _bool(email.get("sendToSubscriptionAdministrator") or False,
                                                 f"{where}.email.sendToSubscriptionAdministrator"),
        "sendToSubscriptionCoAdministrators": _bool(email.get("sendToSubscriptionCoAdministrators") or False,
                                                    f"{where}.email.sendToSubscriptionCoAdministrators"),
        "customEmails": emails,
    }
    hooks = n.get("webhooks") or []
    if not isinstance(hooks, list):
        raise _content(f"'{where}.webhooks' must be an array.", f"{where}.webhooks")
    out["webhooks"] = [_webhook(h, f"{where}.webhooks[{j}]") for j, h in enumerate(hooks)]
    out.update({k: v for k, v in n.items() if k not in out})
    return out


def _webhook(raw: Any, where: str) -> dict[str, Any]:
    h = _object(raw, where)
    uri = _text(h.get("serviceUri"), f"{where}.serviceUri")
    if not loopback_uri(uri):
        # host hygiene: kumo runs on someone's machine and posts nothing beyond it
        raise _bad(f"Webhook {where} has serviceUri '{uri}': kumo sends autoscale webhooks only to http(s) addresses "
                   "on this host (localhost, 127.0.0.0/8 or ::1).", f"{where}.serviceUri")
    props = h.get("properties") or {}
    if not isinstance(props, dict):
        raise _content(f"'{where}.properties' must be an object of strings.", f"{where}.properties")
    out = {"serviceUri": uri, "properties": {str(k): str(v) for k, v in props.items()}}
    out.update({k: v for k, v in h.items() if k not in out})
    return out


def _predictive(raw: Any) -> dict[str, Any]:
    where = "properties.predictiveAutoscalePolicy"
    if raw is None:
        return {"scaleMode": "Disabled", "scaleLookAheadTime": None}
    p = _object(raw, where)
    mode = _enum(p.get("scaleMode"), SCALE_MODES, f"{where}.scaleMode")
    if mode != "Disabled":
        raise _bad(f"'{where}.scaleMode' is {mode}; kumo does not forecast load, so predictive autoscale is not "
                   "available (use Disabled).", f"{where}.scaleMode")
    return {"scaleMode": mode, "scaleLookAheadTime": p.get("scaleLookAheadTime"),
            **{k: v for k, v in p.items() if k not in ("scaleMode", "scaleLookAheadTime")}}
