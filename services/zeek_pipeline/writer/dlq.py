"""Dead letters of the writer: normalized records that cannot be typed go to `output.kafka.dlq_topic`.

Header names match the normalizer-enricher's dead letters (`error.reason`, `error.detail`, `source.*`,
`log_type`) so one consumer of the DLQ reads both. A dead letter counts as done only once the broker
acknowledged it: `flush()` waits for every delivery and reports failure, and the flush that carries the
record is not committed until then. A retried flush re-sends only the dead letters that failed, not
those still in flight; only a crash between the acknowledgement and the commit can send one twice
(the DLQ is at-least-once, the Parquet output exactly-once).

A dead letter always fits: a value larger than the producer's message.max.bytes allows is cut to it, and
one the topic refuses as too large (MSG_SIZE_TOO_LARGE: its max.message.bytes is smaller) is sent again
cut to half, within the same flush, down to MIN_VALUE_BYTES; `error.truncated_from` then gives the
original size. Other refusals (no permission on the topic) stay failures with their reason: the flush is
retried and the writer reports degraded with it.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger("zeek_pipeline.writer.dlq")

MAX_DETAIL_BYTES = 1024
MIN_VALUE_BYTES = 1024
RECORD_OVERHEAD = 4096  # record batch framing and our headers, kept free under a size limit
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes default


class DeadLetterError(Exception):
    """The DLQ topic did not acknowledge every dead letter (broker down): retry the flush later."""


class Delivery:
    """The fate of one dead letter: ok True once acknowledged, False once failed, None while in flight."""

    __slots__ = ("error", "ok", "too_large")

    def __init__(self) -> None:
        self.ok: bool | None = None
        self.error: str | None = None
        self.too_large = False


class DeadLetters:
    def __init__(self, producer_conf: dict[str, Any], topic: str, component: str = "parquet-writer") -> None:
        self.topic = topic
        self.component = component
        self._conf = {k: v for k, v in producer_conf.items() if not k.startswith("transactional")}
        self._producer: Producer | None = None
        self.sent = 0
        self.max_value_bytes = max(MIN_VALUE_BYTES, int(self._conf.get(
            "message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)) - RECORD_OVERHEAD)
        self._in_flight: list[tuple[Delivery, bytes | None, list[tuple[str, str | bytes | None]]]] = []

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
        self._produce(delivery, value, headers)
        self._in_flight.append((delivery, value, headers))
        self.sent += 1
        return delivery

    def _produce(self, delivery: Delivery, value: bytes | None,
                 headers: list[tuple[str, str | bytes | None]]) -> None:
        assert self._producer is not None
        if value is not None and len(value) > self.max_value_bytes:
            headers = [*headers, ("error.truncated_from", b"%d" % len(value))]
            value = value[:self.max_value_bytes]

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            delivery.ok = err is None
            delivery.error = None if err is None else f"{err.name()}: {err.str()}"
            delivery.too_large = err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE

        delivery.ok, delivery.too_large = None, False
        while True:
            try:
                self._producer.produce(self.topic, value=value, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _shrink_refused(self) -> bool:
        """Send the dead letters the topic refused as too large again, cut to half the largest of them; False
        when there are none, or they cannot get smaller."""
        refused = [(d, v, h) for d, v, h in self._in_flight if d.too_large and v is not None]
        largest = max((min(len(v), self.max_value_bytes) for _, v, _ in refused if v is not None), default=0)
        if largest <= MIN_VALUE_BYTES:
            return False
        self.max_value_bytes = max(MIN_VALUE_BYTES, largest // 2)
        log.warning("%s refused dead letters as too large: values are cut to %d bytes from now on", self.topic,
                    self.max_value_bytes)
        for delivery, value, headers in refused:
            self._produce(delivery, value, headers)
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait up to `timeout` for the dead letters in flight (their Delivery objects get their fate); those
        refused as too large are sent again shorter until they fit."""
        if self._producer is not None:
            self._producer.flush(timeout)
            while self._shrink_refused():
                self._producer.flush(timeout)
        self._in_flight = [entry for entry in self._in_flight if entry[0].ok is None]

    def close(self, timeout: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None
