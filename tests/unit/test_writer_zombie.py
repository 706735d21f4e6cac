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


def consume(engine: WriterEngine, position: dict[int, int], stop: dict[int, int], batch: int = 17) -> None:
    """Consume each partition from its position up to `stop` (the position moves on), flushing what is due."""
    now = 0.0
    while any(position[p] < stop[p] for p in position):
        for partition in position:
            end = min(position[partition] + batch, stop[partition])
            for offset in range(position[partition], end):
                engine.add(partition, offset, STREAM[partition][offset], now)
            position[partition] = end
        now += 0.05
        engine.flush_due(now)


def rejoin(engine: WriterEngine, position: dict[int, int]) -> None:
    """The service's rejoin, once its delay is over: every partition still in conflict is read again from its
    commit log, and consumption seeks back to its restart offset."""
    for partition in sorted(engine.conflicts):
        position[partition] = engine.recover(partition).next_offset or 0
    engine.conflicts.clear()


def zombie_in_conflict(tmp_path: Path, dlq: RecordingDeadLetters) -> tuple[WriterEngine, WriterEngine]:
    """A zombie frozen after staging a flush, a successor that took its partitions over and committed, and the
    zombie resumed: its flush has found the partition taken (not yet handled by its main thread)."""
    zombie_storage = FreezableStorage(tmp_path)
    zombie = writer(zombie_storage, dlq, event_count=25)
    for partition in STREAM:
        zombie.recover(partition)
    zombie_storage.freeze_at = after_staging
    with pytest.raises(Freeze):
        feed(zombie, dict.fromkeys(STREAM, 0), {p: len(r) for p, r in STREAM.items()})
    successor = writer(FaultyStorage(tmp_path), dlq, event_count=10)
    start = {p: successor.recover(p).next_offset or 0 for p in STREAM}
    consume(successor, start, {p: len(r) // 3 for p, r in STREAM.items()})
    zombie.retry()  # SIGCONT: the frozen flush finds the partition taken
    assert any(job.conflict for job in zombie.done)
    return zombie, successor


def hand_back(zombie: WriterEngine, successor: WriterEngine) -> None:
    """The group's verdict reaches the zombie (lost), then the rebalance gives every partition back to it:
    the successor drains them (revoke)."""
    zombie.forget(set(STREAM), finish_dead_lettered=True)
    assert successor.drain(set(STREAM), float("inf"), "rebalance", sleep=lambda _s: None) == set()
    successor.collect()
    successor.forget(set(STREAM))


def finish(zombie: WriterEngine, position: dict[int, int]) -> None:
    consume(zombie, position, {p: len(r) for p, r in STREAM.items()})
    assert zombie.drain(set(zombie.states), float("inf"), "shutdown", sleep=lambda _s: None) == set()
    zombie.collect()


def test_a_conflict_handled_before_the_partitions_come_back_is_not_replayed_over_them(tmp_path: Path) -> None:
    """Seen under load (issue 13): the zombie's main thread handles the conflict (rejoin due in 3 s), hears that
    its partitions are lost, gets them back and consumes; then the rejoin fired and re-read the log under
    buffers full of records it then consumed again: a flush's rows twice."""
    dlq = RecordingDeadLetters()
    zombie, successor = zombie_in_conflict(tmp_path, dlq)
    zombie.collect()
    assert zombie.conflicts
    hand_back(zombie, successor)
    position = {p: zombie.recover(p).next_offset or 0 for p in STREAM}
    consume(zombie, position, {p: 2 * len(r) // 3 + 5 for p, r in STREAM.items()})
    assert zombie.buffers.count, "records are buffered when the rejoin comes due"
    rejoin(zombie, position)
    finish(zombie, position)
    assert_exactly_once(tmp_path, dlq)


def test_a_conflict_of_an_earlier_ownership_leaves_the_new_one_alone(tmp_path: Path) -> None:
    """The conflict is collected only after the partitions were lost and recovered again: it is about the old
    ownership, so the recovered partition keeps its state and nothing is read again."""
    dlq = RecordingDeadLetters()
    zombie, successor = zombie_in_conflict(tmp_path, dlq)
    hand_back(zombie, successor)
    position = {p: zombie.recover(p).next_offset or 0 for p in STREAM}
    states = dict(zombie.states)
    zombie.collect()
    assert not zombie.conflicts and zombie.states == states
    finish(zombie, position)
    assert_exactly_once(tmp_path, dlq)


def test_recovering_a_partition_again_drops_what_was_buffered_for_it(tmp_path: Path) -> None:
    """Recovery is a restart from the log: the caller consumes again from the restart offset, so records held
    from before must go (kept, they would be written twice)."""
    dlq = RecordingDeadLetters()
    engine = writer(FaultyStorage(tmp_path), dlq, event_count=25)
    position = {p: engine.recover(p).next_offset or 0 for p in STREAM}
    consume(engine, position, {p: len(r) // 2 + 5 for p, r in STREAM.items()})
    assert engine.buffers.count
    position = {p: engine.recover(p).next_offset or 0 for p in STREAM}
    finish(engine, position)
    assert_exactly_once(tmp_path, dlq)
