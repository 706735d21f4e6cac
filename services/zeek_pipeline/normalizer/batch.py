"""What one batch (= one transaction in exactly-once mode) covers, and when it must end.

A batch ends at `batch_size` records or `batch_timeout_ms` after its first record, whichever comes first,
so a quiet topic still commits promptly and a busy one commits in bounded chunks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]
IDLE_POLL_SECONDS = 0.5  # how long an idle consume() may block, so signals and ticks are noticed


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Count and time bounds of a batch, and the consume() arguments that respect them."""

    max_records: int
    max_seconds: float
    max_poll_records: int = 1000

    def due(self, count: int, started: float, now: float) -> bool:
        return count >= self.max_records or (count > 0 and now - started >= self.max_seconds)

    def poll_size(self, count: int) -> int:
        return max(1, min(self.max_poll_records, self.max_records - count))

    def poll_timeout(self, count: int, started: float, now: float) -> float:
        if count == 0:
            return IDLE_POLL_SECONDS
        return max(0.0, min(IDLE_POLL_SECONDS, started + self.max_seconds - now))


@dataclass(slots=True)
class Batch:
    """The records handled since the last commit: per partition the first offset (where to rewind on abort)
    and the next offset (what to commit), plus counts for metrics applied only once the batch is durable."""

    first: dict[TopicPartitionKey, int] = field(default_factory=dict)
    next: dict[TopicPartitionKey, int] = field(default_factory=dict)
    count: int = 0
    accepted: int = 0
    started: float = 0.0
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, detail, source)
    reasons: Counter[str] = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, tp: TopicPartitionKey, offset: int, now: float) -> None:
        if self.count == 0:
            self.started = now
        if tp not in self.first:
            self.first[tp] = offset
        self.next[tp] = offset + 1
        self.count += 1

    def reject(self, reason: str, detail: str, source: str) -> None:
        self.reasons[reason] += 1
        if len(self.rejects) < 100:  # metrics keep the latest few; never hold a whole batch of details
            self.rejects.append((reason, detail, source))

    def forget(self, partitions: set[TopicPartitionKey]) -> None:
        """Partitions that left this instance after the batch was committed or aborted."""
        for tp in partitions:
            self.first.pop(tp, None)
            self.next.pop(tp, None)

    def rewind_points(self, assigned: set[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Where each still-assigned partition must restart after an abort: its first offset in this batch,
        which is the last committed offset (batches are consecutive and nothing in between was committed)."""
        return {tp: offset for tp, offset in self.first.items() if tp in assigned}

    def clear(self) -> None:
        self.first.clear()
        self.next.clear()
        self.count = 0
        self.accepted = 0
        self.started = 0.0
        self.rejects.clear()
        self.reasons.clear()
