"""Dead letters of the writer: normalized records that cannot be typed go to `output.kafka.dlq_topic`.

Header names match the normalizer-enricher's dead letters (`error.reason`, `error.detail`, `source.*`,
`log_type`) so one consumer of the DLQ reads both. A dead letter counts as done only once the broker
acknowledged it: `flush()` waits for every delivery and reports failure, and the flush that carries the
record is not committed until then. A retried flush re-sends only the dead letters that failed, not
those still in flight; only a crash between the acknowledgement and the commit can send one twice
(the DLQ is at-least-once, the Parquet output exactly-once).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger("zeek_pipeline.writer.dlq")

MAX_DETAIL_BYTES = 1024


class DeadLetterError(Exception):
    """The DLQ topic did not acknowledge every dead letter (broker down): retry the flush later."""


class Delivery:
    """The fate of one dead letter: ok True once acknowledged, False once failed, None while in flight."""

    __slots__ = ("error", "ok")

    def __init__(self) -> None:
        self.ok: bool | None = None
        self.error: str | None = None


class DeadLetters:
    def __init__(self, producer_conf: dict[str, Any], topic: str, component: str = "parquet-writer") -> None:
        self.topic = topic
        self.component = component
        self._conf = {k: v for k, v in producer_conf.items() if not k.startswith("transactional")}
        self._producer: Producer | None = None
        self.sent = 0

    def send(self, value: bytes | None, *, reason: str, detail: str, source_topic: str, partition: int,
             offset: int, log_type: str | None) -> Delivery:
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
        delivery = Delivery()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            delivery.ok = err is None
            delivery.error = None if err is None else err.str()

        while True:
            try:
                self._producer.produce(self.topic, value=value, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)
        self.sent += 1
        return delivery

    def flush(self, timeout: float = 30.0) -> None:
        """Wait up to `timeout` for the dead letters in flight (their Delivery objects get their fate)."""
        if self._producer is not None:
            self._producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None
