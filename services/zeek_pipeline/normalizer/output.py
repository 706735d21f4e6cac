"""What both processing guarantees share: produce with backpressure and remember failed deliveries.

The producer queue is bounded (queue.buffering.max.messages/kbytes); when it is full, produce() raises
BufferError and we serve delivery reports and wait instead of buffering more, so memory stays flat
under any backlog. Subclasses decide what "commit" means.

Two kinds of failed delivery are kept apart for the service: records the broker refused as too large
(`size_failures`, see normalizer/size_guard.py) and writes it refuses for good (`refusals`: no permission on
a topic), which no replay can fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from zeek_pipeline.normalizer.dlq import Headers
from zeek_pipeline.normalizer.errors import (
    REFUSED_WRITES,
    BatchAborted,
    ErrorClass,
    FatalKafkaError,
    classify,
    describe,
)
from zeek_pipeline.normalizer.size_guard import SizeFailure

BACKPRESSURE_WAIT = 0.05
FLUSH_STEP = 1.0
MAX_KEPT = 1000


class KafkaOutput:
    guarantee = "none"

    def __init__(self, conf: dict[str, Any], *, stop_deadline: Callable[[], float | None]) -> None:
        self.delivery_failures: list[str] = []
        self.size_failures: list[SizeFailure] = []  # kept through abort(): the service learns from them
        self.refusals: list[str] = []  # e.g. "zeek-dlq: TOPIC_AUTHORIZATION_FAILED: ...", kept through abort()
        # Only failed deliveries are reported: success is known from flush()/commit_transaction() returning.
        self.producer = Producer({**conf, "on_delivery": self.on_delivery, "delivery.report.only.error": True})
        self.backpressure_waits = 0
        self._stop_deadline = stop_deadline

    # librdkafka calls this (from poll/flush) for failed deliveries only: delivery.report.only.error=true.
    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        if len(self.delivery_failures) < MAX_KEPT:
            self.delivery_failures.append(f"{err.name()}: {err.str()}")
        code = err.code()
        if code == KafkaError.MSG_SIZE_TOO_LARGE and len(self.size_failures) < MAX_KEPT:
            value = msg.value()
            self.size_failures.append(SizeFailure(msg.topic() or "", len(value) if value is not None else 0))
        elif code in REFUSED_WRITES and len(self.refusals) < MAX_KEPT:
            self.refusals.append(f"{msg.topic()}: {err.name()}: {err.str()}")

    def take_size_failures(self) -> list[SizeFailure]:
        failures, self.size_failures = self.size_failures, []
        return failures

    def take_refusals(self) -> list[str]:
        refusals, self.refusals = self.refusals, []
        return refusals

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
                if _is_state_error(exc):
                    raise BatchAborted(f"produce: {self.transaction_error() or describe(exc)}") from exc
                if classify(exc) is ErrorClass.FATAL:
                    raise FatalKafkaError(f"produce: {describe(exc)}") from exc
                raise BatchAborted(f"produce: {describe(exc)}") from exc

    def transaction_error(self) -> str | None:
        """Why the open transaction failed, when the output has transactions (normalizer/transactions.py)."""
        return None

    def produce_alone(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> bool:
        """Produce one record in a record batch of its own (flush before and after) and wait for it: False
        when the broker refused it as too large. Slow; only for records suspected of being too large."""
        self._flush()
        before = len(self.size_failures)
        self.produce(topic, value, key, headers)
        self._flush()
        return not any(failure.topic == topic for failure in self.size_failures[before:])

    def _flush(self) -> None:
        """Wait for every delivery in flight; a shutdown's deadline ends the wait (the batch is then redone)."""
        while self.producer.flush(FLUSH_STEP):
            deadline = self._stop_deadline()
            if deadline is not None and time.monotonic() >= deadline:
                raise BatchAborted("shutdown deadline passed while waiting for deliveries")

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
