"""The writer without Kafka: per-partition state, buffers, flushes in commit order, hand-over.

The service feeds it consumed records; the engine decides what is done and what each partition's restart
offset is. Flushes run in a queue, in order: in the service on a worker thread (converting and writing
Parquet release the GIL, so consumption goes on meanwhile), in tests inline (`threaded=False`), which lets
tests/unit/test_writer_recovery.py crash it at every storage operation. In threaded mode each queued job
is also handed to a pool of `prepare_threads` that types and encodes it ahead of its turn, so several
buffers are converted at once while staging and commits stay in order.

Order per partition is strict: a job commits only after every earlier job of the queue, and a job that
fails (storage, DLQ) stays at the head and is retried, holding back the ones behind it. So the latest
commit record of a partition is the only one that can have files left to roll forward, and a job's restart
offset, taken when it is queued, never skips a record that is not written.

Threads: the main thread owns the buffers, positions and the queue's tail (submit, cancel); the worker owns
the queue's head and the commit log; finished jobs come back through `done` and are handled by the main
thread in `collect()` (metrics, Kafka offsets, conflicts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from typing import Any, Protocol

import pyarrow as pa

from zeek_pipeline.writer.buffers import MB, Buffers, Segment
from zeek_pipeline.writer.chunks import InlineExecutor, TypedChunk
from zeek_pipeline.writer.commitlog import CommitConflict, CommitLog, PartitionState
from zeek_pipeline.writer.convert import UNROUTABLE, route_fast
from zeek_pipeline.writer.dlq import DeadLetterError
from zeek_pipeline.writer.flush import Cancelled, Flusher, FlushJob
from zeek_pipeline.writer.memory import Releaser
from zeek_pipeline.writer.storage import StorageError

log = logging.getLogger("zeek_pipeline.writer.engine")

MAX_DONE_RANGES = 256  # done ranges above a partition's restart offset before its oldest buffer is forced out
TYPE_AHEAD_BYTES = 1 << 20  # untyped documents of a buffer handed to the pool as one chunk (~1000 records)
TYPE_SOON_BYTES = 64 << 10  # ... and as little as this once too many documents wait untyped
WAITING_SHARE = 4  # documents waiting untyped: at most 1/WAITING_SHARE of the cap (writer/memory.py)
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0

Listener = Callable[[FlushJob], None]


class MessageLike(Protocol):
    def error(self) -> object: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...


class WriterEngine:
    def __init__(self, buffers: Buffers, commitlog: CommitLog, flusher: Flusher, *, threaded: bool = False,
                 on_flushed: Listener | None = None, prepare_threads: int = 2,
                 type_ahead_bytes: int = TYPE_AHEAD_BYTES) -> None:
        self.buffers = buffers
        self.commitlog = commitlog
        self.flusher = flusher
        self.threaded = threaded
        self.on_flushed = on_flushed
        self.states: dict[int, PartitionState] = {}
        self.positions: dict[int, int] = {}  # next offset after the last consumed record, per partition
        self.queue: deque[FlushJob] = deque()  # submitted, not yet finished, in commit order
        self.done: deque[FlushJob] = deque()  # finished (published, conflicted or cancelled), for collect()
        self.last_error: Exception | None = None  # set while the queue's head keeps failing
        self.skipped = 0
        self.flush_reasons: dict[str, int] = {}  # completed flushes by what triggered them
        self.conflicts: set[int] = set()  # partitions another writer committed: the service re-recovers them
        self._wake = threading.Condition()
        self._running: FlushJob | None = None
        self._stop = False
        self._worker: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._prepare_threads = prepare_threads
        self.type_ahead_bytes = type_ahead_bytes  # 0: type every buffer at flush time only
        self._backoff = BACKOFF_MIN
        self.release = Releaser()

    # --- the worker ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.threaded and self._worker is None:
            self._pool = ThreadPoolExecutor(self._prepare_threads, thread_name_prefix="prepare")
            self._worker = threading.Thread(target=self._work, name="flusher", daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 60.0) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # a chunk never typed is typed at its flush
            self._pool = None

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self.queue and not self._stop:
                    self._wake.wait(0.5)
                if self._stop:
                    return
            if self.process():
                self._backoff = BACKOFF_MIN
                continue
            with self._wake:  # the head failed: wait, then retry it (a submit does not cut the wait short)
                self._wake.wait(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def process(self) -> bool:
        """Run queued jobs in order until the queue is empty (True) or the head fails (False, kept queued)."""
        while self.queue:
            job = self.queue[0]
            if not job.cancelled:
                if job.ahead is not None:
                    wait_for_futures([job.ahead])  # its failure, if any, is raised again by run()
                self._running = job
                try:
                    self.flusher.run(job)
                except (StorageError, DeadLetterError) as exc:
                    self.last_error = exc
                    return False
                except Cancelled:
                    pass
                except CommitConflict as exc:
                    log.error("another writer committed partition %d (%s): giving it up", job.partition, exc)
                    job.conflict = True
                    for other in list(self.queue):
                        if other.partition == job.partition:
                            other.cancelled = True
                finally:
                    self._running = None
            self.queue.popleft()
            self.done.append(job)
            self.last_error = None
        return True

    @property
    def failing(self) -> bool:
        """The queue's head keeps failing: the service pauses consumption and reports degraded."""
        return self.last_error is not None and bool(self.queue)

    def retry(self) -> bool:
        """Inline mode: retry the queue now (the worker retries by itself); True when it is empty."""
        return not self.queue if self.threaded else self.process()

    # --- partitions ----------------------------------------------------------------------------------
    def recover(self, partition: int, wait: float = 60.0) -> PartitionState:
        """Take over a partition: roll its commit log forward/back and return where to resume (StorageError).
        Jobs of an earlier ownership of the partition (cancelled) leave the queue first, so none of them
        can commit behind the recovered state's back. Recovery starts the partition over from its log: the
        caller consumes again from the returned restart offset, so records still buffered from before are
        dropped (kept, they would be written a second time), and a conflict still pending for the partition
        is settled (this recovery has read what the other writer committed)."""
        deadline = time.monotonic() + wait
        if not self.threaded and any(job.partition == partition for job in self.queue):
            self.process()  # inline mode: a job kept from a lost ownership runs (or fails) first
        while self.threaded and time.monotonic() < deadline and (
                any(job.partition == partition for job in list(self.queue))
                or (self._running is not None and self._running.partition == partition)):
            time.sleep(0.01)
        iceberg = self.flusher.iceberg
        state = self.commitlog.recover(partition, None if iceberg is None else
                                       lambda record: iceberg.roll_forward(record, self.flusher.storage))
        self.buffers.drop_partition(partition)
        self.states[partition] = state
        self.positions.pop(partition, None)
        self.conflicts.discard(partition)
        return state

    def forget(self, partitions: set[int], *, finish_dead_lettered: bool = False) -> int:
        """Drop everything held for these partitions (revoked after draining, lost, or taken by another
        writer); returns records dropped. Their queued jobs are cancelled: whatever they did not commit, the
        new owner replays. With `finish_dead_lettered` (lost partitions), a job whose dead letters are already
        out, and every job before it, still commits: the commit log fences it if another writer has taken the
        partition over, and otherwise the replay does not send those dead letters again."""
        dropped = 0
        for partition in partitions:
            dropped += self.buffers.drop_partition(partition)
            self.states.pop(partition, None)
            self.positions.pop(partition, None)
        jobs = [job for job in list(self.queue) if job.partition in partitions and not job.committed]
        keep: set[int] = set()
        if finish_dead_lettered:
            for partition in partitions:
                own = [job for job in jobs if job.partition == partition]
                last = max((i for i, job in enumerate(own) if job.dead_letters_sent), default=-1)
                keep |= {id(job) for job in own[:last + 1]}
        for job in jobs:
            if id(job) not in keep:
                job.cancelled = True
                dropped += job.segment.count
        return dropped

    # --- records -------------------------------------------------------------------------------------
    def ingest(self, messages: Iterable[MessageLike], now: float,
               on_error: Callable[[Any], None] | None = None) -> int:
        """Buffer consumed messages (the hot loop); returns how many were ours. Records already in committed
        files (a replay after a crash) are skipped by the done ranges of the commit log."""
        states = self.states
        positions = self.positions
        segments = self.buffers.segments
        add = self.buffers.add
        consumed = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                if on_error is not None:
                    on_error(err)
                continue
            partition = msg.partition()
            offset = msg.offset()
            if partition is None or offset is None:
                continue
            state = states.get(partition)
            if state is None:
                continue  # not (or no longer) ours
            consumed += 1
            positions[partition] = offset + 1
            value = msg.value() or b""
            log_type = route_fast(value)
            if offset <= state.max_done and state.is_done(log_type, offset):
                self.skipped += 1
                continue
            segment = segments.get((log_type, partition))
            if segment is None:
                add(log_type, partition, offset, value, now)
            else:
                size = len(value)
                segment.values.append(value)
                segment.offsets.append(offset)
                segment.sizes.append(size)
                segment.nbytes += size
        return consumed

    def add(self, partition: int, offset: int, value: bytes | None, now: float) -> bool:
        """One record at a time (tests, the offline path); False when not ours or already written."""
        state = self.states.get(partition)
        if state is None:
            return False
        self.positions[partition] = offset + 1
        log_type = route_fast(value or b"")
        if state.is_done(log_type, offset):
            self.skipped += 1
            return False
        self.buffers.add(log_type, partition, offset, value or b"", now)
        return True

    # --- flushing ------------------------------------------------------------------------------------
    def submit(self, segment: Segment, reason: str) -> FlushJob:
        """Queue the flush of a segment taken from the buffers (inline mode: run it now)."""
        partition = segment.partition
        candidates = [self.positions.get(partition, segment.last + 1)]
        buffered = self.buffers.min_offset(partition)
        if buffered is not None:
            candidates.append(buffered)
        job = FlushJob(segment, reason, min(candidates), self.states[partition])
        if self._pool is not None:
            job.ahead = self._pool.submit(self._prepare_ahead, job)
        with self._wake:
            self.queue.append(job)
            self._wake.notify_all()
        if not self.threaded:
            self.process()
        return job

    def _prepare_ahead(self, job: FlushJob) -> None:
        if not job.cancelled:
            self.flusher.prepare(job)
            self.release()  # the typed chunks and working copies of the job just freed, in this thread's heap

    def queued_memory(self) -> int:
        return sum(job.memory for job in list(self.queue))

    def memory(self) -> int:
        return self.buffers.memory + self.queued_memory()

    def waiting_memory(self) -> int:
        """Message bytes of the documents not typed yet, in the buffers and in jobs not prepared."""
        return self.buffers.waiting + sum(job.segment.waiting_nbytes for job in list(self.queue) if job.files is None)

    def waiting_limit(self) -> int:
        return self.buffers.policy.max_memory // WAITING_SHARE

    def over_cap(self) -> bool:
        """Consumption waits: the cap is reached, or too many documents wait to be typed (a document costs
        about twice its size in the Python heap until typed, and the heap keeps that size after)."""
        if self.memory() > self.buffers.policy.max_memory:
            return True
        return bool(self.type_ahead_bytes) and self.waiting_memory() > self.waiting_limit()

    def memory_report(self) -> dict[str, float]:
        """What the cap counts, and what Arrow's allocator holds, in MB (the status page)."""
        pool = pa.default_memory_pool()
        return {"cap": round(self.buffers.policy.max_memory / MB, 1), "buffers": round(self.buffers.memory / MB, 1),
                "flushes": round(self.queued_memory() / MB, 1), "arrow": round(pool.bytes_allocated() / MB, 1),
                "arrow_peak": round(pool.max_memory() / MB, 1)}

    def flush_due(self, now: float) -> None:
        """Queue what the policy asks for, then the largest buffers while over the memory cap."""
        if self.failing:
            return  # nothing new while the head fails; consumption is paused meanwhile
        due = self.buffers.due(now)
        while due:
            for segment, reason in due:
                if segment.key in self.buffers.segments:
                    self.submit(self.buffers.take_due(segment, reason), reason)
            due = self.buffers.due(now)  # what a count/size cut left behind may be due again
        # Over the cap: hand the largest buffers to the flusher, but only while it holds less than a quarter
        # of the cap in flight (moving buffers to the queue frees nothing by itself); the main loop then
        # waits for room (backpressure) instead of consuming more.
        cap = self.buffers.policy.max_memory
        queued = self.queued_memory()
        while self.buffers.segments and self.buffers.memory + queued > cap and queued < cap // 4:
            largest = self.buffers.largest()
            if largest is None:
                break
            queued += self.submit(self.buffers.take(largest.key), "memory").memory
        if self.type_ahead_bytes:
            self.buffers.type_ahead(self._type_ahead_threshold(), self._type_chunk, skip=UNROUTABLE)

    def _type_ahead_threshold(self) -> int:
        """1 MB chunks normally; smaller when many documents wait untyped, and every buffer's documents when
        the buffers alone hold half the limit (many small buffers under a small cap would otherwise keep
        consumption waiting for their time flush)."""
        half = self.waiting_limit() // 2
        if self.buffers.untyped > half:
            return 1
        if self.buffers.waiting > half:
            return min(self.type_ahead_bytes, TYPE_SOON_BYTES)
        return self.type_ahead_bytes

    def _type_chunk(self, segment: Segment, values: list[bytes], offsets: list[int], nbytes: int) -> TypedChunk:
        typer = self._pool or InlineExecutor()  # inline mode (and after stop) types at once
        return TypedChunk.submit(typer, self.flusher.converter, segment.log_type, segment.partition, values,
                                 offsets, nbytes)

    def wait_for_room(self, timeout: float) -> None:
        """Backpressure: the worker is behind and the cap is reached; wait for it a little."""
        deadline = time.monotonic() + timeout
        while self.over_cap() and time.monotonic() < deadline and not self.failing:
            time.sleep(0.01)

    def collect(self) -> set[int]:
        """Handle finished jobs on the main thread; returns the partitions whose restart offset advanced."""
        advanced: set[int] = set()
        conflicts: set[int] = set()
        while self.done:
            job = self.done.popleft()
            if job.conflict:
                if job.state is self.states.get(job.partition):
                    conflicts.add(job.partition)
                else:  # a job of an earlier ownership, lost or recovered since: nothing left to settle
                    log.info("conflict of an earlier ownership of partition %d ignored", job.partition)
            elif job.done and not job.cancelled:
                self.release()
                advanced.add(job.partition)
                self.flush_reasons[job.reason] = self.flush_reasons.get(job.reason, 0) + 1
                if self.on_flushed is not None:
                    self.on_flushed(job)
        if conflicts:
            self.forget(conflicts)
            self.conflicts |= conflicts
        for partition in advanced - conflicts:
            self._bound_ranges(partition)
        return advanced - conflicts

    def _bound_ranges(self, partition: int) -> None:
        """A slow log type holds the restart offset back while fast ones run ahead; bound that distance."""
        state = self.states.get(partition)
        if state is None or self.failing or state.range_count() <= MAX_DONE_RANGES:
            return
        if any(job.partition == partition for job in list(self.queue)):
            return
        oldest = self.buffers.oldest_of_partition(partition)
        if oldest is not None:
            self.submit(self.buffers.take(oldest.key), "ranges")

    def drain(self, partitions: set[int], deadline: float, reason: str,
              sleep: Callable[[float], None] = time.sleep) -> set[int]:
        """Flush everything held for these partitions before `deadline`; returns the partitions that failed
        (their jobs are cancelled and their new owner replays from the last commit)."""
        for partition in sorted(partitions):
            for segment in sorted(self.buffers.of_partition(partition), key=lambda s: s.first):
                self.submit(self.buffers.take(segment.key), reason)

        def waiting() -> list[FlushJob]:
            return [j for j in list(self.queue) if j.partition in partitions and not j.cancelled]

        backoff = BACKOFF_MIN
        while waiting() and time.monotonic() < deadline:
            if self.threaded:
                sleep(0.01)
            elif not self.process():
                sleep(min(backoff, max(deadline - time.monotonic(), 0.0)))
                backoff = min(backoff * 2, BACKOFF_MAX)
        failed = {job.partition for job in waiting()}
        for job in waiting():
            job.cancelled = True
        running = self._running
        while running is not None and running.partition in failed and self._running is running:
            sleep(0.05)  # let a step in progress end before the partition is handed over
        if failed and not self.threaded:
            self.process()  # let cancelled jobs leave the queue
        return failed

