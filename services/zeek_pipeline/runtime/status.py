"""Status records: the channel between the services and the health service.

Every instance produces one JSON record to the compacted topic `status.topic` (default
`zeek-pipeline-status`) every `status.interval_seconds`, keyed `<component>/<instance>`. Compaction keeps the
latest record per instance, so the health service rebuilds the whole picture by reading the topic from the
start, holding no state of its own. A clean shutdown publishes a last record with state "stopped" and then a
tombstone for its key, so compaction removes the instance and the health service forgets it at once (pods get
new names on every replacement: without the tombstone every dead pod would stay on the topic and the page);
an instance that stops publishing is reported down by the reader after three intervals and forgotten after
`health.forget_after_seconds`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import orjson
from confluent_kafka import Producer
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("zeek_pipeline.status")

STATUS_SCHEMA_VERSION = 1
State = Literal["starting", "ok", "degraded", "stopping", "stopped"]


class PartitionRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    topic: str
    partition: int


class StatusRecord(BaseModel):
    """What one instance says about itself; the health service validates what it reads with this model."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = STATUS_SCHEMA_VERSION
    component: str = Field(max_length=64)
    instance: str = Field(max_length=253)
    version: str = Field("", max_length=64)
    config_hash: str = Field("", max_length=64)
    state: State
    reason: str = Field("", max_length=2000)
    started_at: float
    heartbeat_at: float
    interval_seconds: float = Field(gt=0)
    totals: dict[str, int] = Field(default_factory=dict)
    rates: dict[str, float] = Field(default_factory=dict)
    rss_bytes: int = 0
    buffer_pct: float | None = None
    assigned: list[PartitionRef] = Field(default_factory=list)
    reject_reasons: dict[str, int] = Field(default_factory=dict)
    recent_rejects: list[dict[str, Any]] = Field(default_factory=list)
    recent_files: list[dict[str, Any]] = Field(default_factory=list)
    log_types: dict[str, dict[str, int]] = Field(default_factory=dict)  # log type -> {in, out, rejected}
    lake: list[dict[str, Any]] = Field(default_factory=list)  # {log_type, hour, rows, files, bytes} written
    last_error: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.component}/{self.instance}"


class StatusPublisher:
    """Produces status records with a plain idempotent producer (never inside a data transaction)."""

    def __init__(self, producer_conf: dict[str, Any], topic: str) -> None:
        conf = {key: value for key, value in producer_conf.items() if not key.startswith("transactional")}
        conf.update({"linger.ms": 0, "enable.idempotence": True, "message.timeout.ms": 30_000,
                     # librdkafka's own lines (connection refused during an outage) go through logging,
                     # not raw to stderr.
                     "logger": logging.getLogger("zeek_pipeline.librdkafka")})
        self.topic = topic
        self._producer = Producer(conf)
        self._failures = 0

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self._failures += 1
            log.warning("status record not delivered: %s", err)

    def publish(self, record: StatusRecord) -> None:
        try:
            self._producer.produce(self.topic, key=record.key.encode(), value=orjson.dumps(record.model_dump()),
                                   on_delivery=self._on_delivery)
        except BufferError:
            log.warning("status producer queue full; record skipped")
        except Exception as exc:  # noqa: BLE001 - status must never take a service down
            log.warning("status record not sent: %s", exc)
        self._producer.poll(0)

    def retire(self, key: str) -> None:
        """A tombstone for `key`: the instance left on purpose and its record can go."""
        try:
            self._producer.produce(self.topic, key=key.encode(), value=None, on_delivery=self._on_delivery)
        except BufferError:
            self._producer.flush(5.0)  # the queue drains in the last seconds of a clean exit; try once more
            try:
                self._producer.produce(self.topic, key=key.encode(), value=None, on_delivery=self._on_delivery)
            except BufferError:
                log.warning("status producer queue full; tombstone for %s not sent", key)
        except Exception as exc:  # noqa: BLE001 - status must never take a service down
            log.warning("status tombstone not sent: %s", exc)
        self._producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        self._producer.flush(timeout)


def now() -> float:
    return time.time()
