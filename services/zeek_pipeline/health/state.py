"""The health service's view: status records + lag + history -> the response models every route returns.

Everything a status record carries is untrusted: strings are clipped, numbers must be finite, lists are
capped, and items of the wrong shape are dropped, so one broken or hostile producer can neither break a
response nor make it huge. Escaping is left to the template and the browser's textContent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from zeek_pipeline.health.flows import FlowHistory, lake_view
from zeek_pipeline.health.history import History
from zeek_pipeline.health.lag import GroupSpec, LagMonitor, LagSnapshot
from zeek_pipeline.health.models import (
    Component,
    ComponentList,
    Config,
    Files,
    FileWritten,
    Flows,
    Lag,
    Lake,
    PartitionRef,
    Pipeline,
    Probe,
    Problem,
    Rates,
    Reject,
    Rejects,
    StatusChannel,
    Throughput,
    ThroughputPoint,
)
from zeek_pipeline.health.redact import redacted_settings
from zeek_pipeline.health.retention import (
    MAX_ASSIGNED,
    MAX_REASONS,
    MAX_RECENT_PER_INSTANCE,
    Retention,
    ordered_totals,
    top_counts,
)
from zeek_pipeline.health.status_reader import Received, StatusReader, StatusSnapshot, clip
from zeek_pipeline.health.verdict import DOWN_AFTER_INTERVALS, LIVE, judge_instance, pipeline_verdict
from zeek_pipeline.kafka import config as kafka_config
from zeek_pipeline.settings import Settings

log = logging.getLogger("zeek_pipeline.health")

MAX_LIMIT = 500


class StatusSource(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def snapshot(self) -> StatusSnapshot: ...


class LagSource(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def snapshot(self) -> LagSnapshot: ...


@dataclass
class Sources:
    """What the app reads; tests inject fakes and a fixed clock. sample_seconds=None: no sampling thread."""

    status: StatusSource
    lag: LagSource
    clock: Callable[[], float] = time.time
    sample_seconds: float | None = 5.0


def group_specs(settings: Settings) -> list[GroupSpec]:
    """Each group on the cluster it consumes from: the normalizer-enricher's on the input cluster
    (kafka.brokers), the parquet-writer's on the output cluster (output.kafka.brokers, default the same)."""
    return [GroupSpec(settings.kafka.group_id, settings.kafka.topic, "normalizer-enricher",
                      settings.input_bootstrap_servers),
            GroupSpec(settings.writer.group_id, settings.writer_topic, "parquet-writer",
                      settings.output_bootstrap_servers)]


def retention_of(settings: Settings) -> Retention:
    health = settings.health
    return Retention(max_instances=health.max_instances, max_bytes=int(health.max_status_mb * 1024 * 1024),
                     forget_after_seconds=health.forget_after_seconds)


def kafka_sources(settings: Settings) -> Sources:
    """The real sources: a status topic reader on the output cluster, where every service publishes its status
    (runtime/status.py uses the output producer), and a lag monitor reading each group on its own cluster."""
    conf = kafka_config.admin(settings, "output")
    conf["client.id"] = "zeek-pipeline-health"
    # Reconnect calmly: the page reports an outage anyway, and every failed attempt is a librdkafka log line.
    for key, value in (("reconnect.backoff.ms", 1000), ("reconnect.backoff.max.ms", 10_000)):
        if key not in settings.kafka.librdkafka:
            conf[key] = value
    reader = StatusReader(conf, settings.status.topic, retention=retention_of(settings))
    monitor = LagMonitor(conf, group_specs(settings), interval=settings.health.refresh_seconds)
    return Sources(reader, monitor, sample_seconds=settings.health.refresh_seconds)


# --- sanitising untrusted values ---------------------------------------------------------------------
def finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = finite(value)
    return int(number) if number is not None else None


def text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    return clip(value if isinstance(value, str) else str(value), limit)


class HealthState:
    """Built once per app in the lifespan; routes only read from it (no Kafka call ever blocks a request)."""

    def __init__(self, settings: Settings, sources: Sources) -> None:
        self.settings = settings
        self.sources = sources
        self.history = History()
        self.flow_history = FlowHistory()
        self.started_at = sources.clock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.sources.status.start()
        self.sources.lag.start()
        if self.sources.sample_seconds:
            self._ticker = threading.Thread(target=self._tick, args=(self.sources.sample_seconds,),
                                            name="health-history", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        self.sources.status.stop()
        self.sources.lag.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the chart may miss a point; the service must not die
                log.exception("history sample failed")

    def sample(self) -> ThroughputPoint:
        now = self.sources.clock()
        status = self.sources.status.snapshot()
        self.flow_history.sample(now, [item.record for item in status.records.values()])
        return self.history.sample(now, self.components_now(now, status))

    # --- views --------------------------------------------------------------------------------
    def components_now(self, now: float, status: StatusSnapshot | None = None) -> list[Component]:
        snap = status or self.sources.status.snapshot()
        return [self._component(key, item, now) for key, item in sorted(
            snap.records.items(), key=lambda kv: (kv[1].record.component, kv[1].record.instance))]

    def _component(self, key: str, item: Received, now: float) -> Component:
        r = item.record
        state, reason = judge_instance(r, now)
        heartbeat = finite(r.heartbeat_at)
        started = finite(r.started_at)
        interval = finite(r.interval_seconds)
        return Component(
            key=clip(key, 320), component=r.component, instance=r.instance, state=state, reason=clip(reason, 500),
            reported_state=r.state,
            heartbeat_at=heartbeat,
            heartbeat_age_seconds=None if heartbeat is None else finite(round(max(now - heartbeat, 0.0), 1)),
            interval_seconds=interval,
            down_after_seconds=None if interval is None else finite(DOWN_AFTER_INTERVALS * interval),
            started_at=started,
            uptime_seconds=None if started is None else finite(round(max(now - started, 0.0), 1)),
            version=r.version, config_hash=r.config_hash,
            rates=Rates(in_eps=finite(r.rates.get("in_eps")) or 0.0, out_eps=finite(r.rates.get("out_eps")) or 0.0),
            totals=ordered_totals(r.totals),
            rss_bytes=r.rss_bytes,
            buffer_pct=finite(r.buffer_pct),
            assigned=[PartitionRef(topic=clip(p.topic, 249), partition=p.partition) for p in r.assigned[:MAX_ASSIGNED]],
            reject_reasons=top_counts(r.reject_reasons, MAX_REASONS),
            last_error=None if r.last_error is None else clip(r.last_error, 1000),
        )

    def _status_channel(self, snap: StatusSnapshot) -> StatusChannel:
        return StatusChannel(
            topic=snap.topic, reachable=snap.reachable and snap.running,
            loaded=snap.loaded, error=snap.error if snap.running else "the status reader has stopped",
            records_read=snap.records_read, malformed=snap.malformed, instances=len(snap.records),
            kept_bytes=snap.kept_bytes, forgotten=snap.forgotten,
            problems=[Problem(at=p.at, key=p.key, partition=p.partition, offset=p.offset, error=p.error)
                      for p in snap.problems])

    def lag(self) -> Lag:
        snap = self.sources.lag.snapshot()
        if snap.running:
            return snap.lag
        return snap.lag.model_copy(update={"error": "the lag monitor has stopped"})

    def pipeline(self) -> Pipeline:
        now = self.sources.clock()
        status = self.sources.status.snapshot()
        lag_snap = self.sources.lag.snapshot()
        components = self.components_now(now, status)
        channel = self._status_channel(status)
        lag = lag_snap.lag
        verdict = pipeline_verdict(components, lag_snap.kafka, channel, lag,
                                   self.history.activity(now, components))
        unreachable = []
        if lag_snap.kafka.checked_at is not None and not lag_snap.kafka.reachable:
            unreachable.append(f"Kafka ({lag_snap.kafka.bootstrap}): {lag_snap.kafka.error or 'unreachable'}")
        if not channel.reachable:
            unreachable.append(f"status topic {channel.topic}: {channel.error or 'unreachable'}")
        if not lag_snap.running:
            unreachable.append("lag monitor stopped")
        unreachable.extend(f"{c.key}: {c.reason}" for c in components if c.state == "down")
        return Pipeline(
            generated_at=now, verdict=verdict, unreachable=unreachable, kafka=lag_snap.kafka,
            status_channel=channel, components=components,
            throughput=Throughput(window_seconds=self.history.window, in_label="normalizer-enricher in",
                                  out_label="parquet-writer out", points=self.history.throughput()),
            refresh_seconds=self.settings.health.refresh_seconds)

    def components(self) -> ComponentList:
        now = self.sources.clock()
        return ComponentList(generated_at=now, components=self.components_now(now))

    def _records(self) -> Iterable[Received]:
        return self.sources.status.snapshot().records.values()

    def rejects(self, limit: int) -> Rejects:
        recent: list[Reject] = []
        by_reason: Counter[str] = Counter()
        total = 0
        for item in self._records():
            r = item.record
            total += int(r.totals.get("rejected", 0))
            by_reason.update({clip(k, 200): int(v) for k, v in r.reject_reasons.items()})
            for entry in r.recent_rejects[:MAX_RECENT_PER_INSTANCE]:
                if isinstance(entry, dict):
                    recent.append(Reject(at=finite(entry.get("at")), component=r.component, instance=r.instance,
                                         reason=text(entry.get("reason"), 200), detail=text(entry.get("detail"), 500),
                                         source=text(entry.get("source"), 300),
                                         log_type=text(entry.get("log_type"), 64),
                                         preview=text(entry.get("preview"), 240)))
        recent.sort(key=lambda x: x.at or 0.0, reverse=True)
        return Rejects(generated_at=self.sources.clock(), total=total,
                       by_reason=dict(by_reason.most_common(MAX_REASONS * 2)), recent=recent[:limit])

    def files(self, limit: int) -> Files:
        recent: list[FileWritten] = []
        for item in self._records():
            r = item.record
            for entry in r.recent_files[:MAX_RECENT_PER_INSTANCE]:
                if isinstance(entry, dict):
                    recent.append(FileWritten(at=finite(entry.get("at")), component=r.component, instance=r.instance,
                                              path=text(entry.get("path"), 1000),
                                              log_type=text(entry.get("log_type"), 64),
                                              rows=whole(entry.get("rows")), bytes=whole(entry.get("bytes"))))
        recent.sort(key=lambda x: x.at or 0.0, reverse=True)
        return Files(generated_at=self.sources.clock(), recent=recent[:limit])

    def flows(self) -> Flows:
        return self.flow_history.view(self.sources.clock(), [item.record for item in self._records()])

    def lake(self, hours: int) -> Lake:
        return lake_view(self.sources.clock(), (item.record for item in self._records()), hours)

    def config(self) -> Config:
        return Config(config_hash=self.settings.config_hash(), settings=redacted_settings(self.settings))

    def readiness(self) -> Probe:
        """Ready once the status topic was read to its end; Kafka being down keeps the page up to say so."""
        status = self.sources.status.snapshot()
        lag = self.sources.lag.snapshot()
        checks = {
            "status_reader": "running" if status.running else "stopped",
            "status_topic": "loaded" if status.loaded else "loading",
            "lag_monitor": "running" if lag.running else "stopped",
            "kafka": "reachable" if lag.kafka.reachable else f"unreachable: {lag.kafka.error or ''}".strip(),
        }
        ready = status.running and status.loaded and lag.running
        return Probe(status="ok" if ready else "unavailable", checks=checks)

    def live_count(self) -> int:
        return sum(1 for c in self.components_now(self.sources.clock()) if c.state in LIVE)
