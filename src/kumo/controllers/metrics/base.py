"""The shape every metric source follows, and what one sampling round hands them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass

from kumo.store import Resource, Store

# Azure's aggregation types, in its order; "None" (raw values) is listed by Azure but not served.
AGGREGATIONS = ("Average", "Minimum", "Maximum", "Total", "Count")

Values = dict[str, dict[str, float]]  # resource key -> metric name -> this round's value


@dataclass(frozen=True)
class MetricDefinition:
    """One metric as Azure defines it for a resource type (name, unit, default aggregation, text)."""

    name: str  # the REST name: "Percentage CPU", "CpuUsage"
    display_name: str  # Azure's localizedValue
    unit: str  # Azure's unit names: Percent, Bytes, Count, …
    primary_aggregation: str  # what a query without `aggregation` gets
    description: str
    supported_aggregations: tuple[str, ...] = ("None", *AGGREGATIONS)


class Tick:
    """One sampling round: its timestamp, the store's rows (read once per type and round) and the values the
    sources that ran before in this round measured (a source aggregating others reads them)."""

    def __init__(self, store: Store, now: float, mono: float) -> None:
        self.store = store
        self.now = now  # epoch seconds: the timestamp of this round's samples
        self.mono = mono  # monotonic seconds: what rates are computed from
        self.values: Values = {}
        self._rows: dict[str, list[Resource]] = {}

    async def rows(self, resource_type: str) -> list[Resource]:
        """Every stored resource of a (lower-case) type, in all subscriptions."""
        if resource_type not in self._rows:
            async with self.store.read() as tx:
                self._rows[resource_type] = await tx.resources_of_type(resource_type)
        return self._rows[resource_type]


class MetricSource(ABC):
    """The metrics of one resource type. To measure another type (a load balancer, say), copy
    `container_groups.py`: set `resource_type` (as the store keeps it, lower case) and `namespace` (Azure's
    metric namespace), list Azure's `definitions` for it with their exact names and units, implement
    `collect`, and add the source to `service.sources()`. Rules for `collect`: it runs every
    KUMO_METRICS_SAMPLE_SECONDS on the event loop, so file reads go to `asyncio.to_thread` in one batch per
    round and subprocesses only through asyncio; it returns only what it really measured (a resource that is
    not running gets no value, never a zero); cumulative counters become per-round amounts with `Deltas`.
    Sources run in the order `service.sources()` lists them, so one that aggregates others (scale sets over
    their VMs) comes after them and reads `tick.values`."""

    resource_type: str
    namespace: str
    definitions: tuple[MetricDefinition, ...]

    @abstractmethod
    async def collect(self, tick: Tick) -> Values:
        """This round's value of each metric, by resource key."""

    def definition(self, name: str) -> MetricDefinition | None:
        """The definition of `name`, matched case-insensitively as Azure does."""
        lname = name.strip().lower()
        return next((d for d in self.definitions if d.name.lower() == lname), None)


class Deltas:
    """The previous reading of each resource's cumulative counters, to turn counters into amounts per round.
    A reading with another `identity` (a new QEMU process, a cgroup made again) starts over, and so does a
    counter that went down (it was reset): no amount is made up across such a change."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Hashable, float, dict[str, float]]] = {}

    def update(self, key: str, identity: Hashable, mono: float,
               counters: dict[str, float]) -> tuple[float, dict[str, float]] | None:
        """(seconds since the previous reading, how much each counter grew), or None at a first reading."""
        previous = self._last.get(key)
        self._last[key] = (identity, mono, counters)
        if previous is None or previous[0] != identity or mono <= previous[1]:
            return None
        before = previous[2]
        return mono - previous[1], {n: v - before[n] for n, v in counters.items() if n in before and v >= before[n]}

    def forget(self, keep: set[str]) -> None:
        """Drop the readings of resources no longer measured."""
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]
