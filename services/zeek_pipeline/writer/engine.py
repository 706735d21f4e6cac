"""The writer without Kafka: per-partition state, buffers, flushes in commit order, retries, hand-over.

The service feeds it consumed records and asks it to flush; the engine decides what is done and what
the restart offset of each partition is. Keeping Kafka out makes the recovery logic testable by
crashing it at every storage operation (tests/unit/test_writer_recovery.py).

Order per partition is strict: a flush is committed only after every earlier flush of that partition
is published, so the latest commit record is the only one that can have files left to roll forward.
When a flush fails (storage, DLQ) it waits in `pending`, no new flush starts, and `retry_pending()`
resumes the queue in order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from zeek_pipeline.writer.buffers import Buffers, Segment
from zeek_pipeline.writer.commitlog import CommitConflict, CommitLog, PartitionState
from zeek_pipeline.writer.convert import route
from zeek_pipeline.writer.dlq import DeadLetterError
from zeek_pipeline.writer.flush import Flusher, FlushJob, FlushOutcome
from zeek_pipeline.writer.storage import StorageError

log = logging.getLogger("zeek_pipeline.writer.engine")

MAX_DONE_RANGES = 256  # done ranges above a partition's restart offset before its oldest buffer is forced out

Listener = Callable[[FlushJob, FlushOutcome], None]


class WriterEngine:
    def __init__(self, buffers: Buffers, commitlog: CommitLog, flusher: Flusher,
                 on_flushed: Listener | None = None) -> None:
        self.buffers = buffers
        self.commitlog = commitlog
        self.flusher = flusher
        self.on_flushed = on_flushed
        self.states: dict[int, PartitionState] = {}
        self.positions: dict[int, int] = {}  # next offset after the last consumed record, per partition
        self.pending: deque[FlushJob] = deque()
        self.last_error: Exception | None = None
        self.skipped = 0
        self.flush_reasons: dict[str, int] = {}
        self.conflicts: set[int] = set()  # partitions dropped because another writer committed them

    # --- partitions ----------------------------------------------------------------------------------
    def recover(self, partition: int) -> PartitionState:
        """Take over a partition: roll its commit log forward/back and return where to resume (StorageError)."""
        state = self.commitlog.recover(partition)
        self.states[partition] = state
        self.positions.pop(partition, None)
        return state

    def forget(self, partitions: set[int]) -> int:
        """Drop everything held for these partitions (revoked after draining, or lost); returns records dropped."""
        dropped = 0
        for partition in partitions:
            dropped += self.buffers.drop_partition(partition)
            self.states.pop(partition, None)
            self.positions.pop(partition, None)
        self.pending = deque(j for j in self.pending if j.partition not in partitions)
        return dropped

    # --- records -------------------------------------------------------------------------------------
    def add(self, partition: int, offset: int, value: bytes | None, now: float) -> bool:
        """Buffer one consumed record; False when it is not ours or already written (skipped on replay)."""
        state = self.states.get(partition)
        if state is None:
            return False
        self.positions[partition] = offset + 1
        log_type, _reason = route(value)
        if state.is_done(log_type, offset):
            self.skipped += 1
            return False
        self.buffers.add(log_type, partition, offset, value or b"", now)
        return True

    # --- flushing ------------------------------------------------------------------------------------
    def next_offset(self, partition: int, job: FlushJob) -> int:
        """The restart offset of a partition once `job` is committed: its oldest record still unwritten."""
        candidates = [self.positions.get(partition, job.segment.last + 1)]
        buffered = self.buffers.min_offset(partition)
        if buffered is not None:
            candidates.append(buffered)
        candidates.extend(j.segment.first for j in self.pending
                          if j is not job and j.partition == partition and not j.committed)
        return min(candidates)

    def run(self, job: FlushJob) -> bool:
        """Advance one flush; True when published (or abandoned with its partition), False to retry later."""
        partition = job.partition
        state = self.states.get(partition)
        if state is None:
            return True  # the partition left us; its new owner replays what was not committed
        try:
            outcome = self.flusher.run(job, state, lambda: self.next_offset(partition, job))
        except (StorageError, DeadLetterError) as exc:
            self.last_error = exc
            return False
        except CommitConflict as exc:
            log.error("another writer committed partition %d (%s): dropping it here", partition, exc)
            self.conflicts.add(partition)
            self.forget({partition})
            return True
        self.flush_reasons[job.reason] = self.flush_reasons.get(job.reason, 0) + 1
        if self.on_flushed is not None:
            self.on_flushed(job, outcome)
        return True

    def flush(self, segment: Segment, reason: str) -> bool:
        job = FlushJob(segment, reason)
        if self.run(job):
            self._bound_ranges(segment.partition)
            return True
        self.pending.append(job)
        return False

    def _bound_ranges(self, partition: int) -> None:
        """A slow log type holds the restart offset back while fast ones run ahead; bound that distance."""
        state = self.states.get(partition)
        if state is None or self.pending or state.range_count() <= MAX_DONE_RANGES:
            return
        oldest = self.buffers.oldest_of_partition(partition)
        if oldest is not None:
            self.flush(self.buffers.take(oldest.key), "ranges")

    def flush_due(self, now: float) -> bool:
        """Flush what the policy asks for, then what the memory cap needs; False when a flush failed."""
        if self.pending:
            return False
        due = self.buffers.due(now)
        while due:
            for segment, reason in due:
                if segment.key in self.buffers.segments and not self.flush(self.buffers.take_due(segment, reason),
                                                                           reason):
                    return False
            due = self.buffers.due(now)  # what a count/size cut left behind may be due again
        while self.buffers.over_cap(self.pending_memory()):
            largest = self.buffers.largest()
            if largest is None:
                break
            if not self.flush(self.buffers.take(largest.key), "memory"):
                return False
        return True

    def retry_pending(self) -> bool:
        """Retry waiting flushes in order; True once none is left."""
        while self.pending:
            job = self.pending[0]
            if not self.run(job):
                return False
            if self.pending and self.pending[0] is job:
                self.pending.popleft()
            self._bound_ranges(job.partition)
        return True

    def pending_memory(self) -> int:
        return sum(job.memory for job in self.pending)

    def drain(self, partitions: set[int], deadline: float, reason: str,
              sleep: Callable[[float], None] = time.sleep, backoff: float = 0.5) -> set[int]:
        """Flush everything held for these partitions before `deadline`; returns the partitions that failed
        (their new owner replays from the last commit). A partition stops at its first failure: flushing a
        later buffer past a failed one would move the restart offset over records that were not written."""
        failed: set[int] = set()

        def attempt(job: FlushJob) -> bool:
            while not self.run(job):
                if time.monotonic() >= deadline:
                    return False
                sleep(min(backoff, max(deadline - time.monotonic(), 0.0)))
            return True

        for job in [j for j in self.pending if j.partition in partitions]:
            if job.partition in failed:
                continue
            if attempt(job):
                if job in self.pending:
                    self.pending.remove(job)
            else:
                failed.add(job.partition)
        for partition in sorted(partitions - failed):
            for segment in sorted(self.buffers.of_partition(partition), key=lambda s: s.first):
                if segment.key not in self.buffers.segments:
                    break  # dropped meanwhile (commit conflict)
                if not attempt(FlushJob(self.buffers.take(segment.key), reason)):
                    failed.add(partition)
                    break
        return failed
