"""At-least-once output (`normalizer.processing_guarantee: at_least_once`): an idempotent producer, and the
input offsets committed only after every output of the batch is acknowledged by the broker.

Cheaper than transactions (no transaction markers, no read_committed wait downstream); a crash between
delivery and commit repeats the batch, so duplicates are possible and nothing is lost.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, TopicPartition

from zeek_pipeline.normalizer.errors import BatchAborted, ErrorClass, FatalKafkaError, classify, describe
from zeek_pipeline.normalizer.output import KafkaOutput

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

FLUSH_STEP = 1.0


class AtLeastOnceOutput(KafkaOutput):
    guarantee = "at_least_once"

    def commit(self, consumer: Consumer, offsets: list[TopicPartition], deadline: float,
               abort_deadline: float) -> None:
        """Wait for every delivery (retrying through an outage until `deadline`), then commit the offsets.

        Raises BatchAborted when some output was not delivered: the caller rewinds and the batch is produced
        again (its delivered part twice, which at-least-once allows)."""
        stop = self._stop_deadline()
        if stop is not None:
            deadline = min(deadline, stop)
        remaining = self.producer.flush(FLUSH_STEP)
        while remaining and time.monotonic() < deadline:
            remaining = self.producer.flush(FLUSH_STEP)
        if remaining or self.delivery_failures:
            failures = self.delivery_failures[:3]
            self.abort(abort_deadline)
            raise BatchAborted(f"{remaining} outputs undelivered, failures: {failures}")
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - sorted by classify()
            err = classify(exc)
            if err is ErrorClass.FATAL and _is_fatal(exc):
                raise FatalKafkaError(f"commit: {describe(exc)}") from exc
            # The outputs are durable; a later commit covers these offsets, or the next owner repeats them.
            log.warning("offset commit failed: %s; a later commit covers it", describe(exc))

    def abort(self, deadline: float) -> None:
        """Forget failed deliveries; what was delivered stays (at-least-once), the rest is produced again."""
        self.delivery_failures.clear()


def _is_fatal(exc: BaseException) -> bool:
    err = exc.args[0] if exc.args else None
    return bool(getattr(err, "fatal", lambda: False)())
