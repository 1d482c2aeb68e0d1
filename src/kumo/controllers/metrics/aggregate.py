"""Samples into grain buckets: Azure's aggregation types over the samples that fall in each bucket."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from kumo.arm.errors import bad_request
from kumo.controllers.metrics.base import AGGREGATIONS

MAX_POINTS = 20_000  # data points one series may have (two hours at one a second fit)

_FUNCTIONS: dict[str, Callable[[list[float]], float]] = {
    "Average": lambda xs: math.fsum(xs) / len(xs),
    "Minimum": min,
    "Maximum": max,
    "Total": math.fsum,
    "Count": lambda xs: float(len(xs)),
}


def aggregation(name: str) -> str:
    """Azure's spelling of an aggregation type given in any case; BadRequest for anything else."""
    found = next((a for a in AGGREGATIONS if a.lower() == name.strip().lower()), None)
    if found is None:
        raise bad_request("BadRequest", f"'{name}' is not a valid aggregation type. Valid aggregation types are: "
                          f"{', '.join(AGGREGATIONS)}.")
    return found


def bucket_count(start: float, end: float, grain: float) -> int:
    """How many buckets of `grain` seconds cover [start, end); BadRequest when that is not a sensible query."""
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(grain)):
        raise bad_request("BadRequest", "The timespan and interval must be finite.")
    if grain <= 0:
        raise bad_request("BadRequest", f"The interval must be positive, not {grain:g} seconds.")
    if end <= start:
        raise bad_request("BadRequest", "The timespan's end must be after its start.")
    n = math.ceil((end - start) / grain - 1e-9)
    if n > MAX_POINTS:
        raise bad_request("BadRequest", f"The query asks for {n} data points per series; at most {MAX_POINTS} are "
                          "served. Use a longer interval or a shorter timespan.")
    return n


def bucketize(samples: Iterable[tuple[float, float]], start: float, end: float, grain: float,
              how: str) -> list[tuple[float, float | None]]:
    """One (bucket start, value) per `grain` seconds from `start` up to `end`: the aggregation `how` of the
    samples with bucket start <= t < next bucket start and t < end; None for a bucket with no sample."""
    n = bucket_count(start, end, grain)
    fn = _FUNCTIONS[aggregation(how)]
    buckets: list[list[float]] = [[] for _ in range(n)]
    for t, v in samples:
        if start <= t < end:
            i = int((t - start) // grain)
            if i < n:
                buckets[i].append(v)
    return [(start + i * grain, fn(b) if b else None) for i, b in enumerate(buckets)]
