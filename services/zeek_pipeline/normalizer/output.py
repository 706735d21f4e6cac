"""What both processing guarantees share: produce with backpressure and remember failed deliveries.

The producer queue is bounded (queue.buffering.max.messages/kbytes); when it is full, produce() raises
BufferError and we serve delivery reports and wait instead of buffering more, so memory stays flat
under any backlog. Subclasses decide what "commit" means.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from zeek_pipeline.normalizer.dlq import Headers
from zeek_pipeline.normalizer.errors import BatchAborted, ErrorClass, FatalKafkaError, classify, describe

BACKPRESSURE_WAIT = 0.05


class KafkaOutput:
    guarantee = "none"

    def __init__(self, conf: dict[str, Any], *, stop_deadline: Callable[[], float | None]) -> None:
        self.delivery_failures: list[str] = []
        # Only failed deliveries are reported: success is known from flush()/commit_transaction() returning.
        self.producer = Producer({**conf, "on_delivery": self.on_delivery, "delivery.report.only.error": True})
        self.backpressure_waits = 0
        self._stop_deadline = stop_deadline

    # librdkafka calls this (from poll/flush) for failed deliveries only: delivery.report.only.error=true.
    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and len(self.delivery_failures) < 1000:
            self.delivery_failures.append(f"{err.name()}: {err.str()}")

    def start(self, should_stop: Callable[[], bool]) -> bool:
        return not should_stop()

    def begin(self) -> None:
        """Before producing a fetch's outputs: exactly-once begins its transaction here."""

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> None:
        """The careful path: waits while the queue is full, sorts errors (the loop's fast path falls back here)."""
        self.begin()
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self.backpressure_waits += 1
                self.producer.poll(BACKPRESSURE_WAIT)
                deadline = self._stop_deadline()
                if deadline is not None and time.monotonic() >= deadline:
                    raise BatchAborted("shutdown deadline passed while the producer queue was full") from None
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                # In a transaction that already failed librdkafka refuses new messages (_STATE): abort and redo.
                if classify(exc) is ErrorClass.FATAL and not _is_state_error(exc):
                    raise FatalKafkaError(f"produce: {describe(exc)}") from exc
                raise BatchAborted(f"produce: {describe(exc)}") from exc

    def poll(self) -> None:
        self.producer.poll(0)

    def queue_length(self) -> int:
        return len(self.producer)

    def commit(self, consumer: Consumer, offsets: list[TopicPartition], deadline: float,
               abort_deadline: float) -> None:
        raise NotImplementedError

    def abort(self, deadline: float) -> None:
        raise NotImplementedError

    def close(self, timeout: float) -> None:
        self.producer.flush(timeout)


def _is_state_error(exc: BaseException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.code() == KafkaError._STATE  # noqa: SLF001
