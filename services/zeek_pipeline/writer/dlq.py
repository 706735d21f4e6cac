"""Dead letters of the writer: normalized records that cannot be typed go to `output.kafka.dlq_topic`.

Header names match the normalizer-enricher's dead letters (`error.reason`, `error.detail`, `source.*`,
`log_type`) so one consumer of the DLQ reads both. A dead letter counts as done only once the broker
acknowledged it: `flush()` waits for every delivery and reports failure, and the flush that carries the
record is not committed until then (a crash in between sends it again: the DLQ is at-least-once).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger("zeek_pipeline.writer.dlq")

MAX_DETAIL_BYTES = 1024


class DeadLetterError(Exception):
    """The DLQ topic did not acknowledge every dead letter (broker down): retry the flush later."""


class DeadLetters:
    def __init__(self, producer_conf: dict[str, Any], topic: str, component: str = "parquet-writer") -> None:
        self.topic = topic
        self.component = component
        self._conf = {k: v for k, v in producer_conf.items() if not k.startswith("transactional")}
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self.sent = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(err.str())

    def send(self, value: bytes | None, *, reason: str, detail: str, source_topic: str, partition: int,
             offset: int, log_type: str | None) -> None:
        if self._producer is None:
            self._producer = Producer(self._conf)
        headers: list[tuple[str, str | bytes | None]] = [
            ("error.reason", reason.encode()),
            ("error.detail", detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
            ("error.component", self.component.encode()),
            ("source.topic", source_topic.encode()),
            ("source.partition", b"%d" % partition),
            ("source.offset", b"%d" % offset),
        ]
        if log_type:
            headers.append(("log_type", log_type.encode()))
        while True:
            try:
                self._producer.produce(self.topic, value=value, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)
        self.sent += 1

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every dead letter sent so far; DeadLetterError if any was not acknowledged."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeadLetterError(f"{remaining} dead letter(s) unacknowledged, errors: {failures[:3]}")

    def close(self, timeout: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None
