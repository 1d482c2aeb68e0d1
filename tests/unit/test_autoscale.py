"""Autoscale: the setting's body rules, Azure's decision rules (profile choice, any-out/all-in, flapping,
cooldown, clamping), ISO durations, the activity log's filter and shape, and the evaluator scaling a
fake scale set from a fake metrics source through the real store and lifecycle."""

from __future__ import annotations

import asyncio
import copy
import json
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from kumo.arm.errors import ArmError
from kumo.arm.ids import ResourceId, parse_resource_id, resource_group_key
from kumo.config import Settings
from kumo.controllers.autoscale import engine
from kumo.controllers.autoscale.evaluator import Autoscaler
from kumo.providers import lifecycle
from kumo.providers.base import ProviderRegistry, ResourceType
from kumo.providers.insights import activity_log
from kumo.providers.insights import autoscale_schema as schema
from kumo.providers.insights.autoscale import AutoscaleSettings
from kumo.store import Resource, Store

SUB = "00000000-0000-0000-0000-0000000000aa"
VMSS = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss1"
SETTING = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Insights/autoscaleSettings/as1"


def rule(direction: str = "Increase", operator: str = "GreaterThan", threshold: float = 70, value: str = "1",
         kind: str = "ChangeCount", cooldown: str = "PT5M", statistic: str = "Average", **trigger: Any) -> dict:
    return {"metricTrigger": {"metricName": "Percentage CPU", "metricResourceUri": VMSS, "timeGrain": "PT1M",
                              "statistic": statistic, "timeWindow": "PT5M", "timeAggregation": "Average",
                              "operator": operator, "threshold": threshold, **trigger},
            "scaleAction": {"direction": direction, "type": kind, "value": value, "cooldown": cooldown}}


def setting_props(*rules: dict, minimum: str = "1", maximum: str = "5", default: str = "1", **extra: Any) -> dict:
    return {"profiles": [{"name": "default", "capacity": {"minimum": minimum, "maximum": maximum,
                                                          "default": default}, "rules": list(rules)}],
            "enabled": True, "targetResourceUri": VMSS, **extra}


def error_of(props: dict) -> ArmError:
    with pytest.raises(ArmError) as e:
        schema.normalise("as1", props)
    return e.value


# -- ISO 8601 durations ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("PT1M", 60), ("PT10S", 10), ("PT1H30M", 5400), ("P1D", 86400),
                                          ("P1W", 604800), ("pt5m", 300), ("PT0.5S", 0.5)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert schema.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["P", "PT", "5M", "PT5", "P1Y", "", None, 60, "PT-1S"])
def test_durations_refuse_what_is_not_one(text: Any) -> None:
    assert schema.parse_duration(text) is None


def test_durations_format_for_messages() -> None:
    assert [schema.format_duration(s) for s in (10, 300, 90, 86400, 0)] == ["PT10S", "PT5M", "PT1M30S", "P1D", "PT0S"]


# -- the body --------------------------------------------------------------------------------------

def test_what_az_sends_is_kept_with_azure_defaults() -> None:
    props = setting_props(rule(), name="as1", notifications=[{"email": {"customEmails": []}, "operation": "scale",
                                                               "webhooks": []}])
    out = schema.normalise("as1", props)
    assert list(out)[:4] == ["profiles", "enabled", "name", "targetResourceUri"]
    trigger = out["profiles"][0]["rules"][0]["metricTrigger"]
    assert trigger["metricNamespace"] == "" and trigger["dimensions"] is None and trigger["dividePerInstance"] is False
    assert trigger["threshold"] == 70.0
    assert out["notifications"][0]["operation"] == "Scale"
    assert out["notifications"][0]["email"]["sendToSubscriptionAdministrator"] is False
    assert out["predictiveAutoscalePolicy"] == {"scaleMode": "Disabled", "scaleLookAheadTime": None}


def test_defaults_unknown_fields_and_read_only_ones() -> None:
    r = rule(statistic="average", operator="greaterthan")
    del r["metricTrigger"]["metricResourceUri"], r["metricTrigger"]["timeAggregation"]
    r["metricTrigger"]["futureField"] = 1
    out = schema.normalise("as1", setting_props(r, provisioningState="Succeeded", somethingNew={"a": 1}))
    t = out["profiles"][0]["rules"][0]["metricTrigger"]
    assert t["metricResourceUri"] == VMSS and t["timeAggregation"] == "Average"
    assert t["statistic"] == "Average" and t["operator"] == "GreaterThan" and t["futureField"] == 1
    assert out["somethingNew"] == {"a": 1} and "provisioningState" not in out and out["name"] == "as1"


def test_short_windows_are_a_kumo_extension() -> None:
    out = schema.normalise("as1", setting_props(rule(cooldown="PT10S") | {
        "metricTrigger": rule()["metricTrigger"] | {"timeGrain": "PT5S", "timeWindow": "PT10S"}}))
    assert out["profiles"][0]["rules"][0]["scaleAction"]["cooldown"] == "PT10S"
    e = error_of(setting_props({"metricTrigger": rule()["metricTrigger"] | {"timeGrain": "PT13H"},
                                "scaleAction": rule()["scaleAction"]}))
    assert e.code == "BadRequest" and "timeGrain" in e.message
    e = error_of(setting_props({"metricTrigger": rule()["metricTrigger"] | {"timeGrain": "PT5M", "timeWindow": "PT1M"},
                                "scaleAction": rule()["scaleAction"]}))
    assert "shorter than its timeGrain" in e.message


@pytest.mark.parametrize("capacity,fragment", [
    (("6", "10", "1"), "The minimum capacity value '6' that you specified in the autoscale setting is greater than "
                       "the default capacity of '1'"),
    (("1", "5", "7"), "default capacity value '7'"),
    (("1", "1001", "1"), "1000"),
])
def test_capacity_rules(capacity: tuple[str, str, str], fragment: str) -> None:
    e = error_of(setting_props(minimum=capacity[0], maximum=capacity[1], default=capacity[2]))
    assert (e.status, e.code) == (400, "BadRequest") and fragment in e.message


def test_capacity_must_be_whole_numbers() -> None:
    e = error_of(setting_props(minimum="one"))
    assert e.code == "UnsupportedRequestContent" and "capacity.minimum" in e.message


def test_profile_and_rule_counts() -> None:
    props = setting_props()
    props["profiles"] = props["profiles"] * 21
    assert "at most 20" in error_of(props).message
    assert "at most 10" in error_of(setting_props(*[rule()] * 11)).message
    assert error_of({"targetResourceUri": VMSS}).code == "UnsupportedRequestContent"


def test_enums_and_required_fields() -> None:
    e = error_of(setting_props(rule(statistic="Median")))
    assert e.code == "UnsupportedRequestContent" and "Average, Min, Max, Sum, Count" in e.message
    e = error_of(setting_props(rule(direction="Up")))
    assert "scaleAction.direction" in e.target
    bad = rule()
    del bad["metricTrigger"]["threshold"]
    assert "threshold" in error_of(setting_props(bad)).message


def test_scale_action_value_against_the_capacity_range() -> None:
    e = error_of(setting_props(rule(value="10"), maximum="10"))
    assert e.code == "InvalidActionValue" and "capacity maximum 10 and the capacity minimum 1" in e.message
    assert schema.normalise("as1", setting_props(rule(value="50", kind="PercentChangeCount")))


def test_target_must_be_a_scale_set() -> None:
    e = error_of(setting_props() | {"targetResourceUri": VMSS.replace("virtualMachineScaleSets", "virtualMachines")})
    assert e.code == "BadRequest" and "virtual machine scale sets" in e.message
    assert error_of(setting_props() | {"targetResourceUri": "not-an-id"}).code == "UnsupportedRequestContent"


def test_webhooks_only_to_loopback() -> None:
    def hooks(uri: str) -> dict:
        return setting_props(notifications=[{"operation": "Scale", "webhooks": [{"serviceUri": uri}]}])

    for ok in ("http://127.0.0.1:8080/hook", "https://localhost/x", "http://[::1]:9/"):
        assert schema.normalise("as1", hooks(ok))["notifications"][0]["webhooks"][0]["serviceUri"] == ok
    e = error_of(hooks("https://example.com/hook"))
    assert e.status == 400 and "notifications[0].webhooks[0]" in e.message and "example.com" in e.message
    assert error_of(hooks("ftp://127.0.0.1/")).status == 400


def test_schedules() -> None:
    fixed = setting_props()
    fixed["profiles"].append({"name": "event", "capacity": {"minimum": "1", "maximum": "5", "default": "3"},
                              "rules": [], "fixedDate": {"timeZone": "pacific standard time",
                                                         "start": "2018-03-01T00:00:00.000Z",
                                                         "end": "2018-04-01T00:00:00.000Z"}})
    out = schema.normalise("as1", fixed)["profiles"][1]["fixedDate"]
    assert out == {"timeZone": "Pacific Standard Time", "start": "2018-03-01T00:00:00Z", "end": "2018-04-01T00:00:00Z"}
    backwards = copy.deepcopy(fixed)
    backwards["profiles"][1]["fixedDate"]["end"] = "2018-02-01T00:00:00Z"
    assert "later than its start" in error_of(backwards).message
    zone = copy.deepcopy(fixed)
    zone["profiles"][1]["fixedDate"]["timeZone"] = "Mars Standard Time"
    assert "unknown time zone" in error_of(zone).message
    both = copy.deepcopy(fixed)
    both["profiles"][1]["recurrence"] = {"frequency": "Week", "schedule": {"timeZone": "UTC", "days": ["Monday"],
                                                                           "hours": [1], "minutes": [0]}}
    assert "both fixedDate and recurrence" in error_of(both).message
    daily = copy.deepcopy(both)
    del daily["profiles"][1]["fixedDate"]
    daily["profiles"][1]["recurrence"]["frequency"] = "Day"
    assert "must be Week" in error_of(daily).message
    daily["profiles"][1]["recurrence"]["frequency"] = "week"
    daily["profiles"][1]["recurrence"]["schedule"]["days"] = ["saturday"]
    assert schema.normalise("as1", daily)["profiles"][1]["recurrence"]["schedule"]["days"] == ["Saturday"]


def test_what_kumo_cannot_honour_is_refused() -> None:
    dims = rule(dimensions=[{"DimensionName": "VMName", "Operator": "Equals", "Values": ["a"]}])
    assert "no dimensions" in error_of(setting_props(dims)).message
    assert "predictive" in error_of(setting_props(predictiveAutoscalePolicy={"scaleMode": "Enabled"})).message


# -- profiles --------------------------------------------------------------------------------------

def profile(name: str, **schedule: Any) -> dict:
    return {"name": name, "capacity": {"minimum": "1", "maximum": "5", "default": "1"}, "rules": [], **schedule}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def test_fixed_date_profiles_come_first_in_their_time_zone() -> None:
    profiles = [profile("default"),
                profile("weekend", recurrence={"frequency": "Week", "schedule": {
                    "timeZone": "UTC", "days": ["Saturday", "Sunday"], "hours": [6], "minutes": [0]}}),
                profile("launch", fixedDate={"timeZone": "Pacific Standard Time", "start": "2026-03-07T00:00:00",
                                             "end": "2026-03-07T23:59:00"})]
    # 2026-03-07 is a Saturday; midnight in Los Angeles is 08:00 UTC
    assert engine.active_profile(profiles, at("2026-03-07T07:59:00+00:00"))[0]["name"] == "weekend"
    assert engine.active_profile(profiles, at("2026-03-07T08:00:00+00:00")) == (profiles[2], "fixedDate")
    assert engine.active_profile(profiles, at("2026-03-08T07:59:00+00:00"))[1] == "fixedDate"
    assert engine.active_profile(profiles, at("2026-03-08T08:00:00+00:00"))[0]["name"] == "weekend"


def test_recurring_profiles_run_until_the_next_one_starts() -> None:
    week = {"frequency": "Week"}
    profiles = [profile("default"),
                profile("day", recurrence=week | {"schedule": {"timeZone": "W. Europe Standard Time", "days": [
                    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday"], "hours": [8], "minutes": [30]}}),
                profile("night", recurrence=week | {"schedule": {"timeZone": "W. Europe Standard Time", "days": [
                    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday"], "hours": [19], "minutes": [0]}})]
    # Berlin is UTC+1 in January: 08:30 local is 07:30 UTC
    assert engine.active_profile(profiles, at("2026-01-14T07:29:00+00:00"))[0]["name"] == "night"
    assert engine.active_profile(profiles, at("2026-01-14T07:30:00+00:00"))[0]["name"] == "day"
    assert engine.active_profile(profiles, at("2026-01-14T18:00:00+00:00"))[0]["name"] == "night"
    # Saturday: Friday's night profile still runs
    assert engine.active_profile(profiles, at("2026-01-17T12:00:00+00:00"))[0]["name"] == "night"
    assert engine.active_profile([profiles[0]], at("2026-01-17T12:00:00+00:00")) == (profiles[0], "default")
    assert engine.active_profile([profiles[1]], at("2026-01-17T12:00:00+00:00"))[0]["name"] == "day"


# -- decisions -------------------------------------------------------------------------------------

def prof(*rules: dict, minimum: int = 1, maximum: int = 10, default: int = 1) -> dict:
    return {"name": "p", "capacity": {"minimum": str(minimum), "maximum": str(maximum), "default": str(default)},
            "rules": list(rules)}


NOW = 1_800_000_000.0


def test_any_scale_out_rule_fires_and_the_largest_count_wins() -> None:
    p = prof(rule(value="1"), rule(value="3", threshold=90), rule(kind="PercentChangeCount", value="50"))
    d = engine.decide(p, 2, [85.0, 95.0, 85.0], NOW, None)
    assert d is not None and (d.old, d.new, d.direction) == (2, 5, "Increase")
    assert d.reason == "Percentage CPU Average over PT5M was 95 > 90: scale out from 2 to 5"
    d = engine.decide(p, 2, [85.0, 80.0, None], NOW, None)
    assert d is not None and d.new == 3 and d.cooldown == 300


def test_scale_in_needs_every_scale_in_rule() -> None:
    p = prof(rule(), rule("Decrease", "LessThan", 30), rule("Decrease", "LessThan", 100, metricName="Memory"))
    assert engine.decide(p, 4, [20.0, 20.0, 150.0], NOW, None) is None
    assert engine.decide(p, 4, [20.0, 20.0, None], NOW, None) is None  # no data decides nothing
    d = engine.decide(p, 4, [20.0, 20.0, 50.0], NOW, None)
    assert d is not None and (d.new, d.direction, d.flapping) == (3, "Decrease", None)
    assert "and Memory" in d.reason


def test_scale_in_by_as_little_as_any_rule_asks() -> None:
    p = prof(rule("Decrease", "LessThan", 30, value="3"), rule("Decrease", "LessThan", 30, value="50",
                                                              kind="PercentChangeCount"))
    d = engine.decide(p, 10, [5.0, 5.0], NOW, None)
    assert d is not None and d.new == 7  # 10-3=7 beats 10-5=5


def test_flapping_defers_a_scale_in_that_would_scale_out_again() -> None:
    # Azure's example: out when CPU > 50, in when < 30; 2 instances at 28% would be 56% on one
    p = prof(rule(threshold=50), rule("Decrease", "LessThan", 30))
    d = engine.decide(p, 2, [28.0, 28.0], NOW, None)
    assert d is not None and d.new is None and "deferred to avoid flapping" in (d.flapping or "")
    d = engine.decide(p, 2, [20.0, 20.0], NOW, None)
    assert d is not None and d.new == 1 and d.flapping is None


def test_flapping_reduces_a_large_scale_in() -> None:
    # Azure's example: 30 instances at 65% CPU and 50 requests each; scaling in by 10 to 20 would put the CPU at
    # 97.5% > 70, and 28 is the smallest count that keeps it under (30 * 65 / 28 = 69.6)
    p = prof(rule(threshold=70, metricName="CPU"), rule("Decrease", "LessThanOrEqual", 50, value="10",
                                                        metricName="Requests", statistic="Sum",
                                                        dividePerInstance=True), maximum=40)
    d = engine.decide(p, 30, [65.0, 50.0], NOW, None)
    assert d is not None and d.new == 28 and "updated instance count to avoid flapping" in (d.flapping or "")


def test_totals_are_not_projected() -> None:
    total = rule(threshold=100, statistic="Sum")
    assert engine.project(80.0, total["metricTrigger"], 4, 2) == 80.0
    assert engine.project(80.0, rule()["metricTrigger"], 4, 2) == 160.0
    assert engine.project(80.0, total["metricTrigger"] | {"dividePerInstance": True}, 4, 2) == 160.0


def test_cooldown_of_the_last_action_blocks_both_directions() -> None:
    p = prof(rule(), rule("Decrease", "LessThan", 30))
    last = engine.LastAction(NOW - 100, 300, "Increase")
    assert engine.decide(p, 3, [90.0, 90.0], NOW, last) is None
    assert engine.decide(p, 3, [10.0, 10.0], NOW, last) is None
    assert engine.decide(p, 3, [90.0, 90.0], NOW + 200, last) is not None


def test_counts_outside_the_range_come_back_inside_without_rules() -> None:
    p = prof(minimum=2, maximum=4, default=2)
    up = engine.decide(p, 1, [], NOW, engine.LastAction(NOW, 3600, "Decrease"))
    assert up is not None and (up.new, up.kind) == (2, "bounds")
    down = engine.decide(p, 9, [], NOW, None)
    assert down is not None and (down.new, down.direction) == (4, "Decrease")
    assert engine.decide(p, 3, [], NOW, None) is None


def test_scale_out_is_clamped_to_the_maximum() -> None:
    p = prof(rule(value="5"), rule("Decrease", "LessThan", 30), maximum=4)
    d = engine.decide(p, 2, [99.0, 99.0], NOW, None)
    assert d is not None and d.new == 4
    assert engine.decide(p, 4, [99.0, 99.0], NOW, None) is None  # at the maximum, and never a scale-in


def test_no_metric_data_goes_to_the_default_only_when_below_it() -> None:
    p = prof(rule(), rule("Decrease", "LessThan", 30), default=3)
    d = engine.decide(p, 2, [None, None], NOW, None)
    assert d is not None and (d.new, d.kind) == (3, "default") and d.reason.startswith("No data for Percentage CPU")
    assert engine.decide(p, 3, [None, None], NOW, None) is None


def test_exact_count_with_direction_none_points_either_way() -> None:
    p = prof(rule("None", value="6", kind="ExactCount"))
    d = engine.decide(p, 2, [80.0], NOW, None)
    assert d is not None and (d.new, d.direction) == (6, "Increase")
    d = engine.decide(p, 8, [80.0], NOW, None)
    assert d is not None and (d.new, d.direction) == (6, "Decrease")


@pytest.mark.parametrize("how,expected", [("Average", 20.0), ("Minimum", 10.0), ("Maximum", 30.0), ("Total", 60.0),
                                          ("Count", 3.0), ("Last", 30.0)])
def test_time_aggregation_over_the_window(how: str, expected: float) -> None:
    points = [(3.0, 30.0), (1.0, 10.0), (2.0, 20.0), (4.0, None)]
    assert engine.aggregate(points, how) == expected
    assert engine.aggregate([(1.0, None)], how) is None


# -- the activity log ------------------------------------------------------------------------------

def test_activity_log_filters_as_az_sends_them() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=timezone.utc).timestamp()
    q = activity_log.parse_filter("eventTimestamp ge 2026-05-01T11:00:00.123456 and eventTimestamp le "
                                  "2026-05-01T12:00:00.123456 and resourceGroupName eq 'MyRG'", SUB, now)
    assert q.scope == f"/subscriptions/{SUB}/resourcegroups/myrg" and q.end - q.start == pytest.approx(3600)
    q = activity_log.parse_filter("eventTimestamp ge '2026-05-01T11:00:00Z' and eventTimestamp le "
                                  "'2026-05-01T12:00:00Z' and resourceUri eq '/X/Y' and status eq 'Failed'", SUB, now)
    assert q.scope == "/x/y" and q.where == {"status": "failed"}
    for bad, text in [(None, "required"), ("eventTimestamp le '2026-05-01T12:00:00Z'", "start time"),
                      ("eventTimestamp ge '2025-01-01T00:00:00Z'", "90 days"),
                      ("eventTimestamp ge '2026-05-01T11:00:00Z' or x eq 'y'", "not supported"),
                      ("eventTimestamp ge '2026-05-01T11:00:00Z' and color eq 'red'", "color")]:
        with pytest.raises(ArmError) as e:
            activity_log.parse_filter(bad, SUB, now)
        assert e.value.status == 400 and text in e.value.message


# -- the evaluator, with a fake scale set and a fake metrics source --------------------------------

class FakeScaleSets(ResourceType):
    """A stand-in scale set type: keeps `sku.capacity`, synchronous, no host effects."""

    namespace = "Microsoft.Compute"
    type_path = ("virtualMachineScaleSets",)
    api_versions = ("2024-11-01",)
    long_running = False

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        return {"sku": {"name": "Standard_B1s", "capacity": int(body["sku"]["capacity"])}, "properties": {}}


class FakeMetrics:
    """Unit tests only: a metrics source whose value the test sets."""

    def __init__(self) -> None:
        self.value: float | None = 90.0
        self.calls: list[tuple[str, str, float, str]] = []

    async def series(self, resource_id: str, metric: str, start: float, end: float, grain: float,
                     aggregation: str) -> list[tuple[float, float | None]]:
        self.calls.append((resource_id, metric, grain, aggregation))
        t, points = start, []
        while t < end:
            points.append((t, self.value))
            t += grain
        return points


async def add_group(store: Store) -> None:
    async with store.write() as tx:
        await tx.put_resource(Resource(key=resource_group_key(SUB, "rg"), id=f"/subscriptions/{SUB}/resourceGroups/rg",
                                       subscription_id=SUB, resource_group="rg", name="rg", body={},
                                       type="microsoft.resources/resourcegroups", provisioning_state="Succeeded",
                                       location="local"))


class Hook:
    """A loopback HTTP server that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.got = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length"))
        self.bodies.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        self.got.set()


async def test_evaluator_scales_a_scale_set_records_and_notifies(tmp_path: Path) -> None:
    store = await Store.open(None, tmp_path / "kumo.db")
    hook = Hook()
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registry = ProviderRegistry()
    registry.add(FakeScaleSets())
    registry.add(AutoscaleSettings())
    services = types.SimpleNamespace(store=store, providers=registry, settings=Settings(data_dir=tmp_path))
    try:
        await add_group(store)
        vmss_rid, setting_rid = parse_resource_id(VMSS), parse_resource_id(SETTING)
        assert vmss_rid and setting_rid
        await lifecycle.apply_desired(services, vmss_rid, registry.handler(vmss_rid.type), {
            "location": "local", "sku": {"capacity": 1}}, "test")
        out_rule = rule(cooldown="PT10S") | {"metricTrigger": rule()["metricTrigger"] | {
            "timeGrain": "PT5S", "timeWindow": "PT10S"}}
        in_rule = rule("Decrease", "LessThan", 30, cooldown="PT10S") | {"metricTrigger": rule(
            "Decrease", "LessThan", 30)["metricTrigger"] | {"timeGrain": "PT5S", "timeWindow": "PT10S"}}
        notes = [{"operation": "Scale", "webhooks": [{"serviceUri": f"http://127.0.0.1:{port}/hook",
                                                      "properties": {"team": "blue"}}]}]
        await lifecycle.apply_desired(services, setting_rid, registry.handler(setting_rid.type), {
            "location": "local", "properties": setting_props(out_rule, in_rule, notifications=notes)}, "test")

        clock = [NOW]
        metrics = FakeMetrics()
        scaler = Autoscaler(services, 5, clock=lambda: clock[0], metrics=metrics)  # type: ignore[arg-type]

        async def capacity() -> int:
            async with store.read() as tx:
                row = await tx.get_resource(vmss_rid.key)
            assert row is not None
            return row.body["sku"]["capacity"]

        decisions = await scaler.run_once()
        assert [(d.old, d.new) for d in decisions] == [(1, 2)] and await capacity() == 2
        assert metrics.calls[0] == (VMSS, "Percentage CPU", 5.0, "Average")
        await asyncio.wait_for(hook.got.wait(), 10)
        sent = hook.bodies[0]
        assert sent["operation"] == "Scale Out" and sent["status"] == "Activated"
        assert sent["context"]["oldCapacity"] == "1" and sent["context"]["newCapacity"] == "2"
        assert sent["context"]["resourceId"] == VMSS and sent["properties"] == {"team": "blue"}

        clock[0] += 5  # within the 10 s cooldown: nothing, in either direction
        assert await scaler.run_once() == [] and await capacity() == 2
        metrics.value = 10.0
        assert await scaler.run_once() == []
        # a restart: a new evaluator reads the last action from the row, so the cooldown still holds
        again = Autoscaler(services, 5, clock=lambda: clock[0], metrics=metrics)  # type: ignore[arg-type]
        assert await again.run_once() == []
        clock[0] += 6
        assert [(d.old, d.new) for d in await again.run_once()] == [(2, 1)] and await capacity() == 1

        async with store.read() as tx:
            row = await tx.get_resource(setting_rid.key)
            events = [e for e in await tx.events_for(setting_rid.key) if e.kind.startswith("Autoscale/")]
        assert row is not None and row.body["kumo"]["lastAction"]["direction"] == "Decrease"
        assert "kumo" not in AutoscaleSettings().view(row)
        assert [e.kind for e in events] == ["Autoscale/ScaleOut", "Autoscale/ScaleIn"]
        assert json.loads(events[0].message)["description"] == \
            "Percentage CPU Average over PT10S was 90 > 70: scale out from 1 to 2"
        item = activity_log.Item(1, events[0], SETTING)
        data = activity_log.event_data(item, SUB, "tenant")
        assert data["operationName"]["value"] == "Microsoft.Insights/AutoscaleSettings/Scaleup/Action"
        assert data["category"]["value"] == "Autoscale" and data["status"]["value"] == "Succeeded"
        assert data["properties"]["NewInstancesCount"] == "2" and data["resourceGroupName"] == "rg"

        # a PUT of the setting (as az's rule create does) keeps the hidden last action
        await lifecycle.apply_desired(services, setting_rid, registry.handler(setting_rid.type), {
            "location": "local", "kumo": {"lastAction": None}, "properties": setting_props(out_rule, in_rule)}, "test")
        async with store.read() as tx:
            row = await tx.get_resource(setting_rid.key)
        assert row is not None and row.body["kumo"]["lastAction"]["direction"] == "Decrease"

        # a disabled setting does nothing; a missing target is noted once
        clock[0] += 60
        metrics.value = 95.0
        props = setting_props(out_rule, in_rule, enabled=False)
        await lifecycle.apply_desired(services, setting_rid, registry.handler(setting_rid.type), {
            "location": "local", "properties": props}, "test")
        assert await scaler.run_once() == [] and await capacity() == 1
        await scaler.close()
        await again.close()
    finally:
        server.close()
        await store.close()


async def test_put_validates_the_target_against_the_store(tmp_path: Path) -> None:
    store = await Store.open(None, tmp_path / "kumo.db")
    registry = ProviderRegistry()
    registry.add(AutoscaleSettings())
    services = types.SimpleNamespace(store=store, providers=registry, settings=Settings(data_dir=tmp_path))
    try:
        await add_group(store)
        rid = parse_resource_id(SETTING)
        assert rid is not None
        with pytest.raises(ArmError) as e:
            await lifecycle.apply_desired(services, rid, registry.handler(rid.type),
                                          {"location": "local", "properties": setting_props()}, "test")
        assert (e.value.status, e.value.code) == (400, "TargetResourceNotFound")
    finally:
        await store.close()
