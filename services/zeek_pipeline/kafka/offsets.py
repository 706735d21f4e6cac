"""Committed offsets of consumer groups, read safely: the health service and the operator's autoscaler share it.

The offsets come from a Consumer in the group that never subscribes (an OffsetFetch, exactly what the
services commit), not from AdminClient.list_consumer_group_offsets: librdkafka dereferences a null
consumer-group handle when that admin call meets NOT_COORDINATOR (librdkafka#5040, seen here on a freshly
started broker) and the whole process dies. A Consumer that never subscribes never joins the group, so it
neither triggers a rebalance nor leaves a member behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger("zeek_pipeline.kafka.offsets")


class CommittedOffsets:
    """One idle Consumer per group, created on first use and kept (an OffsetFetch per read, no reconnect)."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._conf = dict(conf)
        self._consumers: dict[str, Consumer] = {}

    def read(self, group: str, partitions: Sequence[TopicPartition],
             timeout: float) -> dict[tuple[str, int], int | None]:
        """(topic, partition) -> the group's committed offset, None when it has none. Raises KafkaException
        when the broker does not answer; a partition with its own error is left out."""
        if not partitions:
            return {}
        answer = self._consumer(group).committed(list(partitions), timeout=timeout)
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in answer if tp.error is None}

    def _consumer(self, group: str) -> Consumer:
        consumer = self._consumers.get(group)
        if consumer is None:
            conf = {**self._conf, "group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": False,
                    "allow.auto.create.topics": False}
            consumer = self._consumers[group] = Consumer(conf)
        return consumer

    def close(self) -> None:
        """Close the consumers (they never joined their groups, so this leaves no trace)."""
        consumers, self._consumers = self._consumers, {}
        for consumer in consumers.values():
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("closing an offsets consumer: %s", exc)
