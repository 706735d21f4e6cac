"""What one batch (= one transaction in exactly-once mode) covers, and when it must end.

A batch ends at `batch_size` records or `batch_timeout_ms` after its first record, whichever comes first,
so a quiet topic still commits promptly and a busy one commits in bounded chunks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from zeek_pipeline.runtime.flows import PREVIEW_BYTES

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


class RejectDetail(NamedTuple):
    """One reject's details for the status record; `head` is the start of the original bytes (a preview)."""

    reason: str
    detail: str
    source: str
    log_type: str
    head: bytes | None


@dataclass(slots=True)
class Batch:
    """The records handled since the last commit: counts and reject details for metrics, applied only once
    the batch is durable. Where each partition of the batch starts and ends is the ledger's
    (normalizer/ledger.py)."""

    count: int = 0
    accepted: int = 0
    started: float = 0.0
    rejects: list[RejectDetail] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)  # accepted records per Zeek log type
    reject_types: Counter[str] = field(default_factory=Counter)  # rejected records per log type ("" unknown)

    def __bool__(self) -> bool:
        return self.count > 0

    def reject(self, reason: str, detail: str, source: str, log_type: str = "", raw: bytes | None = None) -> None:
        self.reasons[reason] += 1
        self.reject_types[log_type] += 1
        if len(self.rejects) < 100:  # metrics keep the latest few; never hold a whole batch of details
            head = raw[: PREVIEW_BYTES + 1] if raw else None  # one byte more says the preview is clipped
            self.rejects.append(RejectDetail(reason, detail, source, log_type, head))

    def clear(self) -> None:
        self.count = 0
        self.accepted = 0
        self.started = 0.0
        self.rejects.clear()
        self.reasons.clear()
        self.types.clear()
        self.reject_types.clear()
