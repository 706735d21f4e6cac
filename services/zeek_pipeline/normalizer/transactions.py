"""Exactly-once output: one transactional producer per instance, one transaction per batch.

The transactional.id is derived from the consumer group and the instance (pod) name, so it is stable across
restarts: a restarted pod fences its predecessor and the broker aborts whatever that one left open. The
consumer's offsets go into the same transaction (`send_offsets_to_transaction` with the consumer group
metadata, KIP-447), so output, dead letters and input offsets become visible together or not at all, and a
zombie from an old group generation cannot commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from zeek_pipeline.normalizer.errors import BatchAborted, ErrorClass, FatalKafkaError, classify, describe
from zeek_pipeline.normalizer.output import KafkaOutput

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

OPERATION_TIMEOUT = 10.0  # one blocking transactional call; a retriable timeout is simply retried
MAX_BACKOFF = 2.0


def transactional_id(group_id: str, instance: str) -> str:
    """Stable per instance and distinct per pipeline (group), e.g. `zeek-normalizer-enricher.normalizer-0`."""
    return f"{group_id}.{instance}"


class TransactionalOutput(KafkaOutput):
    guarantee = "exactly_once"

    def __init__(self, conf: dict[str, Any], *, stop_deadline: Callable[[], float | None]) -> None:
        super().__init__(conf, stop_deadline=stop_deadline)
        self.transactional_id = str(conf["transactional.id"])
        self.in_transaction = False

    def start(self, should_stop: Callable[[], bool]) -> bool:
        """init_transactions (fences a predecessor with the same id); retries through a broker outage."""
        backoff = 0.2
        while not should_stop():
            try:
                self.producer.init_transactions(OPERATION_TIMEOUT)
                log.info("transactional producer ready", extra={"context": {"transactional_id": self.transactional_id}})
                return True
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                if classify(exc) is not ErrorClass.RETRY:
                    raise FatalKafkaError(f"init_transactions: {describe(exc)}") from exc
                log.warning("init_transactions: %s; retrying", describe(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        return False

    def _before_produce(self) -> None:
        if not self.in_transaction:
            try:
                self.producer.begin_transaction()
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                raise FatalKafkaError(f"begin_transaction: {describe(exc)}") from exc
            self.in_transaction = True

    def commit(self, consumer: Consumer, offsets: list[TopicPartition], deadline: float,
               abort_deadline: float) -> None:
        """Send the offsets and commit; retriable errors retry until `deadline`, then the transaction aborts
        (its retriable errors retry until `abort_deadline`).

        Raises BatchAborted when the transaction was aborted (the caller rewinds), FatalKafkaError when the
        producer cannot go on."""
        if not self.in_transaction:
            return
        offsets_sent = False
        backoff = 0.1
        while True:
            try:
                if not offsets_sent:
                    self.producer.send_offsets_to_transaction(
                        offsets, consumer.consumer_group_metadata(), self._timeout(deadline))
                    offsets_sent = True
                self.producer.commit_transaction(self._timeout(deadline))
                self.in_transaction = False
                self.delivery_failures.clear()
                return
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                kind = classify(exc)
                step = "commit_transaction" if offsets_sent else "send_offsets_to_transaction"
                if kind is ErrorClass.FATAL:
                    raise FatalKafkaError(f"{step}: {describe(exc)}") from exc
                if kind is ErrorClass.ABORT or time.monotonic() >= deadline:
                    log.warning("%s: %s; aborting the transaction", step, describe(exc))
                    self.abort(abort_deadline)
                    raise BatchAborted(f"{step}: {describe(exc)}") from exc
                log.warning("%s: %s; retrying", step, describe(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def abort(self, deadline: float) -> None:
        """Abort the open transaction (nothing of it becomes visible); retries retriable errors until `deadline`.

        If the broker cannot be reached by then, FatalKafkaError: after a restart the same transactional.id
        fences this producer and the broker aborts the transaction, so nothing is lost either way."""
        self.delivery_failures.clear()
        if not self.in_transaction:
            return
        backoff = 0.1
        while True:
            try:
                self.producer.abort_transaction(self._timeout(deadline))
                self.in_transaction = False
                return
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                if classify(exc) is not ErrorClass.RETRY or time.monotonic() >= deadline:
                    raise FatalKafkaError(f"abort_transaction: {describe(exc)}") from exc
                log.warning("abort_transaction: %s; retrying", describe(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def close(self, timeout: float) -> None:
        # Nothing is pending after a commit or abort; an open transaction is left for the broker to abort
        # (or for the next instance with this transactional.id to fence).
        self.producer.poll(0)

    @staticmethod
    def _timeout(deadline: float) -> float:
        return max(0.5, min(OPERATION_TIMEOUT, deadline - time.monotonic()))
