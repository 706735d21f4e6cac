"""Create the pipeline's topics when missing (the demo and the operator's optional topic creation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from zeek_pipeline.kafka.client_log import with_logger


def ensure_topics(
    admin_conf: Mapping[str, Any],
    topics: Mapping[str, int],
    configs: Mapping[str, Mapping[str, str]] | None = None,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> list[str]:
    """Create each missing topic with its partition count; returns the names created."""
    admin = AdminClient(with_logger(dict(admin_conf)))
    try:
        return _create_missing(admin, topics, configs or {}, replication_factor, timeout)
    finally:
        admin.poll(0)  # hands librdkafka's queued log lines to the logger


def _create_missing(admin: AdminClient, topics: Mapping[str, int], configs: Mapping[str, Mapping[str, str]],
                    replication_factor: int, timeout: float) -> list[str]:
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                 config=dict(configs.get(name, {})))
        for name, partitions in topics.items()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created


STATUS_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.1"}
