"""A zombie writer: frozen in the middle of a flush (as by SIGSTOP), its partitions taken over by a second
writer that commits past the pruning point, then resumed with its memory as it was. Every record must
still be in the lake exactly once.

Both writers run here in one process, on one directory, under one instance name: the worst case for
names too (same PID, same instance). tests/integration/test_writer_zombie.py does the same with real
processes, SIGSTOP and the Kafka group, on disk and on S3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.unit.test_writer_recovery import CONVERTER, STREAM, TOPIC, assert_exactly_once
from tests.unit.test_writer_support import FaultyStorage, RecordingDeadLetters
from zeek_pipeline.writer.buffers import Buffers, FlushPolicy
from zeek_pipeline.writer.commitlog import CommitLog
from zeek_pipeline.writer.engine import WriterEngine
from zeek_pipeline.writer.flush import Flusher
from zeek_pipeline.writer.parquet_file import ParquetOptions

Point = Callable[[str, str], bool]


class Freeze(BaseException):
    """SIGSTOP at a chosen storage operation: the operation does not happen, the writer's memory stays."""


class FreezableStorage(FaultyStorage):
    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.freeze_at: Point | None = None

    def _step(self, name: str, rel: str) -> None:
        super()._step(name, rel)
        if self.freeze_at is not None and self.freeze_at(name, rel):
            self.freeze_at = None
            raise Freeze(f"frozen before {name} {rel}")


def after_staging(name: str, rel: str) -> bool:
    """Its files are staged; the commit record is the next thing it writes."""
    return name == "put_bytes" and rel.startswith("_zeek_commits/")


def after_commit(name: str, rel: str) -> bool:
    """Its commit record is written; publishing the files is next."""
    return name == "publish"


def writer(storage: FaultyStorage, dlq: RecordingDeadLetters, event_count: int) -> WriterEngine:
    commitlog = CommitLog(storage, TOPIC, "writer-0")  # one instance name for both writers
    flusher = Flusher(storage=storage, commitlog=commitlog, converter=CONVERTER, dead_letters=dlq,  # type: ignore[arg-type]
                      options=ParquetOptions(), file_prefix="events", topic=TOPIC)
    policy = FlushPolicy(flush_bytes=0, interval=0.5, event_count=event_count, max_memory=400_000)
    return WriterEngine(Buffers(policy), commitlog, flusher)


def feed(engine: WriterEngine, start: dict[int, int], stop: dict[int, int], batch: int = 17) -> None:
    """Consume [start, stop) of each partition in batches, flushing what is due after each batch."""
    position, now = dict(start), 0.0
    while any(position[p] < stop[p] for p in STREAM):
        for partition, records in STREAM.items():
            end = min(position[partition] + batch, stop[partition])
            for offset in range(position[partition], end):
                engine.add(partition, offset, records[offset], now)
            position[partition] = end
        now += 0.05
        engine.flush_due(now)


def assert_typed(base: Path, rows: int) -> None:
    """Read back with pyarrow.dataset: every row there, with the layout's types."""
    total = 0
    for log_type in ("dns", "ssl", "weird"):
        dataset = ds.dataset(base / log_type, format="parquet", partitioning="hive")
        table = dataset.to_table(columns=["event_time", "_kafka_partition", "_kafka_offset"])
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("_kafka_partition").type == pa.int32()
        assert table.schema.field("_kafka_offset").type == pa.int64()
        total += table.num_rows
    assert total == rows


@pytest.mark.parametrize("point", [after_staging, after_commit])
def test_a_zombie_resumed_after_its_successor_pruned_writes_nothing_twice(tmp_path: Path, point: Point) -> None:
    dlq = RecordingDeadLetters()
    zombie_storage = FreezableStorage(tmp_path)
    zombie = writer(zombie_storage, dlq, event_count=25)
    for partition in STREAM:
        zombie.recover(partition)
    zombie_storage.freeze_at = point
    with pytest.raises(Freeze):  # SIGSTOP in the middle of one of its first flushes
        feed(zombie, dict.fromkeys(STREAM, 0), {p: len(r) for p, r in STREAM.items()})
    assert zombie.queue, "the frozen flush is still queued"
    frozen_seq = {job.partition: job.state.seq + 1 for job in zombie.queue}

    # The group gives both partitions to a second writer, which commits past the pruning point.
    successor = writer(FaultyStorage(tmp_path), dlq, event_count=10)
    start = {p: successor.recover(p).next_offset or 0 for p in STREAM}
    feed(successor, start, {p: len(r) for p, r in STREAM.items()})
    assert successor.drain(set(STREAM), float("inf"), "shutdown", sleep=lambda _s: None) == set()
    successor.collect()
    commits = successor.commitlog
    for partition, seq in frozen_seq.items():
        assert commits.storage.read_bytes(f"{commits.commits_dir(partition)}/{seq:012d}.json") is None, (
            "the seq the zombie will write next has been pruned")

    # SIGCONT: the zombie goes on with its memory as it was, and flushes everything it still holds.
    zombie.retry()
    zombie.drain(set(zombie.states), float("inf"), "shutdown", sleep=lambda _s: None)
    zombie.collect()

    assert_exactly_once(tmp_path, dlq)
    assert zombie.conflicts, "the zombie found out that it lost its partitions"
    assert_typed(tmp_path, sum(len(r) for r in STREAM.values()) - 2)  # two dead letters
    for partition in STREAM:  # and the next owner resumes after everything
        assert CommitLog(FaultyStorage(tmp_path), TOPIC).recover(partition).next_offset == len(STREAM[partition])
