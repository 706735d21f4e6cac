"""One flush of one (log type, partition) buffer, as resumable steps: prepare, dead-letter, stage, commit,
publish, and with output.iceberg the table commit (writer/iceberg_sink.py). A step that fails on storage,
the catalog or the DLQ raises and leaves the job where it was; calling `run` again resumes it (every step
is idempotent), so a full disk or an S3 outage delays a flush but never loses or repeats a record. The
commit record is built once and kept, so a retry after an ambiguous failure (the write may have landed)
recognises its own record instead of conflicting with it.

`prepare` (typing the documents and encoding the Parquet files in memory) is pure CPU work that touches
neither storage nor the commit log, so the engine runs it ahead of the job's turn on a small thread pool:
several buffers are typed and encoded at once (pyarrow releases the GIL) while the steps from staging on
stay strictly in commit order. Once prepared, a job holds only its encoded files and its rejects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from zeek_pipeline.core.schema import OFFSET_COLUMN
from zeek_pipeline.writer.buffers import Segment
from zeek_pipeline.writer.commitlog import CommitConflict, CommitLog, CommitRecord, PartitionState, StagedFile
from zeek_pipeline.writer.convert import INVALID_LOG_TYPE, UNROUTABLE, Converter, Reject, route
from zeek_pipeline.writer.dlq import DeadLetterError, DeadLetters, Delivery
from zeek_pipeline.writer.layout import file_name, kafka_file_id, relative_path, split_by_hour
from zeek_pipeline.writer.parquet_file import ParquetOptions, file_metadata, write_table
from zeek_pipeline.writer.storage import Storage, StorageError, as_storage_error

if TYPE_CHECKING:  # pyiceberg is imported only by a writer with output.iceberg on
    from zeek_pipeline.writer.iceberg_sink import IcebergSink

log = logging.getLogger("zeek_pipeline.writer.flush")


class Cancelled(Exception):
    """The job's partition was revoked or lost before the job was committed."""


@dataclass(slots=True)
class PlannedFile:
    final: str
    rows: int
    first: int
    last: int
    data: pa.Buffer  # the whole Parquet file, encoded in memory by `prepare`


@dataclass(slots=True, eq=False)
class FlushJob:
    """One flush of one buffer. `next_offset` is the partition's restart offset once this job is committed,
    taken when the job is created: every record of the partition below it is in this job, in a job queued
    before it (committed first: jobs run in order), or already written."""

    segment: Segment
    reason: str
    next_offset: int
    state: PartitionState
    rejects: tuple[Reject, ...] = ()
    rejected: dict[int, bytes] = field(default_factory=dict)  # the documents of `rejects`, by index
    files: list[PlannedFile] | None = None  # None until prepared
    ahead: Future[None] | None = None  # `prepare` running on the engine's pool
    deliveries: list[Delivery | None] = field(default_factory=list)
    dlq_done: bool = False
    record: CommitRecord | None = None
    committed: bool = False
    published: bool = False
    iceberg_done: bool = False  # the table commit made (or no Iceberg output)
    iceberg_deliveries: list[Delivery | None] = field(default_factory=list)  # rows the table cannot hold
    decoded: int = 0  # bytes of its rows decoded for the table commit, while that runs
    attempts: int = 0
    staged: list[StagedFile] = field(default_factory=list)
    cancelled: bool = False  # the partition left this writer: do not commit
    conflict: bool = False  # another writer committed the partition meanwhile
    outcome: FlushOutcome | None = None

    @property
    def partition(self) -> int:
        return self.segment.partition

    @property
    def memory(self) -> int:
        """Bytes held: the buffered documents until prepared, then the encoded files and the rejects (and, during
        the table commit, its rows decoded again: about 15 times the encoded size)."""
        if self.files is None:
            return self.segment.memory
        return sum(int(f.data.size) for f in self.files) + sum(map(len, self.rejected.values())) + self.decoded

    @property
    def done(self) -> bool:
        return self.published and self.iceberg_done

    @property
    def dead_letters_sent(self) -> bool:
        """Some of its dead letters may be in the DLQ already: cancelling it now would send them again."""
        return any(delivery is not None for delivery in self.deliveries)


@dataclass(frozen=True, slots=True)
class FlushOutcome:
    record: CommitRecord
    rows: int
    files: int
    bytes: int
    dead_lettered: int


class Flusher:
    def __init__(
        self,
        *,
        storage: Storage,
        commitlog: CommitLog,
        converter: Converter,
        dead_letters: DeadLetters,
        options: ParquetOptions,
        file_prefix: str,
        topic: str,
        on_file: Callable[[str, str, int, int], None] | None = None,
        iceberg: IcebergSink | None = None,
    ) -> None:
        self.storage = storage
        self.commitlog = commitlog
        self.converter = converter
        self.dead_letters = dead_letters
        self.options = options
        self.file_prefix = file_prefix
        self.topic = topic
        self.on_file = on_file
        self.iceberg = iceberg

    # --- steps -------------------------------------------------------------------------------------
    def prepare(self, job: FlushJob) -> None:
        """Type the buffer and encode its Parquet files in memory, one per event hour (no storage, no commit
        log: safe in any thread, ahead of the job's turn). Afterwards the job keeps the documents of its
        rejects only. pa.ArrowException on an encoding failure (the caller retries it as a storage error)."""
        if job.files is not None:
            return
        seg = job.segment
        if seg.log_type == UNROUTABLE:
            rejects = tuple(Reject(index, route(value)[1] or INVALID_LOG_TYPE, "the message has no usable log_type")
                            for index, value in enumerate(seg.values))
            job.rejected = {reject.index: seg.values[reject.index] for reject in rejects}
            files: list[PlannedFile] = []
        else:
            typed = seg.typed(self.converter)  # mostly typed ahead on the engine's pool
            rejects = typed.rejects
            job.rejected = typed.rejected
            files = [self._encode(seg, hour, table) for hour, table in split_by_hour(typed.table)]
        job.rejects = rejects
        job.files = files
        seg.values = []  # typed and encoded: the documents are no longer needed
        seg.chunks = []

    def _encode(self, seg: Segment, hour: int, table: pa.Table) -> PlannedFile:
        bounds = pc.min_max(table.column(OFFSET_COLUMN))
        first, last = int(bounds["min"].as_py()), int(bounds["max"].as_py())
        name = file_name(self.file_prefix, seg.log_type, kafka_file_id(self.topic, seg.partition, first, last))
        metadata = file_metadata(seg.log_type, self.converter.schema_version, {
            "zeek_pipeline.kafka_topic": self.topic,
            "zeek_pipeline.kafka_partition": str(seg.partition),
            "zeek_pipeline.first_offset": str(first),
            "zeek_pipeline.last_offset": str(last),
        })
        sink = pa.BufferOutputStream()
        write_table(sink, table, self.options, metadata)
        return PlannedFile(relative_path(seg.log_type, hour, name), table.num_rows, first, last, sink.getvalue())

    def _dead_letter(self, job: FlushJob) -> None:
        """Send the rejects (again only those whose earlier delivery failed) and wait for acknowledgements."""
        seg = job.segment
        if not job.deliveries:
            job.deliveries = [None] * len(job.rejects)
        for i, reject in enumerate(job.rejects):
            delivery = job.deliveries[i]
            if delivery is None or delivery.ok is False:
                job.deliveries[i] = self.dead_letters.send(
                    job.rejected[reject.index], reason=reject.reason, detail=reject.detail, source_topic=self.topic,
                    partition=seg.partition, offset=seg.offsets[reject.index],
                    log_type=None if seg.log_type == UNROUTABLE else seg.log_type)
        self.dead_letters.flush()
        unacknowledged = [d for d in job.deliveries if d is None or d.ok is not True]
        if unacknowledged:
            errors = {d.error for d in unacknowledged if d is not None and d.error}
            raise DeadLetterError(f"{len(unacknowledged)} dead letter(s) not acknowledged by "
                                  f"{self.dead_letters.topic}: {sorted(errors)[:3] or 'timed out'}")
        job.dlq_done = True

    def _stage(self, job: FlushJob, seq: int) -> None:
        assert job.files is not None
        staged: list[StagedFile] = []
        try:
            for index, planned in enumerate(job.files):
                rel = self.commitlog.staged_path(job.partition, seq, index)
                with self.storage.open_output(rel) as sink:
                    sink.write(planned.data)
                self.storage.sync(rel)
                self.storage.prepare_dir(planned.final.rsplit("/", 1)[0])
                staged.append(StagedFile(rel, planned.final, job.segment.log_type, planned.rows,
                                         self.storage.size(rel)))
        except (OSError, pa.ArrowException, StorageError) as exc:
            self._discard(staged)
            raise as_storage_error("staging", f"{job.segment.log_type} p{job.partition}", exc) from exc
        job.staged = staged

    def _discard(self, staged: list[StagedFile]) -> None:
        """Free the space of a failed staging at once (recovery would delete these files anyway)."""
        for item in staged:
            try:
                self.storage.delete(item.staged)
            except StorageError:
                pass

    def _commit_iceberg(self, job: FlushJob) -> None:
        """The last step: the job's rows into its log type's table, the map raised to its restart offset."""
        if self.iceberg is not None:
            assert job.files is not None
            self.iceberg.failpoint.hit("published")
            rows = self.iceberg.read_files(planned.data for planned in job.files)
            job.decoded = 0 if rows is None else rows.nbytes
            covers = self.iceberg.covers(job.next_offset, job.segment.last)
            try:
                self.iceberg.append(job.segment.log_type, job.partition, rows, covers, job.iceberg_deliveries)
            finally:
                job.decoded = 0
            self.iceberg.failpoint.hit("committed")
        job.iceberg_done = True

    # --- the whole flush -----------------------------------------------------------------------------
    def run(self, job: FlushJob) -> FlushOutcome:
        """Advance the job to published (and committed to its Iceberg table); raises StorageError/DeadLetterError
        to retry later, CommitConflict when another writer owns the partition now."""
        job.attempts += 1
        state = job.state
        if job.files is None:
            try:
                self.prepare(job)
            except pa.ArrowException as exc:
                raise as_storage_error("encoding", f"{job.segment.log_type} p{job.partition}", exc) from exc
        if job.rejects and not job.dlq_done:
            self._dead_letter(job)
        seg = job.segment
        if not job.committed:
            seq = state.seq + 1 if job.record is None else job.record.seq
            self._stage(job, seq)
            if job.record is None:
                job.record = self.commitlog.new_record(
                    state, log_type=seg.log_type, first=seg.first, last=seg.last, next_offset=job.next_offset,
                    files=job.staged, dead_lettered=len(job.rejects))
            if job.cancelled:
                self._discard(job.staged)
                raise Cancelled(f"{seg.log_type} p{job.partition}: the partition left this writer")
            try:
                self.commitlog.commit(job.record)
            except CommitConflict:
                # Not committed, or committed and taken over by a successor that published the files itself:
                # either way nothing here is ours to publish any more.
                self._discard(job.staged)
                raise
            state.apply(job.record)
            job.committed = True
        assert job.record is not None
        if not job.published:
            self.commitlog.publish(job.record)
            job.published = True
            for staged in job.record.files:
                if self.on_file is not None:
                    self.on_file(staged.final, staged.log_type, staged.rows, staged.bytes)
            if job.record.seq % 16 == 0:
                self.commitlog.prune(job.partition)
        if not job.iceberg_done:
            self._commit_iceberg(job)
        record = job.record
        job.outcome = FlushOutcome(record, sum(f.rows for f in record.files), len(record.files),
                                   sum(f.bytes for f in record.files), len(job.rejects))
        return job.outcome

