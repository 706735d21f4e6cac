"""The consumer group's committed offsets, read by a consumer of its own that never joins the group.

Why not the service's consumer: after a broker outage longer than the session timeout its membership is
gone, and librdkafka answers its offset fetches only once it has rejoined, which needs the loop to serve
the rebalance; the loop is waiting for these very offsets (measured: ten-second timeouts for minutes).
A consumer that never subscribes only needs the group coordinator.

`stable=True` reads with isolation.level=read_committed, so the broker answers UNSTABLE_OFFSET_COMMIT
(retried by librdkafka) while a transaction holding offsets for these partitions is unresolved: the answer
is final. `stable=False` reads what was last committed without waiting for pending transactions, with the
metadata each offset was committed with (normalizer/ownership.py reads previous owners from it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from zeek_pipeline.normalizer.batch import TopicPartitionKey
from zeek_pipeline.normalizer.errors import FatalKafkaError, describe

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

REQUEST_TIMEOUT = 10.0  # one OffsetFetch
MAX_BACKOFF = 2.0


class GroupOffsets:
    def __init__(self, consumer_conf: dict[str, Any], *, stable: bool) -> None:
        self._conf = {**consumer_conf, "enable.auto.commit": False,
                      "isolation.level": "read_committed" if stable else "read_uncommitted"}
        self._consumer: Consumer | None = None

    def read(self, partitions: list[TopicPartitionKey], timeout: float = REQUEST_TIMEOUT) -> list[TopicPartition]:
        """One attempt; KafkaException when the broker does not answer for every partition."""
        if self._consumer is None:
            self._consumer = Consumer(self._conf)
        result = self._consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout)
        for tp in result:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return result

    def offsets_until_answered(self, partitions: list[TopicPartitionKey], should_stop: Callable[[], bool],
                               ) -> dict[TopicPartitionKey, int]:
        """Retried until the broker answers, however long it is away; FatalKafkaError only at shutdown."""
        backoff = 0.2
        while True:
            try:
                return {(tp.topic, tp.partition): tp.offset for tp in self.read(partitions)}
            except KafkaException as exc:
                if should_stop():
                    raise FatalKafkaError(f"committed offsets unknown at shutdown: {describe(exc)}") from exc
                log.warning("reading the committed offsets: %s; retrying", describe(exc))
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("offsets reader close: %s", describe(exc))
            self._consumer = None
