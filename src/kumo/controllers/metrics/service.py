"""`services.metrics`: the sampler's lifetime and the one query of what it measured, `series`, which the
REST API (`kumo.providers.insights.metrics`) and the autoscale evaluator both use."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from kumo.arm import ids
from kumo.arm.errors import ArmError, bad_request, not_found
from kumo.controllers.metrics.aggregate import bucketize
from kumo.controllers.metrics.base import MetricDefinition, MetricSource
from kumo.controllers.metrics.buffer import SampleBuffer
from kumo.controllers.metrics.container_groups import ContainerGroupSource
from kumo.controllers.metrics.load_balancers import LoadBalancerSource
from kumo.controllers.metrics.sampler import Sampler
from kumo.controllers.metrics.virtual_machines import ScaleSetSource, VirtualMachineSource
from kumo.store import Resource, Store

if TYPE_CHECKING:
    from kumo.arm.context import Services


def sources(services: "Services") -> list[MetricSource]:
    """The registry of metric sources, in the order a round runs them (aggregating sources last)."""
    return [VirtualMachineSource(services.vms), ScaleSetSource(), ContainerGroupSource(services.containers),
            LoadBalancerSource(services.network)]


class MetricsService:
    """The sources, their samples and the sampling task; `series` is the query over them."""

    def __init__(self, store: Store, metric_sources: list[MetricSource], period: float) -> None:
        self.store = store
        self.period = period
        self.sources = {s.resource_type: s for s in metric_sources}
        self.buffer = SampleBuffer(period)
        self.sampler = Sampler(store, metric_sources, self.buffer, period)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, services: "Services") -> "MetricsService":
        # at least a second: finer rounds would cost more than they tell (kumo's shortest grain is PT1S)
        return cls(services.store, sources(services), max(1.0, services.settings.metrics_sample_seconds))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.sampler.run(), name="metrics-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def resource(self, resource_id: str) -> tuple[Resource, MetricSource | None]:
        """The stored resource an id names (ResourceNotFound otherwise) and its type's source, if any."""
        rid = ids.parse_resource_id(resource_id)
        if rid is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{resource_id}' was not found.")
        async with self.store.read() as tx:
            row = await tx.get_resource(rid.key)
        if row is None:
            raise not_found(rid.type, "/".join(rid.names), rid.resource_group)
        return row, self.sources.get(row.type.lower())

    @staticmethod
    def definition(row: Resource, source: MetricSource | None, metric: str) -> MetricDefinition:
        """The definition of `metric` for the resource's type; Azure's BadRequest naming the valid ones."""
        found = source.definition(metric) if source is not None else None
        if found is None:
            rid = ids.parse_resource_id(row.id)
            namespace, kind = (rid.namespace, "/".join(rid.types)) if rid else row.type.split("/", 1)
            valid = ",".join(d.name for d in source.definitions) if source else ""
            raise bad_request("BadRequest", f"Failed to find metric configuration for provider: {namespace}, "
                              f"resource Type: {kind}, metric: {metric}, Valid metrics: {valid}")
        return found

    async def series(self, resource_id: str, metric: str, start: float, end: float, grain: float,
                     aggregation: str) -> list[tuple[float, float | None]]:
        """One (bucket start, value) per `grain` seconds from `start` up to `end` (epoch seconds) of one
        metric of one resource, aggregated as `aggregation` (Average, Minimum, Maximum, Total or Count, any
        case); None for a bucket without samples. ArmError: ResourceNotFound (404) for an unknown resource,
        BadRequest (400) for an unknown metric or aggregation or a senseless timespan or grain."""
        row, source = await self.resource(resource_id)
        name = self.definition(row, source, metric).name
        return bucketize(self.buffer.samples(row.key, name, start, end), start, end, grain, aggregation)
