"""Sources that serve fixed data instead of Kafka: for tests and for previewing the page without a cluster.

`FixedStatus` is fed through a real StatusStore (so records go through the same validation as the reader's),
and `FixedLag` returns whatever Lag/KafkaState it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import orjson

from zeek_pipeline.health.lag import LagSnapshot
from zeek_pipeline.health.models import KafkaState, Lag
from zeek_pipeline.health.state import Sources
from zeek_pipeline.health.status_reader import StatusSnapshot, StatusStore


class FixedStatus:
    def __init__(self, topic: str = "zeek-pipeline-status", *, clock: Callable[[], float] = time.time) -> None:
        self.store = StatusStore(topic, clock=clock)
        self.store.set_loaded()
        self.running = True

    def put(self, record: Mapping[str, Any] | bytes, key: str | bytes | None = None) -> bool:
        """Ingest one record (a dict is JSON-encoded and keyed component/instance unless a key is given)."""
        value = record if isinstance(record, bytes) else orjson.dumps(record)
        if key is None and isinstance(record, Mapping):
            key = f"{record.get('component')}/{record.get('instance')}"
        raw_key = key.encode() if isinstance(key, str) else key
        return self.store.ingest(raw_key, value)

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def snapshot(self) -> StatusSnapshot:
        snap = self.store.snapshot()
        return snap if self.running else replace(snap, running=False)


class FixedLag:
    def __init__(self, lag: Lag | None = None, kafka: KafkaState | None = None, *, now: float | None = None) -> None:
        at = time.time() if now is None else now
        self.lag = lag or Lag(reachable=True, checked_at=at, error=None, groups=[])
        self.kafka = kafka or KafkaState(bootstrap="localhost:9092", reachable=True, checked_at=at, brokers=1,
                                         error=None)
        self.running = True

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def snapshot(self) -> LagSnapshot:
        return LagSnapshot(self.lag, self.kafka, running=self.running)


def fixed_sources(records: Iterable[Mapping[str, Any]] = (), *, lag: FixedLag | None = None,
                  clock: Callable[[], float] = time.time) -> Sources:
    """Sources with the given records ingested; no sampling thread (call HealthState.sample())."""
    status = FixedStatus(clock=clock)
    for record in records:
        status.put(record)
    return Sources(status, lag or FixedLag(now=clock()), clock=clock, sample_seconds=None)
