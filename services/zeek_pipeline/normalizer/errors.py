"""The error classes of confluent-kafka's transactional API, and what the service does with each.

- retriable()          -> RETRY: call the same operation again (commit after a timeout, init during an outage);
- txn_requires_abort() -> ABORT: abort the transaction and rewind the consumer to the last committed offsets;
- fatal() or any other -> FATAL: exit non-zero so Kubernetes restarts the pod (a fenced or misconfigured
                          producer cannot recover in-process; the restart resumes from committed offsets).
"""

from __future__ import annotations

import enum

from confluent_kafka import KafkaError, KafkaException

# Writes the broker refuses for good (missing permissions): a replay cannot succeed until an operator acts.
REFUSED_WRITES = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
})


class ErrorClass(enum.Enum):
    RETRY = "retry"
    ABORT = "abort"
    FATAL = "fatal"


def kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def classify(error: KafkaError | BaseException) -> ErrorClass:
    err = error if isinstance(error, KafkaError) else kafka_error(error)
    if err is None or err.fatal():
        return ErrorClass.FATAL
    if err.txn_requires_abort():
        return ErrorClass.ABORT
    if err.retriable():
        return ErrorClass.RETRY
    return ErrorClass.FATAL


def describe(exc: BaseException) -> str:
    err = kafka_error(exc)
    return f"{err.name()}: {err.str()}" if err is not None else f"{type(exc).__name__}: {exc}"


class FatalKafkaError(RuntimeError):
    """Unrecoverable in this process: the service stops and exits non-zero."""


class BatchAborted(RuntimeError):
    """The open batch was not committed (its transaction is aborted or its deliveries failed): the caller must
    rewind the consumer to the batch's first offsets so the records are processed again."""

    in_doubt = False


class BatchInDoubt(BatchAborted):
    """The producer was replaced while the batch's commit was in flight: the replacement's init_transactions
    completed the old transaction if the broker had it in PREPARE_COMMIT, and aborted it otherwise. Only the
    group's committed offsets tell which: the caller rewinds to those, never to the batch's first offsets."""

    in_doubt = True
