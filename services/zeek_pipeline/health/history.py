"""The health service's only memory: 15 minutes of samples for the throughput chart and the verdict's windows.

Sampled from the current view every few seconds; lost on restart by design (the status topic holds the truth).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from zeek_pipeline.health.models import Component, ThroughputPoint
from zeek_pipeline.health.verdict import LIVE, Activity

WINDOW_SECONDS = 900.0
ACTIVITY_WINDOW_SECONDS = 600.0
MIN_HISTORY_SECONDS = 60.0
SOURCE_COMPONENT = "normalizer-enricher"
SINK_COMPONENT = "parquet-writer"


@dataclass(frozen=True)
class _Totals:
    component: str
    consumed: int
    rejected: int
    errors: int


def _delta(now: int, then: int | None) -> int:
    """A counter that went down means the instance restarted: count from zero."""
    if then is None or now < then:
        return now
    return now - then


class History:
    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._points: deque[ThroughputPoint] = deque()
        self._totals: deque[tuple[float, dict[str, _Totals]]] = deque()

    def sample(self, now: float, components: Sequence[Component]) -> ThroughputPoint:
        live = [c for c in components if c.state in LIVE]
        in_eps = sum(c.rates.in_eps for c in live if c.component == SOURCE_COMPONENT)
        if any(c.component == SINK_COMPONENT for c in components):
            out_eps = sum(c.rates.out_eps for c in live if c.component == SINK_COMPONENT)
        else:  # no writer deployed (Kafka output only): the normalizer's output is the pipeline's output
            out_eps = sum(c.rates.out_eps for c in live if c.component == SOURCE_COMPONENT)
        point = ThroughputPoint(at=now, in_eps=round(in_eps, 1), out_eps=round(out_eps, 1))
        totals = {c.key: _Totals(c.component, c.totals.get("consumed", 0), c.totals.get("rejected", 0),
                                 c.totals.get("errors", 0)) for c in components}
        with self._lock:
            self._points.append(point)
            self._totals.append((now, totals))
            while self._points and now - self._points[0].at > self.window:
                self._points.popleft()
            while self._totals and now - self._totals[0][0] > self.window:
                self._totals.popleft()
        return point

    def throughput(self) -> list[ThroughputPoint]:
        with self._lock:
            return list(self._points)

    def activity(self, now: float, components: Sequence[Component],
                 window: float = ACTIVITY_WINDOW_SECONDS) -> list[Activity]:
        """Consumed/rejected/errors per component over the window, or since start when history is short."""
        with self._lock:
            base = next(((at, totals) for at, totals in self._totals if at >= now - window), None)
        since_start = base is None or now - base[0] < MIN_HISTORY_SECONDS
        span = 0.0 if base is None else now - base[0]
        old = {} if since_start or base is None else base[1]
        sums: dict[str, list[int]] = {}
        last_errors: dict[str, str | None] = {}
        for c in components:
            if since_start and c.state not in LIVE:
                continue  # old instances kept by compaction say nothing about now
            previous = old.get(c.key)
            row = sums.setdefault(c.component, [0, 0, 0])
            row[0] += _delta(c.totals.get("consumed", 0), previous.consumed if previous else None)
            row[1] += _delta(c.totals.get("rejected", 0), previous.rejected if previous else None)
            errors = _delta(c.totals.get("errors", 0), previous.errors if previous else None)
            row[2] += errors
            if errors and c.last_error:
                last_errors[c.component] = c.last_error
        return [Activity(component=name, window_seconds=span, consumed=v[0], rejected=v[1], errors=v[2],
                         since_start=since_start, last_error=last_errors.get(name))
                for name, v in sorted(sums.items())]
