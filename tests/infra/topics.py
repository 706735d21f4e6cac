"""Topic helpers on confluent-kafka for tests: create, produce fast, consume everything, read committed offsets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.infra.waiting import wait_for


@dataclass(frozen=True)
class Record:
    """One consumed message, detached from librdkafka so tests can compare and sort them."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, msg: Message) -> Record:
        headers = {name: value or b"" for name, value in (msg.headers() or [])}
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            config=config or {})], operation_timeout=30)
    futures[name].result(30)
    # Metadata can lag creation by a moment; wait until every partition has a leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return name
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leaders after 30s")


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    keys: Sequence[bytes | None] | None = None,
    partition: int | None = None,
) -> int:
    """Produce fast (batched, lz4, idempotent) and wait for every delivery; returns the count delivered."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "enable.idempotence": True, "batch.size": 1_000_000})
    errors: list[str] = []

    def on_delivery(err: object, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    for index, value in enumerate(values):
        kwargs: dict[str, object] = {"value": value, "on_delivery": on_delivery}
        if keys is not None:
            kwargs["key"] = keys[index]
        if partition is not None:
            kwargs["partition"] = partition
        produce_when_room(producer, topic, **kwargs)
        producer.poll(0)
        count += 1
    remaining = producer.flush(60)
    if remaining or errors:
        raise KafkaException(f"{remaining} undelivered, errors: {errors[:5]}")
    return count


def produce_when_room(producer: Producer, topic: str, **kwargs: Any) -> None:
    """`producer.produce`, serving delivery reports while librdkafka's local queue is full (BufferError)."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout: float = 60.0,
    idle: float = 3.0,
    isolation: str = "read_committed",
) -> list[Record]:
    """Read the topic from the beginning: until `expected` records arrived, or nothing came for `idle` seconds."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique_name("test-reader"),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    records: list[Record] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        last_seen = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                records.append(Record.of(msg))
            if batch:
                last_seen = time.monotonic()
            if expected is not None and len(records) >= expected:
                # Linger briefly so a test also sees records beyond the expected count (duplicates).
                extra = consumer.consume(num_messages=10_000, timeout=1.0)
                records.extend(Record.of(m) for m in extra if not m.error())
                break
            if expected is None and time.monotonic() - last_seen > idle:
                break
    finally:
        consumer.close()
    return records


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none was committed)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        # A fresh or restarted broker answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS for a while.
        deadline = time.monotonic() + 30
        while True:
            try:
                committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
                break
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """High watermark per partition."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("wm")})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def set_group_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group that never consumes (retrying while the coordinator is still loading)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])

    def committed() -> bool:
        result = admin.alter_consumer_group_offsets([request])[group].result(30)
        return all(tp.error is None for tp in result.topic_partitions)

    wait_for(f"offsets of {group} committed", committed, timeout=30, interval=0.5)
