"""The one place that knows, per input partition, what this instance owns and where it stands.

Why one object: restart points used to be decided in four places (the hot path, the abort path, the
rebalance callbacks and the offset computation), each from its own copy of the state. Now the assigned set,
the next offset expected per partition (`positions`), the open batch's first and next offsets (`first`,
`next`) and the offsets to commit live here, and the only ways to move them are `assign`, `leaving`,
`release`, `committed` and `rewind`. Rebalance callbacks and abort paths call these and nothing else.

`rewind(to=...)` is the single decision after a batch did not commit normally:

- `RewindTo.FIRST`: the transaction was aborted (abort_transaction returned): nothing of the batch is
  visible, so every partition restarts at the batch's first offset, which equals its committed offset.
- `RewindTo.COMMITTED`: the outcome is unknown (the producer was replaced; the replacement's
  init_transactions completed the old transaction if it had reached PREPARE_COMMIT and aborted it
  otherwise): restart from the group's committed offsets as the broker has them now, never from a
  remembered position, so a batch that did commit is not produced a second time.

The hot path (`NormalizerService._process`) binds `positions` and `first` to locals for speed; it only ever
sets `positions[tp]` to the offset after a handled record and `first[tp]` once per batch.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from zeek_pipeline.normalizer.batch import TopicPartitionKey
from zeek_pipeline.normalizer.errors import FatalKafkaError, describe

log = logging.getLogger("zeek_pipeline.normalizer-enricher")


ReadCommitted = Callable[[list[TopicPartitionKey]], dict[TopicPartitionKey, int]]


class RewindTo(enum.Enum):
    FIRST = "first"
    COMMITTED = "committed"


@dataclass(frozen=True, slots=True)
class Rewound:
    """Where each still-assigned partition of the batch restarts, and whether the broker's committed offsets
    show that the batch committed after all (it then counts as committed, and nothing is redone)."""

    points: dict[TopicPartitionKey, int]
    batch_committed: bool = False


class PartitionLedger:
    def __init__(self) -> None:
        self.assigned: set[TopicPartitionKey] = set()
        self.positions: dict[TopicPartitionKey, int] = {}  # next offset expected: skips re-delivered records
        self.first: dict[TopicPartitionKey, int] = {}  # the open batch's first offset per partition
        self.next: dict[TopicPartitionKey, int] = {}  # the open batch's next offset per partition

    # --- ownership ---------------------------------------------------------------------------------
    def assign(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for tp in partitions:
            self.assigned.add(tp)
            self.positions.pop(tp, None)  # the consumer starts at the committed offset, whatever we saw

    def leaving(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Revoked or lost, with the batch still to commit or abort: a rewind no longer touches them."""
        self.assigned.difference_update(partitions)

    def release(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Revoked or lost: after the batch was committed or aborted, forget everything about them."""
        for tp in partitions:
            self.assigned.discard(tp)
            self.positions.pop(tp, None)
            self.first.pop(tp, None)
            self.next.pop(tp, None)

    # --- the open batch ----------------------------------------------------------------------------
    def fetched_unhandled(self, messages: Iterable[Message]) -> None:
        """Records fetched (the consumer's position is past them) but not handled because the batch aborted
        part-way: their partitions must be rewound too, to the first unhandled offset at the latest."""
        for msg in messages:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if msg.error() is None and topic is not None and partition is not None and offset is not None:
                self.first.setdefault((topic, partition), offset)

    def handled(self) -> None:
        """After a fetch was handled: every partition of the batch commits up to its position."""
        positions, nxt = self.positions, self.next
        for tp in self.first:
            nxt[tp] = positions[tp]

    def offsets(self, consumer: Consumer, metadata: str | None = None) -> list[TopicPartition]:
        """The offsets to commit with the batch: its next offset per partition, or the consumer's position
        when that is further (it steps over a transactional input's control records, never handed out)."""
        wanted = dict(self.next)
        try:
            for tp in consumer.position([TopicPartition(t, p) for t, p in wanted]):
                key = (tp.topic, tp.partition)
                if tp.offset is not None and tp.offset > wanted.get(key, tp.offset):
                    wanted[key] = tp.offset
        except KafkaException as exc:
            log.debug("position: %s", describe(exc))
        if metadata is None:
            return [TopicPartition(t, p, offset) for (t, p), offset in wanted.items()]
        return [TopicPartition(t, p, offset, metadata) for (t, p), offset in wanted.items()]

    def committed(self) -> None:
        """The batch is durable: its offsets are the group's committed offsets now."""
        self.first.clear()
        self.next.clear()

    # --- the one restart decision ------------------------------------------------------------------
    def rewind(self, consumer: Consumer, to: RewindTo, committed: ReadCommitted | None = None) -> Rewound:
        """Seek every still-assigned partition of the open batch to its restart point and clear the batch.

        `committed` reads the group's committed offsets from the broker (GroupOffsets, retried until it
        answers); only `RewindTo.COMMITTED` needs it."""
        kept = {tp: offset for tp, offset in self.first.items() if tp in self.assigned}
        points = dict(kept)
        batch_committed = False
        if to is RewindTo.COMMITTED and kept:
            assert committed is not None, "rewinding to the committed offsets needs a way to read them"
            found = committed(list(kept))
            for tp, offset in found.items():
                if offset >= 0:
                    points[tp] = offset
            handled = [tp for tp in kept if tp in self.next]
            batch_committed = bool(handled) and all(points[tp] >= self.next[tp] for tp in handled)
        for (topic, partition), offset in points.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Going on would commit past records whose output was aborted: restart from committed offsets.
                raise FatalKafkaError(f"cannot rewind {topic}[{partition}] to {offset}: {describe(exc)}") from exc
            self.positions[(topic, partition)] = offset
        for tp in set(self.first) - set(points):
            self.positions.pop(tp, None)
        self.committed()
        return Rewound(points, batch_committed)
