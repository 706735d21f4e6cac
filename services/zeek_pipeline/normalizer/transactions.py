"""Exactly-once output: one transactional producer per instance, one transaction per batch.

The transactional.id is derived from the consumer group and the instance (pod) name, so it is stable across
restarts: a restarted pod fences its predecessor and the broker aborts whatever that one left open. A pod
replaced under a new name is fenced by the partitions' next owner instead (normalizer/ownership.py). The
consumer's offsets go into the same transaction (`send_offsets_to_transaction` with the consumer group
metadata, KIP-447), so output, dead letters and input offsets become visible together or not at all, and a
zombie from an old group generation cannot commit.

librdkafka 2.16 can block in `send_offsets_to_transaction` for good, past its timeout, after a broker
restart (the group coordinator's broker handle is decommissioned while still cached: librdkafka issues
#5456/#5511). The blocking transactional calls therefore run in a helper thread; when one overruns its
timeout by HANG_GRACE seconds, the producer is abandoned and a new one with the same transactional.id
takes over (its init_transactions fences the old one and aborts the open transaction), and the batch is
redone. The service recovers by itself instead of hanging.

The same replacement ends a commit that cannot finish: when commit_transaction keeps failing with retriable
errors past its deadline (a broker stopped longer than the transaction timeout), calling abort_transaction
would only meet `_CONFLICT` (the commit is still in progress inside librdkafka) until the broker resolves
it. Instead a new producer with the same id is initialised, retrying until the broker is back, and the
batch is reported in doubt (BatchInDoubt): the service then rewinds to the group's committed offsets, which
say whether the old transaction committed. The process never exits for an outage, however long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from zeek_pipeline.normalizer.errors import (
    REFUSED_WRITES,
    BatchAborted,
    BatchInDoubt,
    ErrorClass,
    FatalKafkaError,
    classify,
    describe,
    kafka_error,
)
from zeek_pipeline.normalizer.failpoints import Failpoints
from zeek_pipeline.normalizer.output import KafkaOutput

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

OPERATION_TIMEOUT = 10.0  # one blocking transactional call; a retriable timeout is simply retried
MAX_BACKOFF = 2.0
HANG_GRACE = 20.0  # a call still blocked this long after its own timeout is stuck for good
DISPOSE_DELAY = 5.0  # a replaced (not hung) producer is dropped this long after its replacement
MAX_ABANDONED = 3  # producers given up on because they hung, in one process; beyond that, restart the pod


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
        self._abandoned: list[Producer] = []  # hung ones, kept referenced: destroying them would block too
        super().__init__(self._conf_for(0), stop_deadline=stop_deadline)
        self.transactional_id = str(conf["transactional.id"])
        self.in_transaction = False
        self.failpoints = Failpoints.from_environment()

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
                self._replace_producer(str(exc), hung=True)
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                if classify(exc) is not ErrorClass.RETRY:
                    raise FatalKafkaError(f"init_transactions: {describe(exc)}") from exc
                log.warning("init_transactions: %s; retrying", describe(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        return False

    def _replace_producer(self, why: str, *, hung: bool) -> None:
        """Give up on the current producer for a new one with the same transactional.id (whose
        init_transactions fences the old one and resolves its open transaction)."""
        if hung and len(self._abandoned) >= MAX_ABANDONED:
            raise FatalKafkaError(f"{why}; {MAX_ABANDONED} producers abandoned already, restarting")
        log.error("%s: replacing the transactional producer", why)
        old = self.producer
        self._generation += 1
        self.in_transaction = False
        self.delivery_failures.clear()
        self.producer = Producer(self._conf_for(self._generation))
        if hung:
            self._abandoned.append(old)
        else:
            # Not stuck, only given up on: let it be destroyed off the loop's thread (rd_kafka_destroy waits
            # for its broker threads), once the caller's frames have let go of it, so a long life with many
            # outages does not pile up handles.
            threading.Thread(target=_release_later, args=([old],), name="kafka-dispose", daemon=True).start()

    def begin(self) -> None:
        if not self.in_transaction:
            try:
                self.producer.begin_transaction()
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                raise FatalKafkaError(f"begin_transaction: {describe(exc)}") from exc
            self.in_transaction = True

    def commit(self, consumer: Consumer, offsets: list[TopicPartition], deadline: float,
               abort_deadline: float) -> None:
        """Send the offsets and commit; retriable errors retry until `deadline`.

        Raises BatchAborted when the transaction was aborted (the caller rewinds to the batch's first
        offsets), BatchInDoubt when the producer had to be replaced with the commit in flight (the caller
        rewinds to the group's committed offsets), FatalKafkaError when the producer cannot go on."""
        if not self.in_transaction:
            return
        offsets_sent = False
        backoff = 0.1
        producer = self.producer
        failpoints = self.failpoints
        failpoints.hit("before_send_offsets")
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
                    failpoints.hit("before_commit_transaction")
                timeout = self._timeout(deadline)
                guarded_call(step, partial(_commit_transaction, producer, timeout, failpoints), timeout)
                self.in_transaction = False
                self.delivery_failures.clear()
                return
            except ProducerHung as exc:
                self._replace_producer(str(exc), hung=True)
                self._restart()
                raise BatchInDoubt(str(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - sorted by classify()
                kind = classify(exc)
                if kind is ErrorClass.FATAL:
                    raise FatalKafkaError(f"{step}: {describe(exc)}") from exc
                if kind is ErrorClass.ABORT:
                    log.warning("%s: %s; aborting the transaction", step, describe(exc))
                    self._note_refusal(exc)
                    self.abort(abort_deadline)
                    raise BatchAborted(f"{step}: {describe(exc)}") from exc
                if time.monotonic() >= deadline:
                    # abort_transaction would meet _CONFLICT while librdkafka still retries the commit: a
                    # new producer resolves the transaction on the broker instead, whichever way it went.
                    why = f"{step} not done by its deadline ({describe(exc)})"
                    self._replace_producer(why, hung=False)
                    self._restart()
                    raise BatchInDoubt(why) from exc
                log.warning("%s: %s; retrying", step, describe(exc))
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def transaction_error(self) -> str | None:
        """Why librdkafka refuses new messages (produce() raised _STATE): the transaction's abortable error
        (e.g. TOPIC_AUTHORIZATION_FAILED from adding a partition), which commit_transaction returns at once in
        that state. It cannot commit anything: _STATE means the transaction is not in progress any more."""
        try:
            self.producer.commit_transaction(1.0)
        except KafkaException as exc:
            self._note_refusal(exc)
            return describe(exc)
        return None

    def _note_refusal(self, exc: BaseException) -> None:
        err = kafka_error(exc)
        if err is not None and err.code() in REFUSED_WRITES:
            self.refusals.append(f"transaction: {describe(exc)}")

    def _restart(self) -> None:
        """init_transactions on the replacement producer, retrying through an outage of any length; only a
        shutdown ends the wait (the next instance with this transactional.id resolves the transaction)."""
        if not self.start(self._stop_passed):
            raise FatalKafkaError("stopping before the replacement transactional producer was initialised")

    def _stop_passed(self) -> bool:
        stop = self._stop_deadline()
        return stop is not None and time.monotonic() >= stop

    def abort(self, deadline: float) -> None:
        """Abort the open transaction (nothing of it becomes visible); retries retriable errors until `deadline`.

        When it cannot be aborted by then (the broker is away, or librdkafka answers _CONFLICT), the producer
        is replaced: the replacement's init_transactions aborts the transaction. No commit was requested for
        it, so it cannot have committed: the batch's first offsets stay the right restart point."""
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
                self._replace_producer(str(exc), hung=True)
                self._restart()
                return
            except Exception as exc:  # noqa: BLE001 - sorted below
                err = kafka_error(exc)
                if err is not None and err.fatal() and err.code() == KafkaError.INVALID_TXN_STATE:
                    # The broker holds no open transaction for us (every AddPartitionsToTxn of this one was
                    # refused, e.g. for lack of permission): nothing to abort, but librdkafka made the producer
                    # fatal. A new one with the same id goes on; its init_transactions fences this one.
                    self._replace_producer(f"abort_transaction: {describe(exc)}", hung=False)
                    self._restart()
                    return
                if err is None or err.fatal():
                    raise FatalKafkaError(f"abort_transaction: {describe(exc)}") from exc
                if not err.retriable() or time.monotonic() >= deadline:
                    self._replace_producer(f"abort_transaction: {describe(exc)}", hung=False)
                    self._restart()
                    return
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


def _commit_transaction(producer: Producer, timeout: float, failpoints: Failpoints) -> None:
    producer.commit_transaction(timeout)
    failpoints.hit("after_commit_transaction")  # a hang here is librdkafka's hang after PREPARE_COMMIT


def _release_later(holder: list[Producer]) -> None:
    time.sleep(DISPOSE_DELAY)
    holder.clear()
