"""Exactly-once output: one transactional producer per instance, one transaction per batch.

The transactional.id is derived from the consumer group and the instance (pod) name, so it is stable across
restarts: a restarted pod fences its predecessor and the broker aborts whatever that one left open. The
consumer's offsets go into the same transaction (`send_offsets_to_transaction` with the consumer group
metadata, KIP-447), so output, dead letters and input offsets become visible together or not at all, and a
zombie from an old group generation cannot commit.

librdkafka 2.16 can block in `send_offsets_to_transaction` for good, past its timeout, after a broker
restart (the group coordinator's broker handle is decommissioned while still cached: librdkafka issues
#5456/#5511). The blocking transactional calls therefore run in a helper thread; when one overruns its
timeout by HANG_GRACE seconds, the producer is abandoned and a new one with the same transactional.id
takes over (its init_transactions fences the old one and aborts the open transaction), and the batch is
redone. The service recovers by itself instead of hanging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from zeek_pipeline.normalizer.errors import BatchAborted, ErrorClass, FatalKafkaError, classify, describe
from zeek_pipeline.normalizer.output import KafkaOutput

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

OPERATION_TIMEOUT = 10.0  # one blocking transactional call; a retriable timeout is simply retried
MAX_BACKOFF = 2.0
HANG_GRACE = 20.0  # a call still blocked this long after its own timeout is stuck for good
MAX_ABANDONED = 3  # producers given up on in one process; beyond that, restart the pod


def transactional_id(group_id: str, instance: str) -> str:
    """Stable per instance and distinct per pipeline (group), e.g. `zeek-normalizer-enricher.normalizer-0`."""
    return f"{group_id}.{instance}"


class ProducerHung(RuntimeError):
    """A transactional call did not return long after its timeout."""


def guarded_call(what: str, call: Callable[[], Any], timeout: float) -> Any:
    """Run a blocking librdkafka call in a helper thread; ProducerHung if it overruns `timeout + HANG_GRACE`."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"kafka-{what}", daemon=True)
    thread.start()
    thread.join(timeout + HANG_GRACE)
    if thread.is_alive():
        raise ProducerHung(f"{what} still blocked {timeout + HANG_GRACE:.0f}s after it was called")
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None


class TransactionalOutput(KafkaOutput):
    guarantee = "exactly_once"

    def __init__(self, conf: dict[str, Any], *, stop_deadline: Callable[[], float | None]) -> None:
        self._error_cb: Callable[[KafkaError], None] | None = conf.get("error_cb")
        self._conf = {key: value for key, value in conf.items() if key != "error_cb"}
        self._generation = 0
        self._abandoned: list[Producer] = []  # kept referenced: destroying a stuck handle would block too
        super().__init__(self._conf_for(0), stop_deadline=stop_deadline)
        self.transactional_id = str(conf["transactional.id"])
        self.in_transaction = False

    def _conf_for(self, generation: int) -> dict[str, Any]:
        def on_error(err: KafkaError) -> None:
            # An abandoned producer reports being fenced by its successor: that is expected, not fatal.
            if generation == self._generation and self._error_cb is not None:
                self._error_cb(err)

        return {**self._conf, "error_cb": on_error}

    def start(self, should_stop: Callable[[], bool]) -> bool:
        """init_transactions (fences a predecessor with the same id); retries through a broker outage."""
        backoff = 0.2
        while not should_stop():
            try:
                guarded_call("init_transactions", partial(self.producer.init_transactions, OPERATION_TIMEOUT),
                             OPERATION_TIMEOUT)
                log.info("transactional producer ready", extra={"context": {
                    "transactional_id": self.transactional_id, "generation": self._generation}})
                return True
            except ProducerHung as exc:
                self._replace_producer(str(exc))
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                if classify(exc) is not ErrorClass.RETRY:
                    raise FatalKafkaError(f"init_transactions: {describe(exc)}") from exc
                log.warning("init_transactions: %s; retrying", describe(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        return False

    def _replace_producer(self, why: str) -> None:
        """Abandon a stuck producer for a new one with the same transactional.id."""
        if len(self._abandoned) >= MAX_ABANDONED:
            raise FatalKafkaError(f"{why}; {MAX_ABANDONED} producers abandoned already, restarting")
        log.error("%s: replacing the transactional producer (librdkafka hang)", why)
        self._abandoned.append(self.producer)
        self._generation += 1
        self.in_transaction = False
        self.delivery_failures.clear()
        self.producer = Producer(self._conf_for(self._generation))

    def begin(self) -> None:
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
        producer = self.producer
        while True:
            deadline = self._bounded(deadline)
            step = "commit_transaction" if offsets_sent else "send_offsets_to_transaction"
            try:
                if not offsets_sent:
                    metadata = consumer.consumer_group_metadata()
                    timeout = self._timeout(deadline)
                    guarded_call(step, partial(producer.send_offsets_to_transaction, offsets, metadata, timeout),
                                 timeout)
                    offsets_sent = True
                    step = "commit_transaction"
                timeout = self._timeout(deadline)
                guarded_call(step, partial(producer.commit_transaction, timeout), timeout)
                self.in_transaction = False
                self.delivery_failures.clear()
                return
            except ProducerHung as exc:
                self._replace_producer(str(exc))
                self._restart(abort_deadline)
                raise BatchAborted(str(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                kind = classify(exc)
                if kind is ErrorClass.FATAL:
                    raise FatalKafkaError(f"{step}: {describe(exc)}") from exc
                if kind is ErrorClass.ABORT or time.monotonic() >= deadline:
                    log.warning("%s: %s; aborting the transaction", step, describe(exc))
                    self.abort(abort_deadline)
                    raise BatchAborted(f"{step}: {describe(exc)}") from exc
                log.warning("%s: %s; retrying", step, describe(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _restart(self, deadline: float) -> None:
        """init_transactions on the replacement producer, retrying through the outage until `deadline`."""
        if not self.start(lambda: time.monotonic() >= deadline):
            raise FatalKafkaError("the replacement transactional producer could not be initialised in time")

    def abort(self, deadline: float) -> None:
        """Abort the open transaction (nothing of it becomes visible); retries retriable errors until `deadline`.

        If the broker cannot be reached by then, FatalKafkaError: after a restart the same transactional.id
        fences this producer and the broker aborts the transaction, so nothing is lost either way."""
        self.delivery_failures.clear()
        if not self.in_transaction:
            return
        backoff = 0.1
        producer = self.producer
        while True:
            deadline = self._bounded(deadline)
            try:
                timeout = self._timeout(deadline)
                guarded_call("abort_transaction", partial(producer.abort_transaction, timeout), timeout)
                self.in_transaction = False
                return
            except ProducerHung as exc:
                self._replace_producer(str(exc))  # its init_transactions aborts the transaction
                self._restart(deadline)
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

    def _bounded(self, deadline: float) -> float:
        """A shutdown in progress shortens every deadline to its own."""
        stop = self._stop_deadline()
        return deadline if stop is None else min(deadline, stop)

    @staticmethod
    def _timeout(deadline: float) -> float:
        return max(0.5, min(OPERATION_TIMEOUT, deadline - time.monotonic()))
