"""The writer's Iceberg step (output.iceberg beside the Hive output): a flush job's rows appended to its log
type's table after the Hive publish, and the same step rolled forward by recovery.

Why each record lands once (docs/iceberg.md, "The writer"): a job takes its (log type, partition) buffer from
the front and its `next_offset` is the partition's restart offset, so every record of that log type from that
partition below max(next_offset, the job's last offset + 1) is in this job, in an earlier job (whose Iceberg
step finished before this job staged anything: jobs of a partition run strictly in order) or in the
dead-letter topic. The commit raises the table's offsets map to that (iceberg.commit), and a retry, a
recovery or a zombie re-filters its rows against the map.
So only the latest data record of a partition can lack its Iceberg commit, and recovery rolls it forward
before the takeover record fences the previous owner (`roll_forward`).

Rows come from the job's encoded Parquet files (read back from memory): the job holds those anyway, so the
memory it declares (FlushJob.memory) stays what it holds; the decoded table lives only during the step.
Any failure of the catalog or the table is a StorageError: the job stays at the head of the queue and is
retried like a storage failure, and Kafka offsets are committed only after the job is done.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from zeek_pipeline.core.arrow import RowReject
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN, arrow_schema
from zeek_pipeline.iceberg.catalog import ensure_table, open_catalog
from zeek_pipeline.iceberg.commit import CommitResult, commit_exactly_once, committed_offsets
from zeek_pipeline.iceberg.schema import conform
from zeek_pipeline.settings import IcebergOutput
from zeek_pipeline.writer.commitlog import CommitRecord
from zeek_pipeline.writer.convert import UNROUTABLE, Converter
from zeek_pipeline.writer.dlq import DeadLetterError, DeadLetters, Delivery
from zeek_pipeline.writer.storage import Storage, StorageError

log = logging.getLogger("zeek_pipeline.writer.iceberg")

FAILPOINT_ENVIRONMENT = "ZEEK_WRITER_FAILPOINT"
# published: after the Hive publish, before the Iceberg commit; committed: after the Iceberg commit, before the
# job is done; recovering: in recovery, before the roll-forward commit; rolled_forward: after it, before the
# takeover record.
FAILPOINT_STEPS = frozenset({"published", "committed", "recovering", "rolled_forward"})


class Failpoint:
    """SIGKILL to itself at a named step (`<step>` or `<step>@<n>`: the n-th time), for the kill -9 tests:
    the moment between a publish and a table commit lasts milliseconds and a test hits it only so."""

    def __init__(self, spec: str = "") -> None:
        self.step: str | None = None
        self.nth = 1
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        if spec:
            step, _, nth = spec.partition("@")
            if step not in FAILPOINT_STEPS or (nth and not nth.isdigit()):
                raise ValueError(f"{FAILPOINT_ENVIRONMENT}: cannot read {spec!r} (want <step>[@n], steps "
                                 f"{sorted(FAILPOINT_STEPS)})")
            self.step, self.nth = step, int(nth or 1)

    @classmethod
    def from_environment(cls) -> Failpoint:
        return cls(os.environ.get(FAILPOINT_ENVIRONMENT, "").strip())

    def hit(self, step: str) -> None:
        if self.step != step:
            return
        with self._lock:
            self._hits[step] += 1
            if self._hits[step] == self.nth:
                log.warning("failpoint %s@%d: SIGKILL", step, self.nth)
                os.kill(os.getpid(), signal.SIGKILL)


def read_files(datas: Iterable[pa.Buffer | bytes]) -> pa.Table | None:
    """One table of the rows of encoded Parquet files (None when there are none)."""
    tables = [pq.read_table(pa.BufferReader(data)) for data in datas]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


class IcebergSink:
    """Appends a log type's rows to its table, exactly once, with the DLQ for rows the table cannot hold."""

    def __init__(self, settings: IcebergOutput, *, topic: str, converter: Converter, dead_letters: DeadLetters,
                 failpoint: Failpoint | None = None) -> None:
        self.settings = settings
        self.topic = topic
        self.converter = converter
        self.dead_letters = dead_letters
        self.failpoint = failpoint or Failpoint()
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._tables: dict[tuple[int, str], Table] = {}  # (thread id, log type): one table object per thread
        self.commits = 0
        self.rows = 0

    read_files = staticmethod(read_files)

    @staticmethod
    def covers(next_offset: int, last: int) -> int:
        """The offset a job raises its table's map to. The partition's restart offset may lie below the job's
        own records (another log type's buffer holds it back); every record of the job's log type up to the
        job's last offset is in this job or an earlier one too (a job takes its buffer from the front)."""
        return max(next_offset, last + 1)

    def _table(self, log_type: str) -> Table:
        """The log type's table for this thread (opened lazily: a catalog down at start delays, never crashes)."""
        key = (threading.get_ident(), log_type)
        table = self._tables.get(key)
        if table is None:
            with self._catalog_lock:
                if self._catalog is None:
                    self._catalog = open_catalog(self.settings)
                catalog = self._catalog
            layout = arrow_schema(log_type, self.converter.schema, self.converter.rules)
            table = ensure_table(catalog, self.settings.namespace, log_type, layout)
            self._tables[key] = table
        else:
            table.refresh()
        return table

    def append(self, log_type: str, partition: int, rows: pa.Table | None, next_offset: int,
               sent: list[Delivery | None]) -> CommitResult | None:
        """Commit `rows` (this job's, all of `log_type` from `partition`) raising the map to `next_offset`.
        Rows the table cannot hold go to the DLQ first (`sent` keeps their deliveries across retries).
        StorageError/DeadLetterError to retry later."""
        if log_type == UNROUTABLE:
            return None
        try:
            table = self._table(log_type)
            typed = rows if rows is not None else arrow_schema(log_type, self.converter.schema,
                                                                  self.converter.rules).empty_table()
            conformed = conform(typed, table.schema())
            if conformed.rejects:
                self._dead_letter(log_type, typed, conformed.rejects, sent)
            result = commit_exactly_once(table, self.topic, conformed.table, {partition: next_offset})
        except DeadLetterError:
            raise
        except Exception as exc:  # the catalog, its database, the warehouse: all retried as storage trouble
            raise StorageError(f"iceberg {self.settings.namespace}.{log_type} p{partition}: "
                               f"{type(exc).__name__}: {exc}") from exc
        self.commits += 1
        self.rows += result.appended
        return result

    def _dead_letter(self, log_type: str, rows: pa.Table, rejects: Sequence[RowReject],
                     sent: list[Delivery | None]) -> None:
        if not sent:
            sent.extend([None] * len(rejects))
        partitions = rows.column(PARTITION_COLUMN)
        offsets = rows.column(OFFSET_COLUMN)
        for i, reject in enumerate(rejects):
            delivery = sent[i]
            if delivery is not None and delivery.ok is not False:
                continue
            index = reject.index
            document = orjson.dumps(rows.slice(index, 1).to_pylist()[0], default=str)
            sent[i] = self.dead_letters.send(
                document, reason=reject.reason, detail=reject.detail,
                source_topic=self.topic, partition=int(partitions[index].as_py()),
                offset=int(offsets[index].as_py()), log_type=log_type)
        self.dead_letters.flush()
        if any(d is None or d.ok is not True for d in sent):
            raise DeadLetterError(f"dead letters of {log_type} rows Iceberg cannot hold not acknowledged")

    def roll_forward(self, record: CommitRecord, storage: Storage) -> None:
        """Recovery, before the takeover record: the latest data record's Iceberg step, if it did not land.
        Its final files (published just before) are read back; the offsets map filters what is there."""
        if record.flushed is None or record.next_offset is None or record.flushed[0] == UNROUTABLE:
            return  # a takeover record: the recovery that wrote it rolled its data record forward first
        log_type, partition = record.flushed[0], record.partition
        target = self.covers(record.next_offset, record.flushed[2])
        try:
            table = self._table(log_type)
            covered = committed_offsets(table, self.topic).get(partition, 0)
        except Exception as exc:
            raise StorageError(f"iceberg {log_type} p{partition}: {type(exc).__name__}: {exc}") from exc
        if covered >= target:
            return
        datas = []
        for staged in record.files:
            data = storage.read_bytes(staged.final)
            if data is None:
                # compaction/protect.py keeps a latest record's files out of every merge; gone means a
                # retention job or a person removed them: their rows cannot reach the table any more.
                log.error("committed file is gone before its Iceberg commit; its rows are not in the table",
                          extra={"context": {"file": staged.final}})
                continue
            datas.append(pa.py_buffer(data))
        log.info("rolling forward the Iceberg commit of the latest record", extra={"context": {
            "log_type": log_type, "partition": partition, "seq": record.seq, "from": covered,
            "to": target}})
        self.failpoint.hit("recovering")
        self.append(log_type, partition, read_files(datas), target, [])
        self.failpoint.hit("rolled_forward")
