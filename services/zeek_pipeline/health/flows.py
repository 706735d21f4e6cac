"""What flows per Zeek log type and what the lake holds: the dashboard's answer to "what is flowing".

Built from the per-log-type tallies every instance puts in its status record (runtime/flows.py):
- in: records the normalizer read, per type; out: rows the writers wrote (the normalizer's output when no
  writer reports, e.g. a Kafka-only deployment); rejected: dead letters of every component.
- Totals add up every instance the status channel still holds; rates and the series come from the health
  service's own samples of those totals (like the throughput chart), so they need two samples to show.
- The lake is what the writers on the channel wrote per event hour since they started: a restarted writer's
  tally begins again, so it is the recent picture, not an inventory of the bucket.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from zeek_pipeline.health.models import FlowPoint, FlowRow, Flows, Lake, LakeCell, LakeRow
from zeek_pipeline.runtime.status import StatusRecord

SOURCE = "normalizer-enricher"
SINK = "parquet-writer"
WINDOW_SECONDS = 900.0
MAX_POINTS = 60
RATE_SECONDS = 60.0  # the table's rates: over the last minute, like each instance's own rates
LAKE_HOURS = 6

Triple = tuple[int, int, int]  # in, out, rejected


@dataclass(frozen=True)
class _Sample:
    at: float
    per_instance: dict[str, dict[str, Triple]]  # instance key -> log type -> counts


def _counts(row: dict[str, int]) -> Triple:
    return int(row.get("in", 0)), int(row.get("out", 0)), int(row.get("rejected", 0))


def flow_totals(records: Iterable[StatusRecord]) -> dict[str, dict[str, Triple]]:
    """Per instance key, per log type, (in, out, rejected) as the pipeline counts them (see the module doc)."""
    records = list(records)
    has_sink = any(r.component == SINK for r in records)
    totals: dict[str, dict[str, Triple]] = {}
    for r in records:
        rows: dict[str, Triple] = {}
        for log_type, row in r.log_types.items():
            seen_in, seen_out, rejected = _counts(row)
            if r.component != SOURCE:
                seen_in = 0
            if r.component != (SINK if has_sink else SOURCE):
                seen_out = 0
            if seen_in or seen_out or rejected:
                rows[log_type] = (seen_in, seen_out, rejected)
        totals[r.key] = rows  # kept even when empty: it is the base the instance's first counts grow from
    return totals


def _delta(now: int, then: int) -> int:
    """A counter that went down means the instance restarted: count from zero."""
    return now if now < then else now - then


class FlowHistory:
    """The last 15 minutes of per-log-type totals, sampled with the throughput chart."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._samples: deque[_Sample] = deque()

    def sample(self, now: float, records: Iterable[StatusRecord]) -> None:
        point = _Sample(now, flow_totals(records))
        with self._lock:
            self._samples.append(point)
            while self._samples and now - self._samples[0].at > self.window:
                self._samples.popleft()

    def samples(self) -> list[_Sample]:
        with self._lock:
            return list(self._samples)

    def view(self, now: float, records: Sequence[StatusRecord]) -> Flows:
        totals: dict[str, list[int]] = {}
        for rows in flow_totals(records).values():
            for log_type, counts in rows.items():
                acc = totals.setdefault(log_type, [0, 0, 0])
                for i in range(3):
                    acc[i] += counts[i]
        samples = self.samples()
        # The series: rates between every step-th sample, at most MAX_POINTS, so a writer that flushes every
        # few seconds draws a steady line rather than spikes between one-second samples.
        step = max(1, -(-(len(samples) - 1) // MAX_POINTS))
        picked = samples[::-1][::step][::-1]
        series: dict[str, list[FlowPoint]] = {}
        for before, after in zip(picked, picked[1:], strict=False):
            rates = _rates(before, after)
            for log_type in set(series) | set(rates):
                a, b, c = rates.get(log_type, (0.0, 0.0, 0.0))
                series.setdefault(log_type, []).append(FlowPoint(at=after.at, in_eps=a, out_eps=b, rejected_eps=c))
        # The figures: over the last RATE_SECONDS of samples (all of them while the history is shorter).
        current = _current_rates(samples)
        out: list[FlowRow] = []
        for log_type in sorted(set(totals) | set(series), key=lambda t: (-sum(totals.get(t, (0, 0, 0))), t)):
            seen_in, seen_out, rejected = totals.get(log_type, (0, 0, 0))
            rate_in, rate_out, rate_rejected = current.get(log_type, (0.0, 0.0, 0.0))
            out.append(FlowRow(log_type=log_type, in_total=seen_in, out_total=seen_out, rejected_total=rejected,
                               in_eps=rate_in, out_eps=rate_out, rejected_eps=rate_rejected,
                               points=series.get(log_type, [])))
        return Flows(generated_at=now, window_seconds=self.window, rows=out)


def _current_rates(samples: Sequence[_Sample]) -> dict[str, tuple[float, float, float]]:
    """Per log type, records/s over the last RATE_SECONDS: each instance from its oldest sample in that
    minute (an instance that appeared a few seconds ago counts over those seconds), summed."""
    if len(samples) < 2:
        return {}
    newest = samples[-1]
    recent = [x for x in samples[:-1] if x.at >= newest.at - RATE_SECONDS] or [samples[-2]]
    sums: dict[str, list[float]] = {}
    for key, rows in newest.per_instance.items():
        base = next((x for x in recent if key in x.per_instance), None)
        if base is None or newest.at <= base.at:
            continue
        span = newest.at - base.at
        for log_type, counts in rows.items():
            old = base.per_instance[key].get(log_type, (0, 0, 0))
            acc = sums.setdefault(log_type, [0.0, 0.0, 0.0])
            for i in range(3):
                acc[i] += _delta(counts[i], old[i]) / span
    return {t: (round(a, 1), round(b, 1), round(c, 2)) for t, (a, b, c) in sums.items()}


def _rates(before: _Sample, after: _Sample) -> dict[str, tuple[float, float, float]]:
    """Per log type, records/s between two samples; an instance absent from `before` only sets its base."""
    span = after.at - before.at
    if span <= 0:
        return {}
    sums: dict[str, list[int]] = {}
    for key, rows in after.per_instance.items():
        base = before.per_instance.get(key)
        if base is None:
            continue
        for log_type, counts in rows.items():
            old = base.get(log_type, (0, 0, 0))
            acc = sums.setdefault(log_type, [0, 0, 0])
            for i in range(3):
                acc[i] += _delta(counts[i], old[i])
    return {t: (round(a / span, 1), round(b / span, 1), round(c / span, 2)) for t, (a, b, c) in sums.items()}


def lake_view(now: float, records: Iterable[StatusRecord], hours: int = LAKE_HOURS) -> Lake:
    """Rows, files and bytes per log type for the newest `hours` event hours the writers wrote to."""
    cells: dict[tuple[str, str], list[int]] = {}
    for r in records:
        if r.component != SINK:
            continue
        for entry in r.lake:
            log_type, hour = entry.get("log_type"), entry.get("hour")
            if not isinstance(log_type, str) or not isinstance(hour, str):
                continue
            acc = cells.setdefault((log_type, hour), [0, 0, 0])
            for i, name in enumerate(("rows", "files", "bytes")):
                value = entry.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    acc[i] += value
    newest = sorted({h for _, h in cells}, reverse=True)[:hours]
    by_type: dict[str, list[LakeCell]] = {}
    for (log_type, hour), (rows, files, size) in cells.items():
        if hour in newest:
            by_type.setdefault(log_type, []).append(LakeCell(hour=hour, rows=rows, files=files, bytes=size))
    lake_rows = [LakeRow(log_type=t, rows=sum(c.rows for c in cs), files=sum(c.files for c in cs),
                         bytes=sum(c.bytes for c in cs), hours=sorted(cs, key=lambda c: c.hour, reverse=True))
                 for t, cs in by_type.items()]
    lake_rows.sort(key=lambda row: (-row.rows, row.log_type))
    return Lake(generated_at=now, hours=newest, rows=lake_rows)
