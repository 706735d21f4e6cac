"""The partition ledger: what it commits, and where `rewind(to=first|committed)` restarts each partition."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from zeek_pipeline.normalizer.errors import FatalKafkaError
from zeek_pipeline.normalizer.group_offsets import GroupOffsets
from zeek_pipeline.normalizer.ledger import PartitionLedger, ReadCommitted, RewindTo

UNSET = -1001  # librdkafka's OFFSET_INVALID: nothing committed yet


class Consumer:
    """Stand-in for the service's consumer: seeks and positions."""

    def __init__(self) -> None:
        self.seeks: list[tuple[int, int]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, UNSET) for tp in partitions]


def committed(offsets: dict[int, int]) -> ReadCommitted:
    """The group's committed offsets as the broker would answer them."""
    return lambda partitions: {tp: offsets.get(tp[1], UNSET) for tp in partitions}


class FlakyOffsets(GroupOffsets):
    """GroupOffsets whose broker answers UNSTABLE_OFFSET_COMMIT `unstable` times first."""

    def __init__(self, offsets: dict[int, int], unstable: int) -> None:
        super().__init__({}, stable=True)
        self.offsets, self.unstable = offsets, unstable

    def read(self, partitions: list[tuple[str, int]], timeout: float = 10.0) -> list[TopicPartition]:
        if self.unstable:
            self.unstable -= 1
            raise KafkaException(KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT))
        return [TopicPartition(t, p, self.offsets.get(p, UNSET)) for t, p in partitions]


def handle(ledger: PartitionLedger, partition: int, *offsets: int) -> None:
    """What the hot path does per record, then at the end of the fetch."""
    for offset in offsets:
        ledger.positions[("raw", partition)] = offset + 1
        ledger.first.setdefault(("raw", partition), offset)
    ledger.handled()


def ledger_with_batch() -> PartitionLedger:
    ledger = PartitionLedger()
    ledger.assign([("raw", 0), ("raw", 1), ("raw", 2)])
    handle(ledger, 0, 10, 11, 15)
    handle(ledger, 1, 20)
    return ledger


def test_the_batch_commits_the_next_offset_of_each_partition_with_the_owner_metadata() -> None:
    ledger = ledger_with_batch()
    offsets = ledger.offsets(Consumer(), metadata="owner")  # type: ignore[arg-type]
    assert {(tp.partition, tp.offset, tp.metadata) for tp in offsets} == {(0, 16, "owner"), (1, 21, "owner")}
    ledger.committed()
    assert ledger.offsets(Consumer()) == [] and ledger.positions[("raw", 0)] == 16  # type: ignore[arg-type]


def test_rewind_to_first_seeks_the_still_assigned_partitions_to_the_batch_start() -> None:
    ledger = ledger_with_batch()
    ledger.leaving([("raw", 1)])  # being revoked
    consumer = Consumer()
    rewound = ledger.rewind(consumer, RewindTo.FIRST)  # type: ignore[arg-type]
    assert consumer.seeks == [(0, 10)] and rewound.points == {("raw", 0): 10} and not rewound.batch_committed
    assert ledger.positions[("raw", 0)] == 10 and ("raw", 1) not in ledger.positions
    assert not ledger.first and not ledger.next


def test_rewind_to_committed_continues_after_a_batch_its_successor_committed() -> None:
    # The replaced producer's transaction had reached PREPARE_COMMIT: the group's offsets are past the batch.
    ledger = ledger_with_batch()
    consumer = Consumer()
    rewound = ledger.rewind(consumer, RewindTo.COMMITTED, committed({0: 16, 1: 21}))  # type: ignore[arg-type]
    assert sorted(consumer.seeks) == [(0, 16), (1, 21)] and rewound.batch_committed


def test_rewind_to_committed_redoes_a_batch_that_was_aborted() -> None:
    ledger = ledger_with_batch()
    consumer = Consumer()  # partition 1 never committed: its batch start is the restart point
    rewound = ledger.rewind(consumer, RewindTo.COMMITTED, committed({0: 10}))  # type: ignore[arg-type]
    assert sorted(consumer.seeks) == [(0, 10), (1, 20)] and not rewound.batch_committed


def test_committed_offsets_are_read_again_until_they_are_stable() -> None:
    offsets = FlakyOffsets({0: 16, 1: 21}, unstable=2)
    assert offsets.offsets_until_answered([("raw", 0), ("raw", 1)], should_stop=lambda: False) == {
        ("raw", 0): 16, ("raw", 1): 21}
    assert offsets.unstable == 0


def test_committed_offsets_unknown_at_shutdown_stop_the_service() -> None:
    with pytest.raises(FatalKafkaError, match="unknown at shutdown"):
        FlakyOffsets({}, unstable=1).offsets_until_answered([("raw", 0)], should_stop=lambda: True)


def test_fetched_but_unhandled_records_are_rewound_too() -> None:
    from confluent_kafka import Message

    ledger = ledger_with_batch()
    ledger.fetched_unhandled([Message(topic="raw", partition=2, offset=30), Message(topic="raw", partition=2,
                                                                                  offset=31)])
    consumer = Consumer()
    ledger.rewind(consumer, RewindTo.FIRST)  # type: ignore[arg-type]
    assert sorted(consumer.seeks) == [(0, 10), (1, 20), (2, 30)]


def test_release_forgets_everything_about_a_partition() -> None:
    ledger = ledger_with_batch()
    ledger.release([("raw", 0)])
    assert ledger.assigned == {("raw", 1), ("raw", 2)}
    assert ("raw", 0) not in ledger.positions and ("raw", 0) not in ledger.first and ("raw", 0) not in ledger.next
