"""Counters every service keeps: exported to Prometheus, summarised in status records and the health line."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from zeek_pipeline.runtime.flows import Direction, LakeTally, LogTypeFlows, preview

RATE_WINDOW_SECONDS = 60.0


@dataclass
class RecentItems:
    """The latest few events of one kind (rejects, files), newest first."""

    limit: int = 20
    items: deque[dict[str, object]] = field(default_factory=deque)

    def add(self, item: dict[str, object]) -> None:
        self.items.appendleft(item)
        while len(self.items) > self.limit:
            self.items.pop()

    def snapshot(self) -> list[dict[str, object]]:
        return list(self.items)


class ServiceMetrics:
    """Thread-safe totals plus a one-minute rate window; one per process."""

    TOTALS = ("consumed", "produced", "rejected", "errors", "flushes", "files", "bytes_written", "transactions",
              "aborts", "rebalances")

    def __init__(self, component: str) -> None:
        self.component = component
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._samples: deque[tuple[float, int, int]] = deque()
        self.reject_reasons: Counter[str] = Counter()
        self.recent_rejects = RecentItems()
        self.recent_files = RecentItems()
        self.flows = LogTypeFlows()
        self.lake = LakeTally()
        self.buffer_pct: float | None = None
        self.last_error: str | None = None
        labels = ["component"]
        self._prom_totals = {
            name: PromCounter(f"zeek_pipeline_{name}", f"Total {name.replace('_', ' ')}", labels,
                              registry=self.registry)
            for name in self.TOTALS
        }
        for total in self._prom_totals.values():  # exported as 0 from the start: alerts' increase() sees the first
            total.labels(component)
        self._prom_rejects = PromCounter("zeek_pipeline_rejects_by_reason", "Rejected records by reason",
                                         ["component", "reason"], registry=self.registry)
        self._prom_log_types = PromCounter("zeek_pipeline_log_type_records", "Records per Zeek log type and "
                                           "direction (in, out, rejected)", ["component", "log_type", "direction"],
                                           registry=self.registry)
        self._prom_buffer = Gauge("zeek_pipeline_buffer_usage_ratio", "Share of the buffer budget in use",
                                  labels, registry=self.registry)
        self._prom_lag = Gauge("zeek_pipeline_consumer_lag", "Records behind the high watermark",
                               ["component", "topic", "partition"], registry=self.registry)
        self._prom_assigned = Gauge("zeek_pipeline_assigned_partitions", "Partitions assigned", labels,
                                    registry=self.registry)

    def add(self, name: str, amount: int = 1) -> None:
        if amount <= 0:
            return
        with self._lock:
            self._totals[name] += amount
        self._prom_totals[name].labels(self.component).inc(amount)

    def log_types(self, direction: Direction, counts: Mapping[str, int]) -> None:
        """Count records per Zeek log type; the label set stays bounded like the status tally."""
        for label, amount in self.flows.add(direction, counts).items():
            self._prom_log_types.labels(self.component, label, direction).inc(amount)

    def reject(self, reason: str, detail: str, source: str, *, log_type: str = "", raw: bytes | None = None) -> None:
        """One rejected record: its reason, where it came from and, when the bytes are at hand, a safe preview."""
        self.add("rejected")
        with self._lock:
            self.reject_reasons[reason] += 1
        self._prom_rejects.labels(self.component, reason).inc()
        self.log_types("rejected", {log_type: 1})
        self.recent_rejects.add({"at": time.time(), "reason": reason, "detail": detail[:500], "source": source,
                                 "log_type": log_type, "preview": preview(raw)})

    def error(self, message: str) -> None:
        self.add("errors")
        self.last_error = message[:1000]

    def file_written(self, path: str, log_type: str, rows: int, size: int) -> None:
        self.add("files")
        self.add("bytes_written", size)
        self.log_types("out", {log_type: rows})
        self.lake.add(path, log_type, rows, size)
        self.recent_files.add({"at": time.time(), "path": path, "log_type": log_type, "rows": rows, "bytes": size})

    def set_buffer(self, pct: float | None) -> None:
        self.buffer_pct = pct
        if pct is not None:
            self._prom_buffer.labels(self.component).set(pct / 100.0)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._prom_lag.labels(self.component, topic, str(partition)).set(lag)

    def set_assigned(self, count: int) -> None:
        self._prom_assigned.labels(self.component).set(count)

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {name: self._totals.get(name, 0) for name in self.TOTALS}

    def sample(self, now: float | None = None) -> None:
        """Record (time, in, out) so rates cover the last minute; call every few seconds."""
        now = time.monotonic() if now is None else now
        totals = self.totals()
        self._samples.append((now, totals["consumed"], totals["produced"]))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()

    def rates(self) -> dict[str, float]:
        if len(self._samples) < 2:
            return {"in_eps": 0.0, "out_eps": 0.0}
        (t0, in0, out0), (t1, in1, out1) = self._samples[0], self._samples[-1]
        span = max(t1 - t0, 1e-9)
        return {"in_eps": round((in1 - in0) / span, 1), "out_eps": round((out1 - out0) / span, 1)}
