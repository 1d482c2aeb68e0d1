"""The measured samples, in memory: a bounded ring buffer per resource and metric. Nothing is persisted, so
a kumo restart starts with no history (as a new Azure resource has none)."""

from __future__ import annotations

from collections import deque

RETENTION_SECONDS = 2 * 3600.0


class SampleBuffer:
    """(epoch seconds, value) samples by (resource key, metric name), oldest first; each series keeps at most
    the samples that fit in `retention` at one every `period` seconds, and reads skip older ones."""

    def __init__(self, period: float, retention: float = RETENTION_SECONDS) -> None:
        self.retention = retention
        self.capacity = int(retention / period) + 2
        self._series: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self._newest = 0.0  # the latest sample's time: what the retention counts back from

    def add(self, key: str, metric: str, t: float, value: float) -> None:
        series = self._series.get((key, metric))
        if series is None:
            series = self._series[(key, metric)] = deque(maxlen=self.capacity)
        series.append((t, value))
        self._newest = max(self._newest, t)

    def samples(self, key: str, metric: str, start: float, end: float) -> list[tuple[float, float]]:
        """The samples of one series with start <= t < end, not older than the retention."""
        start = max(start, self._newest - self.retention)
        return [(t, v) for t, v in self._series.get((key, metric), ()) if start <= t < end]

    def retain(self, keys: set[str]) -> None:
        """Forget the series of resources not in `keys` (deleted: a new one of the same id starts empty)."""
        for series in [s for s in self._series if s[0] not in keys]:
            del self._series[series]
