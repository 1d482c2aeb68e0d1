"""Azure's autoscale decision as its documentation states it ("Understand autoscale settings",
"Flapping in autoscale"), in pure functions over a profile, the current instance count, each rule's
observed metric value and the last scale action:

* the profile: fixed-date profiles first (the first whose window holds now), then recurring ones (the
  one that started most recently: a recurring profile runs until the next one starts), else the
  default profile (neither fixedDate nor recurrence);
* a count outside the profile's [minimum, maximum] is brought back inside, rules or not;
* a rule whose metric has no data decides nothing; if any has none and the count is below the
  profile's default, the count goes to the default;
* after a scale action nothing scales, in either direction, until that action's rule's cooldown has
  passed;
* scale out when any scale-out rule fires (the largest resulting count wins);
* scale in only when every scale-in rule fires, by as little as any of them asks, and only to a count
  at which no scale-out rule would fire at once (flapping): per-instance values are projected as
  value × current / new; if no count between the target and the current one is safe, the scale-in
  waits for the next run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kumo.providers.insights import timezones
from kumo.providers.insights.autoscale_schema import DAYS, absolute, parse_duration, parse_time

STATISTIC_AGGREGATION = {"Average": "Average", "Min": "Minimum", "Max": "Maximum", "Sum": "Total", "Count": "Count"}
SYMBOLS = {"Equals": "=", "NotEquals": "!=", "GreaterThan": ">", "GreaterThanOrEqual": ">=", "LessThan": "<",
           "LessThanOrEqual": "<="}
Points = list[tuple[float, float | None]]


@dataclass
class LastAction:
    time: float
    cooldown: float  # seconds; the rule's that fired it
    direction: str  # Increase or Decrease


@dataclass
class Decision:
    old: int
    new: int | None  # None: a scale-in deferred to avoid flapping
    direction: str  # Increase or Decrease
    reason: str
    kind: str  # bounds, default or metric
    cooldown: float = 0.0
    flapping: str | None = None  # why a scale-in was reduced or deferred


# -- profiles ------------------------------------------------------------------------------------

def last_start(schedule: dict[str, Any], now: datetime) -> datetime | None:
    """The latest start of a weekly schedule at or before `now` (an aware date-time)."""
    zone = timezones.zone(schedule.get("timeZone") or "")
    local = now.astimezone(zone)
    days = {DAYS.index(d) for d in schedule.get("days") or [] if d in DAYS}
    for back in range(8):
        day = (local - timedelta(days=back)).date()
        if day.weekday() not in days:
            continue
        starts = [datetime(day.year, day.month, day.day, h, m, tzinfo=zone)
                  for h in schedule.get("hours") or [] for m in schedule.get("minutes") or []]
        past = [s for s in starts if s <= local]
        if past:
            return max(past)
    return None


def active_profile(profiles: list[dict[str, Any]], now: datetime) -> tuple[dict[str, Any], str] | None:
    """The profile autoscale runs at `now` and its kind (fixedDate, recurrence, default)."""
    for p in profiles:
        if fixed := p.get("fixedDate"):
            zone = timezones.zone(fixed.get("timeZone") or "")
            start, end = parse_time(fixed.get("start")), parse_time(fixed.get("end"))
            if start and end and absolute(start, zone) <= now <= absolute(end, zone):
                return p, "fixedDate"
    latest: tuple[datetime, dict[str, Any]] | None = None
    for p in profiles:
        if recurrence := p.get("recurrence"):
            started = last_start(recurrence.get("schedule") or {}, now)
            if started is not None and (latest is None or started > latest[0]):
                latest = (started, p)
    if latest is not None:
        return latest[1], "recurrence"
    for p in profiles:
        if not p.get("fixedDate") and not p.get("recurrence"):
            return p, "default"
    return None


# -- metrics -------------------------------------------------------------------------------------

def aggregate(points: Points, how: str) -> float | None:
    """A window's grain values combined by the rule's timeAggregation; None when there are none."""
    values = [v for _t, v in sorted(points, key=lambda p: p[0]) if v is not None]
    if not values:
        return None
    if how == "Minimum":
        return min(values)
    if how == "Maximum":
        return max(values)
    if how == "Total":
        return sum(values)
    if how == "Count":
        return float(len(values))
    if how == "Last":
        return values[-1]
    return sum(values) / len(values)


def fires(value: float, operator: str, threshold: float) -> bool:
    return {"Equals": value == threshold, "NotEquals": value != threshold, "GreaterThan": value > threshold,
            "GreaterThanOrEqual": value >= threshold, "LessThan": value < threshold,
            "LessThanOrEqual": value <= threshold}[operator]


def per_instance(trigger: dict[str, Any]) -> bool:
    """Whether the value shrinks as instances are added: an average, minimum or maximum over the
    instances, or any value divided per instance. Sums and counts over the set stay what they are."""
    return bool(trigger.get("dividePerInstance")) or trigger.get("statistic") in ("Average", "Min", "Max")


def project(value: float, trigger: dict[str, Any], current: int, new: int) -> float:
    if not per_instance(trigger) or new <= 0:
        return value
    return value * current / new


# -- rules ---------------------------------------------------------------------------------------

def direction_of(action: dict[str, Any], current: int) -> str | None:
    """Increase, Decrease, or None for a rule that would not change the count (an ExactCount with
    direction None counts as whichever way it points)."""
    if action.get("direction") in ("Increase", "Decrease"):
        return action["direction"]
    if action.get("type") == "ExactCount":
        value = int(action.get("value") or 0)
        return "Increase" if value > current else "Decrease" if value < current else None
    return None


def scaled(action: dict[str, Any], direction: str, current: int, low: int, high: int) -> int:
    """The count a rule's scaleAction asks for, within [low, high]."""
    kind, value = action.get("type"), int(action.get("value") or 1)
    sign = 1 if direction == "Increase" else -1
    if kind == "ExactCount":
        new = value
    elif kind == "PercentChangeCount":  # out rounds up, in rounds down: never less capacity than asked
        delta = current * value / 100
        new = current + sign * max(1, math.ceil(delta) if sign > 0 else math.floor(delta))
    elif kind == "ServiceAllowedNextValue":  # a scale set can take any count: the next one is one more or less
        new = current + sign
    else:
        new = current + sign * value
    return max(low, min(high, new))


def describe(trigger: dict[str, Any], value: float) -> str:
    """`Percentage CPU Average over PT5M was 85.3 > 70`."""
    each = " per instance" if trigger.get("dividePerInstance") else ""
    return (f"{trigger['metricName']} {trigger.get('timeAggregation', 'Average')}{each} over {trigger['timeWindow']} "
            f"was {round(value, 2):g} {SYMBOLS[trigger['operator']]} {trigger['threshold']:g}")


def cooldown_of(action: dict[str, Any]) -> float:
    return parse_duration(action.get("cooldown")) or 0.0


def decide(profile: dict[str, Any], current: int, observed: list[float | None], now: float,
           last: LastAction | None) -> Decision | None:
    """What autoscale does now, or None. `observed[i]` is rule i's value over its window (None: no data)."""
    cap = profile["capacity"]
    low, high, default = int(cap["minimum"]), int(cap["maximum"]), int(cap["default"])
    name = profile.get("name", "")
    if current < low:
        return Decision(current, low, "Increase", f"The instance count {current} is below the minimum {low} of "
                        f"profile '{name}': scale out from {current} to {low}", "bounds")
    if current > high:
        return Decision(current, high, "Decrease", f"The instance count {current} is above the maximum {high} of "
                        f"profile '{name}': scale in from {current} to {high}", "bounds")
    rules: list[dict[str, Any]] = profile.get("rules") or []
    if not rules:
        return None
    missing = [r for r, v in zip(rules, observed, strict=True) if v is None]
    if missing and current < default:
        t = missing[0]["metricTrigger"]
        return Decision(current, default, "Increase", f"No data for {t['metricName']} over {t['timeWindow']}: scale "
                        f"out to the default capacity of profile '{name}', from {current} to {default}", "default")
    if last is not None and now < last.time + last.cooldown:
        return None  # the last action's cooldown blocks both directions
    outs, ins = [], []
    for rule, value in zip(rules, observed, strict=True):
        way = direction_of(rule["scaleAction"], current)
        if way is not None:
            (outs if way == "Increase" else ins).append((rule, value))
    out = _scale_out(outs, current, low, high)
    if out is not None:  # a scale-out rule fired: never scale in then, even at the maximum
        return out if out.new != current else None
    return _scale_in(ins, outs, current, low, high)


def _scale_out(outs: list[tuple[dict[str, Any], float | None]], current: int, low: int, high: int) -> Decision | None:
    fired = [(scaled(r["scaleAction"], "Increase", current, low, high), r, v) for r, v in outs
             if v is not None and fires(v, r["metricTrigger"]["operator"], r["metricTrigger"]["threshold"])]
    if not fired:
        return None
    new, rule, value = max(fired, key=lambda f: f[0])
    if new <= current:  # at the maximum already
        return Decision(current, current, "Increase", "", "metric")
    return Decision(current, new, "Increase", f"{describe(rule['metricTrigger'], value)}: scale out from {current} "
                    f"to {new}", "metric", cooldown_of(rule["scaleAction"]))


def _scale_in(ins: list[tuple[dict[str, Any], float | None]], outs: list[tuple[dict[str, Any], float | None]],
              current: int, low: int, high: int) -> Decision | None:
    if not ins:
        return None
    for rule, value in ins:
        t = rule["metricTrigger"]
        if value is None or not fires(value, t["operator"], t["threshold"]):
            return None  # scale in only when every scale-in rule fires
    options = [(scaled(r["scaleAction"], "Decrease", current, low, high), r) for r, _v in ins]
    target, rule = max(options, key=lambda o: o[0])  # as little as any rule asks
    if target >= current:
        return None
    why = " and ".join(describe(r["metricTrigger"], v) for r, v in ins if v is not None)
    cooldown = cooldown_of(rule["scaleAction"])
    at_target = _would_scale_out(outs, current, target)
    if at_target is None:
        return Decision(current, target, "Decrease", f"{why}: scale in from {current} to {target}", "metric", cooldown)
    for new in range(target + 1, current):  # the smallest count at which nothing would scale out again
        if _would_scale_out(outs, current, new) is None:
            return Decision(current, new, "Decrease", f"{why}: scale in from {current} to {new}", "metric", cooldown,
                            flapping=f"Scale down will occur with updated instance count to avoid flapping: {new} "
                            f"instead of {target}, since at {target} {at_target}")
    return Decision(current, None, "Decrease", f"{why}: scale in from {current} to {target} deferred", "metric",
                    cooldown, flapping=f"Scale in from {current} to {target} deferred to avoid flapping: at {target} "
                    f"{at_target} and would scale out again")


def _would_scale_out(outs: list[tuple[dict[str, Any], float | None]], current: int, new: int) -> str | None:
    """Why `new` instances would fire a scale-out rule at once (the projected value), or None."""
    for rule, value in outs:
        t = rule["metricTrigger"]
        if value is None:
            continue
        projected = project(value, t, current, new)
        if fires(projected, t["operator"], t["threshold"]):
            return (f"instances {t['metricName']} would be {round(projected, 2):g} "
                    f"{SYMBOLS[t['operator']]} {t['threshold']:g}")
    return None
