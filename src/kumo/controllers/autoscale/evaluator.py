"""The autoscale evaluator: a background task that, every `KUMO_AUTOSCALE_SECONDS` (default 5), runs each
enabled autoscale setting once: picks its active profile, reads each rule's metric over its window from
`services.metrics`, decides as Azure does (`engine`) and scales the target scale set the way a PATCH of
`sku.capacity` would. Every action (and every failure) is an event on the setting, which the activity
log serves; the last actions live in the setting's hidden `kumo` member, so cooldowns survive a restart.
A setting that fails is logged and retried later; it never stops the others."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from kumo.arm.errors import ArmError
from kumo.arm.ids import parse_resource_id
from kumo.controllers.autoscale import engine, webhooks
from kumo.providers import lifecycle
from kumo.providers.insights.autoscale_schema import INTERNAL, VMSS_TYPE, parse_duration
from kumo.store import Resource

if TYPE_CHECKING:
    from kumo.arm.context import Services

log = logging.getLogger("kumo.autoscale")
SETTING_TYPE = "microsoft.insights/autoscalesettings"
CALLER = "Microsoft.Insights/autoscaleSettings"
BUSY = ("Creating", "Updating", "Deleting")  # the target is changing: a scale (or an edit) is under way
RETRY_SECONDS = 30.0  # after a failed scale action


class MetricSeries(Protocol):
    """What the evaluator needs of `services.metrics` (kumo.controllers.metrics.service)."""

    async def series(self, resource_id: str, metric: str, start: float, end: float, grain: float,
                     aggregation: str) -> list[tuple[float, float | None]]: ...


# event kinds on the setting (the activity log maps them to Azure's operation names)
SCALE_OUT, SCALE_IN, FLAPPING = "Autoscale/ScaleOut", "Autoscale/ScaleIn", "Autoscale/Flapping"
SCALE_OUT_FAILED, SCALE_IN_FAILED = "Autoscale/ScaleOutFailed", "Autoscale/ScaleInFailed"


async def set_capacity(services: "Services", target_id: str, capacity: int, why: str) -> Resource:
    """Scale a scale set as a PATCH of `sku.capacity` would: its stored body with the new capacity,
    through the scale set type's own PUT path (validation, desired state, the operation that converges)."""
    handler = services.providers.handler(VMSS_TYPE)
    if handler is None:
        raise ArmError(409, "OperationNotAllowed", f"kumo has no {VMSS_TYPE} provider to scale '{target_id}'.")
    async with services.store.read() as tx:
        row = await tx.get_resource(target_id.lower())
    rid = parse_resource_id(row.id) if row is not None else None
    if row is None or rid is None:
        raise ArmError(404, "ResourceNotFound", f"The scale set '{target_id}' was not found.")
    body = copy.deepcopy(row.body)
    body["sku"] = {**(body.get("sku") or {}), "capacity": capacity}
    resource, _created, _op = await lifecycle.apply_desired(services, rid, handler, body, why)
    return resource


def capacity_of(target: Resource) -> int | None:
    try:
        return int((target.body.get("sku") or {}).get("capacity"))
    except (TypeError, ValueError):
        return None


def last_action(setting: Resource) -> engine.LastAction | None:
    last = (setting.body.get(INTERNAL) or {}).get("lastAction")
    if not isinstance(last, dict):
        return None
    return engine.LastAction(float(last.get("time", 0)), float(last.get("cooldown", 0)),
                             str(last.get("direction", "")))


class Autoscaler:
    def __init__(self, services: "Services", period: float, *, clock: Callable[[], float] = time.time,
                 metrics: MetricSeries | None = None) -> None:
        self.services = services
        self.period = period
        self.clock = clock
        self._metrics = metrics  # tests pass their own; else services.metrics
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._retry_at: dict[str, float] = {}  # setting key -> when a failed setting is tried again
        self._noted: dict[str, str] = {}  # setting key -> the last note recorded (no repeats every run)

    @property
    def metrics(self) -> MetricSeries | None:
        return self._metrics or getattr(self.services, "metrics", None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="autoscale")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sends:
            await asyncio.wait(self._sends, timeout=webhooks.TIMEOUT)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # the store being away must not end autoscale for good
                log.exception("autoscale run failed")
            await asyncio.sleep(self.period)

    async def run_once(self) -> list[engine.Decision]:
        """One pass over every setting; the decisions acted on (tests read them)."""
        async with self.services.store.read() as tx:
            settings = await tx.resources_of_type(SETTING_TYPE)
        done = []
        for setting in settings:
            if self._retry_at.get(setting.key, 0) > self.clock():
                continue
            try:
                decision = await asyncio.wait_for(self.evaluate(setting), timeout=max(30.0, 4 * self.period))
            except Exception as e:
                log.exception("autoscale setting %s failed", setting.id)
                self._retry_at[setting.key] = self.clock() + RETRY_SECONDS
                await self._note(setting, SCALE_OUT_FAILED, f"Autoscale could not evaluate the setting: {e}")
                continue
            if decision is not None:
                done.append(decision)
        return done

    async def evaluate(self, setting: Resource) -> engine.Decision | None:
        props = setting.body.get("properties") or {}
        if props.get("enabled") is False or setting.provisioning_state == "Deleting":
            return None
        uri = props.get("targetResourceUri") or ""
        async with self.services.store.read() as tx:
            target = await tx.get_resource(uri.lower())
        if target is None:
            await self._note(setting, SCALE_OUT_FAILED, f"The target resource '{uri}' does not exist: nothing to "
                             "scale.")
            return None
        current = capacity_of(target)
        if current is None or target.provisioning_state in BUSY:
            return None
        now = self.clock()
        chosen = engine.active_profile(props.get("profiles") or [], datetime.fromtimestamp(now, timezone.utc))
        if chosen is None:
            return None
        profile, _kind = chosen
        observed = [await self.observe(rule["metricTrigger"], current, now) for rule in profile.get("rules") or []]
        decision = engine.decide(profile, current, observed, now, last_action(setting))
        if decision is None:
            self._noted.pop(setting.key, None)
            return None
        if decision.flapping:  # noted once per deferred change, however its projected values move
            await self._note(setting, FLAPPING, decision.flapping, decision, profile,
                             key=f"flapping {decision.old}->{decision.new}")
        if decision.new is None:
            return None  # deferred: the next run looks again
        await self._scale(setting, target, decision, profile, now)
        return decision

    async def observe(self, trigger: dict[str, Any], current: int, now: float) -> float | None:
        """A rule's metric over its window: `statistic` per grain, then `timeAggregation` over the window
        (divided by the instance count for dividePerInstance); None when there is no data."""
        metrics = self.metrics
        if metrics is None:
            return None
        grain = parse_duration(trigger["timeGrain"]) or 60.0
        window = parse_duration(trigger["timeWindow"]) or grain
        try:
            points = await metrics.series(trigger["metricResourceUri"], trigger["metricName"], now - window, now,
                                          grain, engine.STATISTIC_AGGREGATION[trigger["statistic"]])
        except ArmError as e:  # an unknown metric or resource: the rule has no data
            log.debug("autoscale metric %s of %s: %s", trigger["metricName"], trigger["metricResourceUri"], e.message)
            return None
        value = engine.aggregate(points, trigger.get("timeAggregation") or "Average")
        if value is not None and trigger.get("dividePerInstance"):
            value = value / current if current > 0 else None
        return value

    async def _scale(self, setting: Resource, target: Resource, d: engine.Decision, profile: dict[str, Any],
                     now: float) -> None:
        assert d.new is not None
        out = d.new > d.old
        try:
            await set_capacity(self.services, target.id, d.new, f"autoscale setting '{setting.name}': {d.reason} by "
                               f"{CALLER}")
        except Exception as e:
            message = e.message if isinstance(e, ArmError) else str(e)
            if not isinstance(e, ArmError):
                log.exception("autoscale of %s failed", target.id)
            self._retry_at[setting.key] = now + RETRY_SECONDS
            await self._record(setting, SCALE_OUT_FAILED if out else SCALE_IN_FAILED,
                               f"{d.reason} failed: {message}", d, profile, target)
            return
        log.info("autoscale %s: %s", setting.id, d.reason)
        self._noted.pop(setting.key, None)
        await self._record(setting, SCALE_OUT if out else SCALE_IN, d.reason, d, profile, target, scaled_at=now)
        for hook in webhooks.webhooks_of(setting):
            body = webhooks.payload(setting, target, d.old, d.new, f"Autoscale successfully started scale operation "
                                    f"for resource '{target.name}' from capacity '{d.old}' to capacity '{d.new}'",
                                    now, hook.get("properties") or {})
            task = asyncio.create_task(webhooks.post(hook["serviceUri"], body, self.services.settings.paths.ca_bundle))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _note(self, setting: Resource, kind: str, message: str, d: engine.Decision | None = None,
                    profile: dict[str, Any] | None = None, *, key: str | None = None) -> None:
        """An event that would repeat every run (a missing target, a deferred scale-in): recorded once."""
        if self._noted.get(setting.key) == (key or message):
            return
        self._noted[setting.key] = key or message
        log.info("autoscale %s: %s", setting.id, message)
        await self._record(setting, kind, message, d, profile, None)

    async def _record(self, setting: Resource, kind: str, message: str, d: engine.Decision | None,
                      profile: dict[str, Any] | None, target: Resource | None, scaled_at: float | None = None) -> None:
        """The event (its message a JSON object the activity log reads) and, after a scale action, the
        last action's time and cooldown in the setting's own row."""
        detail: dict[str, Any] = {"description": message}
        if d is not None:
            detail.update(old=d.old, new=d.new, direction=d.direction)
        if profile is not None:
            detail["profile"] = profile.get("name")
        detail["target"] = target.id if target is not None else (setting.body.get("properties") or {}).get(
            "targetResourceUri")
        async with self.services.store.write() as tx:
            row = await tx.get_resource(setting.key)
            if row is None:
                return  # deleted meanwhile
            if scaled_at is not None and d is not None:
                internal = row.body.setdefault(INTERNAL, {})
                internal["lastScaleOut" if d.direction == "Increase" else "lastScaleIn"] = scaled_at
                internal["lastAction"] = {"time": scaled_at, "cooldown": d.cooldown, "direction": d.direction}
                await tx.put_resource(row)
            await tx.add_event(setting.key, kind, json.dumps(detail))
