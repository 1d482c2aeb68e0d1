"""Metrics: query parameter parsing, aggregation into buckets, the ring buffer, counter deltas, /proc parsing,
extension paths, and MetricsService.series over a real store (with a fake source: unit tests only)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from kumo.arm import ids
from kumo.arm.errors import ArmError
from kumo.controllers.metrics import procfs
from kumo.controllers.metrics.aggregate import MAX_POINTS, bucketize
from kumo.controllers.metrics.base import Deltas, MetricDefinition, MetricSource, Tick, Values
from kumo.controllers.metrics.buffer import SampleBuffer
from kumo.controllers.metrics.sampler import Sampler
from kumo.controllers.metrics.service import MetricsService
from kumo.providers.insights import metrics_query as q
from kumo.store import Resource, Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


def _bad(excinfo: pytest.ExceptionInfo[ArmError]) -> None:
    assert excinfo.value.status == 400 and excinfo.value.code == "BadRequest"


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT5S", 5), ("PT1M", 60), ("pt1h30m", 5400), ("P1D", 86400), ("P1DT1S", 86401), ("P1W", 604800),
    ("PT0.5S", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert q.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "P1Y", "P1M", "5S", "PT-1S", "P1DT"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        q.parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(5, "PT5S"), (60, "PT1M"), (90, "PT1M30S"), (3600, "PT1H"),
                                               (7200, "PT2H"), (86400, "P1D"), (90000, "P1DT1H"), (0, "PT0S")])
def test_format_duration(seconds: float, text: str) -> None:
    assert q.format_duration(seconds) == text


def test_timespans() -> None:
    end = T0 + 3600
    assert q.parse_timespan("2024-05-01T12:00:00Z/2024-05-01T13:00:00Z", 0) == (T0, end)
    assert q.parse_timespan("2024-05-01T12:00:00/2024-05-01T13:00:00.1234567Z", 0) == (T0, end + 0.123456)
    assert q.parse_timespan("2024-05-01T14:00:00+02:00/PT1H", 0) == (T0, end)
    assert q.parse_timespan("2024-05-01T14:00:00 02:00/PT1H", 0) == (T0, end)  # an unencoded '+'
    assert q.parse_timespan("PT1H/2024-05-01T13:00:00Z", 0) == (T0, end)
    assert q.parse_timespan("PT10M", end) == (end - 600, end)
    assert q.parse_timespan(None, end) == (T0, end)
    # az quotes the timespan, then its client encodes it again: one level of encoding arrives
    assert q.parse_timespan(quote_plus("2024-05-01T12:00:00.000001/2024-05-01T13:00:00"), 0) == (T0 + 1e-6, end)
    for bad in ("yesterday/today", "2024-05-01T13:00:00Z/2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z/P1Y"):
        with pytest.raises(ArmError) as e:
            q.parse_timespan(bad, 0)
        _bad(e)


def test_intervals() -> None:
    assert q.parse_interval(None, 0, 3600) == 60
    assert q.parse_interval("PT5S", 0, 3600) == 5
    assert q.parse_interval("full", 100, 3700) == 3600
    for bad in ("PT0.5S", "PT1.5S", "PT0S", "soon"):
        with pytest.raises(ArmError) as e:
            q.parse_interval(bad, 0, 3600)
        _bad(e)


def test_aggregations_and_names() -> None:
    assert q.parse_aggregations("average, COUNT,Average") == ["Average", "Count"]
    assert q.parse_aggregations("") is None
    with pytest.raises(ArmError) as e:
        q.parse_aggregations("median")
    _bad(e)
    assert q.parse_metric_names("Percentage CPU,Network In Total") == ["Percentage CPU", "Network In Total"]
    assert q.parse_metric_names("A%2B") == ["A,B"]
    assert q.parse_metric_names(None) is None


SAMPLES = [(0.0, 10.0), (4.0, 30.0), (5.0, 50.0), (19.0, 7.0), (20.0, 99.0)]


@pytest.mark.parametrize(("how", "values"), [
    ("Average", [20.0, 50.0, None, 7.0]),
    ("minimum", [10.0, 50.0, None, 7.0]),
    ("MAXIMUM", [30.0, 50.0, None, 7.0]),
    ("Total", [40.0, 50.0, None, 7.0]),
    ("Count", [2.0, 1.0, None, 1.0]),
])
def test_bucketize(how: str, values: list[float | None]) -> None:
    got = bucketize(SAMPLES, 0, 20, 5, how)  # the sample at 20 is past the end
    assert got == list(zip([0.0, 5.0, 10.0, 15.0], values, strict=True))


def test_bucketize_edges() -> None:
    assert bucketize(SAMPLES, 0, 21, 5, "Total")[-1] == (20.0, 99.0)  # a last, partial bucket
    assert bucketize(SAMPLES, 0, 20, 20, "Count") == [(0.0, 4.0)]
    for start, end, grain, how in ((0, 10, 0, "Average"), (10, 10, 5, "Average"), (0, 10, 5, "Median"),
                                   (0, MAX_POINTS + 1, 1, "Average")):
        with pytest.raises(ArmError) as e:
            bucketize([], start, end, grain, how)
        _bad(e)


def test_buffer_is_bounded_and_forgets() -> None:
    buffer = SampleBuffer(period=5, retention=60)
    for i in range(100):
        buffer.add("a", "m", T0 + 5 * i, float(i))
    buffer.add("b", "m", T0, 1.0)
    kept = buffer.samples("a", "m", 0, T0 + 1000)
    assert len(kept) <= buffer.capacity and kept[-1] == (T0 + 495, 99.0)
    assert all(t >= T0 + 495 - 60 for t, _v in kept)  # nothing older than the retention is served
    assert buffer.samples("a", "m", T0 + 480, T0 + 490) == [(T0 + 480, 96.0), (T0 + 485, 97.0)]
    buffer.retain({"a"})
    assert buffer.samples("b", "m", 0, T0 + 1000) == [] and buffer.samples("a", "m", 0, T0 + 1000) == kept


def test_deltas() -> None:
    d = Deltas()
    assert d.update("vm", 1, 10.0, {"cpu": 1.0, "rx": 100.0}) is None  # a first reading
    assert d.update("vm", 1, 15.0, {"cpu": 3.5, "rx": 40.0}) == (5.0, {"cpu": 2.5})  # rx went down: reset
    assert d.update("vm", 2, 20.0, {"cpu": 9.0}) is None  # another process: start over
    assert d.update("vm", 2, 25.0, {"cpu": 10.0}) == (5.0, {"cpu": 1.0})
    d.forget(set())
    assert d.update("vm", 2, 30.0, {"cpu": 11.0}) is None


def test_proc_parsers() -> None:
    ticks = procfs.CLOCK_TICKS
    stat = f"4242 (CPU 0/KVM) ) R 1 2 3 4 5 6 7 8 9 10 {3 * ticks} {ticks} 0 0 20 0 1 0 5 6 7"
    assert procfs.stat_cpu_seconds(stat) == 4.0
    net = ("Inter-|   Receive                                                |  Transmit\n"
           " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
           "carrier compressed\n"
           "    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0 "
           "      0          0\n"
           "tabc1234: 2000      20    0    0    0     0          0         0     5000      50    0    0    0     0 "
           "      0          0\n")
    assert procfs.parse_net_dev(net) == {"lo": (100, 100), "tabc1234": (2000, 5000)}
    io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"
    assert procfs.parse_io(io)["read_bytes"] == 4096 and procfs.parse_io(io)["write_bytes"] == 8192
    seconds, threads = procfs.threads_cpu_seconds(1, ("",)) or (0.0, 0)  # pid 1 is always there
    assert threads >= 1 and seconds >= 0


def test_extension_paths() -> None:
    p = ids.parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/"
                  "providers/microsoft.insights/metrics")
    assert p is not None
    ext = ids.extension(p)
    assert ext is not None and ext.namespace == "microsoft.insights" and ext.rest == ("metrics",)
    assert str(ext.scope) == "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss"
    nested = ids.parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/"
                       "providers/providers/Microsoft.Insights/metricDefinitions")  # a subnet named "providers"
    assert nested is not None
    ext = ids.extension(nested)
    assert ext is not None and ext.scope.names == ("v", "providers") and ext.rest == ("metricDefinitions",)
    plain = ids.parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/start")
    assert plain is not None and ids.extension(plain) is None


class FakeSource(MetricSource):
    """Unit tests only: a source whose values are whatever the test sets."""

    resource_type = "microsoft.compute/virtualmachines"
    namespace = "Microsoft.Compute/virtualMachines"
    definitions = (MetricDefinition("Percentage CPU", "Percentage CPU", "Percent", "Average", "cpu"),)

    def __init__(self) -> None:
        self.next: Values = {}

    async def collect(self, tick: Tick) -> Values:
        return self.next


VM_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"


async def test_series_over_sampled_values(tmp_path: Path) -> None:
    store = await Store.open(None, tmp_path / "kumo.db")
    try:
        async with store.write() as tx:
            await tx.put_resource(Resource(key=VM_ID.lower(), id=VM_ID, subscription_id="s", resource_group="rg",
                                           type="microsoft.compute/virtualmachines", name="vm1", body={},
                                           location="local"))
        fake = FakeSource()
        service = MetricsService(store, [fake], period=5)
        sampler = Sampler(store, [fake], service.buffer, 5)
        for value in (10.0, 30.0):
            fake.next = {VM_ID.lower(): {"Percentage CPU": value}}
            await sampler.sample()
        now = time.time()  # both rounds were stamped before this
        got = await service.series(VM_ID.upper(), "percentage cpu", now - 60, now + 1, 61, "average")
        assert got == [(now - 60, 20.0)]
        empty = await service.series(VM_ID, "Percentage CPU", now - 600, now - 540, 30, "Maximum")
        assert empty == [(now - 600, None), (now - 570, None)]
        with pytest.raises(ArmError) as e:
            await service.series(VM_ID, "Percentage GPU", now - 60, now, 60, "Average")
        assert e.value.status == 400 and "Valid metrics: Percentage CPU" in e.value.message
        assert "provider: Microsoft.Compute, resource Type: virtualMachines" in e.value.message
        with pytest.raises(ArmError) as e:
            await service.series(VM_ID.replace("vm1", "vm2"), "Percentage CPU", now - 60, now, 60, "Average")
        assert e.value.status == 404 and e.value.code == "ResourceNotFound"
        async with store.write() as tx:
            await tx.delete_resource(VM_ID.lower())
        await sampler.sample()  # a deleted resource's series are dropped
        assert service.buffer.samples(VM_ID.lower(), "Percentage CPU", 0, now + 1) == []
    finally:
        await store.close()
