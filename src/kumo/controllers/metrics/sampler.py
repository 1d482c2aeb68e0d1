"""The sampling task: every `period` seconds one round over all sources, into the buffer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from kumo.controllers.metrics.base import MetricSource, Tick
from kumo.controllers.metrics.buffer import SampleBuffer
from kumo.store import Store

log = logging.getLogger("kumo.metrics")


class Sampler:
    def __init__(self, store: Store, sources: Sequence[MetricSource], buffer: SampleBuffer, period: float) -> None:
        self.store = store
        self.sources = sources
        self.buffer = buffer
        self.period = period

    async def run(self) -> None:
        """Rounds at a steady cadence until cancelled; a round that fails is logged and the next one runs."""
        next_round = time.monotonic()
        while True:
            try:
                await self.sample()
            except Exception:  # a background loop must outlive one bad round (a store hiccup, a parse error)
                log.exception("metrics: a sampling round failed")
            next_round += self.period
            delay = next_round - time.monotonic()
            if delay < 0:  # a round took longer than the period (a very busy host): skip, do not pile up
                next_round, delay = time.monotonic(), 0.0
            await asyncio.sleep(delay)

    async def sample(self) -> None:
        """One round: each source in order, its values stamped with the round's time."""
        tick = Tick(self.store, time.time(), time.monotonic())
        live: set[str] = set()
        for source in self.sources:
            try:
                values = await source.collect(tick)
            except Exception:
                log.exception("metrics: measuring %s failed", source.namespace)
                values = {}
            tick.values.update(values)
            live.update(r.key for r in await tick.rows(source.resource_type))
        for key, metrics in tick.values.items():
            for name, value in metrics.items():
                self.buffer.add(key, name, tick.now, value)
        self.buffer.retain(live)
