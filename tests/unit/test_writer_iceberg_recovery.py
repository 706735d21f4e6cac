"""The writer's Iceberg step (output.iceberg beside the Hive output) under simulated kill -9: the inline engine
of test_writer_recovery.py with a real SQLite catalog on local disk, crashed at the table commit (just
before it, and just after it but before the job is done), restarted, and read back: every record exactly
once in the Hive lake and in the tables, the tables' offsets maps at each partition's end."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from tests.unit.test_writer_recovery import (
    CONVERTER,
    DEAD,
    STREAM,
    TOPIC,
    assert_exactly_once,
    assert_reader_view_is_clean,
)
from tests.unit.test_writer_support import Crash, FaultyStorage, RecordingDeadLetters
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN
from zeek_pipeline.iceberg.catalog import open_catalog
from zeek_pipeline.iceberg.commit import CommitResult, committed_offsets
from zeek_pipeline.settings import IcebergCatalog, IcebergOutput
from zeek_pipeline.writer.buffers import Buffers, FlushPolicy
from zeek_pipeline.writer.commitlog import CommitLog
from zeek_pipeline.writer.dlq import Delivery
from zeek_pipeline.writer.engine import WriterEngine
from zeek_pipeline.writer.flush import Flusher
from zeek_pipeline.writer.iceberg_sink import IcebergSink
from zeek_pipeline.writer.parquet_file import ParquetOptions
from zeek_pipeline.writer.storage import StorageError

LOG_TYPES = ("dns", "ssl", "weird")


def iceberg_settings(base: Path) -> IcebergOutput:
    return IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=f"sqlite:///{base / 'catalog.db'}",
                                                              warehouse=str(base / "warehouse")))


class CrashingSink(IcebergSink):
    """The sink with its table commit counted among the storage operations: `iceberg` just before it, and
    `iceberg-done` right after it landed (so a crash there leaves a committed table and an unfinished job)."""

    def __init__(self, storage: FaultyStorage, settings: IcebergOutput, dlq: RecordingDeadLetters) -> None:
        super().__init__(settings, topic=TOPIC, converter=CONVERTER, dead_letters=dlq)  # type: ignore[arg-type]
        self.storage = storage

    def append(self, log_type: str, partition: int, rows: pa.Table | None, next_offset: int,
               sent: list[Delivery | None]) -> CommitResult | None:
        self.storage._step("iceberg", f"{log_type} p{partition} -> {next_offset}")
        result = super().append(log_type, partition, rows, next_offset, sent)
        self.storage._step("iceberg-done", f"{log_type} p{partition} -> {next_offset}")
        return result


def run_writer(storage: FaultyStorage, dlq: RecordingDeadLetters, settings: IcebergOutput, batch: int = 17) -> None:
    """test_writer_recovery.run_writer with the Iceberg step: recover, consume, flush, drain."""
    commitlog = CommitLog(storage, TOPIC, "test")
    flusher = Flusher(storage=storage, commitlog=commitlog, converter=CONVERTER, dead_letters=dlq,  # type: ignore[arg-type]
                      options=ParquetOptions(), file_prefix="events", topic=TOPIC,
                      iceberg=CrashingSink(storage, settings, dlq))
    policy = FlushPolicy(flush_bytes=0, interval=0.5, event_count=60, max_memory=400_000)
    engine = WriterEngine(Buffers(policy), commitlog, flusher)
    position = {partition: engine.recover(partition).next_offset or 0 for partition in STREAM}
    now = 0.0
    while any(position[p] < len(STREAM[p]) for p in STREAM):
        for partition, records in STREAM.items():
            for offset in range(position[partition], min(position[partition] + batch, len(records))):
                engine.add(partition, offset, records[offset], now)
            position[partition] = min(position[partition] + batch, len(records))
        now += 0.05
        engine.flush_due(now)
        while engine.failing:
            engine.retry()
    assert engine.drain(set(STREAM), deadline=float("inf"), reason="shutdown", sleep=lambda _s: None) == set()
    engine.collect()


def table_coordinates(catalog: Catalog, log_type: str) -> list[tuple[int, int]]:
    scanned = catalog.load_table(("zeek", log_type)).scan(selected_fields=(PARTITION_COLUMN, OFFSET_COLUMN))
    table = scanned.to_arrow()
    assert table.schema.field(OFFSET_COLUMN).type == pa.int64()
    return list(zip(table.column(PARTITION_COLUMN).to_pylist(), table.column(OFFSET_COLUMN).to_pylist(),
                    strict=True))


def assert_tables_exactly_once(settings: IcebergOutput) -> None:
    catalog = open_catalog(settings)
    rows: Counter[tuple[int, int]] = Counter()
    for log_type in LOG_TYPES:
        coordinates = table_coordinates(catalog, log_type)
        rows.update(coordinates)
        # each partition's map covers the log type's rows (and no more than the partition holds)
        offsets = committed_offsets(catalog.load_table(("zeek", log_type)), TOPIC)
        for partition, records in STREAM.items():
            highest = max(o for p, o in coordinates if p == partition)
            assert highest < offsets[partition] <= len(records), (log_type, partition, offsets)
    duplicated = [c for c, n in rows.items() if n > 1]
    assert not duplicated, f"in the tables twice: {duplicated[:5]}"
    expected = {(p, o) for p, records in STREAM.items() for o in range(len(records))} - DEAD
    assert set(rows) == expected, f"missing from the tables: {sorted(expected - set(rows))[:5]}"


def test_without_crash_the_tables_hold_what_the_lake_holds(tmp_path: Path) -> None:
    storage, dlq = FaultyStorage(tmp_path / "lake"), RecordingDeadLetters()
    settings = iceberg_settings(tmp_path)
    run_writer(storage, dlq, settings)
    assert_exactly_once(tmp_path / "lake", dlq)
    assert_tables_exactly_once(settings)
    assert sum(line.startswith("iceberg ") for line in storage.log) > 10  # one commit per flush


def iceberg_steps(tmp_path: Path) -> list[int]:
    """The operation numbers of the table commits (and of the step right after each) in a run without crash."""
    storage = FaultyStorage(tmp_path / "count" / "lake")
    run_writer(storage, RecordingDeadLetters(), iceberg_settings(tmp_path / "count"))
    return [index + 1 for index, line in enumerate(storage.log) if line.startswith("iceberg")]


@pytest.mark.slow
def test_a_crash_at_the_table_commit_loses_and_repeats_nothing(tmp_path: Path) -> None:
    steps = iceberg_steps(tmp_path)
    rng = random.Random(16)
    chosen = sorted({*steps[:4], *steps[-2:], *rng.sample(steps, min(10, len(steps)))})
    for crash_at in chosen:  # before a commit, and after one landed but before its job was done
        base = tmp_path / f"crash-{crash_at}"
        storage, dlq, settings = FaultyStorage(base / "lake"), RecordingDeadLetters(), iceberg_settings(base)
        storage.crash_at = crash_at
        with pytest.raises(Crash):
            run_writer(storage, dlq, settings)
        assert_reader_view_is_clean(base / "lake")
        storage.crash_at = None  # restarted: recovery rolls the latest record's table commit forward
        run_writer(storage, dlq, settings)
        assert_exactly_once(base / "lake", dlq)
        assert_tables_exactly_once(settings)


@pytest.mark.slow
def test_crashes_during_recovery_and_again_after_restart_with_iceberg(tmp_path: Path) -> None:
    total = len(iceberg_steps(tmp_path)) * 4
    rng = random.Random(7)
    for trial in range(4):
        base = tmp_path / f"multi-{trial}"
        storage, dlq, settings = FaultyStorage(base / "lake"), RecordingDeadLetters(), iceberg_settings(base)
        crashes = 0
        for _ in range(rng.randint(2, 4)):
            storage.crash_at = storage.operations + rng.randint(1, max(2, total // 3))
            try:
                run_writer(storage, dlq, settings)
            except Crash:
                crashes += 1
        storage.crash_at = None
        run_writer(storage, dlq, settings)
        assert crashes >= 1
        assert_exactly_once(base / "lake", dlq)
        assert_tables_exactly_once(settings)


class UnreachableSink(IcebergSink):
    """The sink of a writer whose catalog is out of reach (a paused zombie) until `reachable` is set."""

    def __init__(self, settings: IcebergOutput, dlq: RecordingDeadLetters) -> None:
        super().__init__(settings, topic=TOPIC, converter=CONVERTER, dead_letters=dlq)  # type: ignore[arg-type]
        self.reachable = False

    def append(self, log_type: str, partition: int, rows: pa.Table | None, next_offset: int,
               sent: list[Delivery | None]) -> CommitResult | None:
        if not self.reachable:
            raise StorageError("catalog unreachable")
        return super().append(log_type, partition, rows, next_offset, sent)


def inline_engine(storage: FaultyStorage, dlq: RecordingDeadLetters, sink: IcebergSink, name: str) -> WriterEngine:
    commitlog = CommitLog(storage, TOPIC, name)
    flusher = Flusher(storage=storage, commitlog=commitlog, converter=CONVERTER, dead_letters=dlq,  # type: ignore[arg-type]
                      options=ParquetOptions(), file_prefix="events", topic=TOPIC, iceberg=sink)
    return WriterEngine(Buffers(FlushPolicy(flush_bytes=0, interval=0.5, event_count=60, max_memory=400_000)),
                        commitlog, flusher)


def test_a_zombie_resuming_its_table_commit_after_a_takeover_appends_nothing(tmp_path: Path) -> None:
    storage, dlq, settings = FaultyStorage(tmp_path / "lake"), RecordingDeadLetters(), iceberg_settings(tmp_path)
    zombie_sink = UnreachableSink(settings, dlq)
    zombie = inline_engine(storage, dlq, zombie_sink, "zombie")
    zombie.recover(0)
    records = STREAM[0]
    for offset in range(100):
        zombie.add(0, offset, records[offset], 0.0)
    zombie.flush_due(100.0)  # published in the lake; its table commit fails and stays at the queue's head
    assert zombie.failing and zombie.queue[0].published and not zombie.queue[0].iceberg_done
    successor = inline_engine(storage, dlq, IcebergSink(settings, topic=TOPIC, converter=CONVERTER,
                                                        dead_letters=dlq), "successor")  # type: ignore[arg-type]
    state = successor.recover(0)  # rolls the zombie's table commit forward, then fences it
    for offset in range(state.next_offset or 0, len(records)):
        successor.add(0, offset, records[offset], 0.0)
    successor.drain({0}, float("inf"), "shutdown", sleep=lambda _s: None)
    before = table_coordinates(open_catalog(settings), "dns")
    zombie_sink.reachable = True
    assert zombie.retry()  # the zombie's step goes through now: the map filters every row it holds
    assert zombie_sink.rows == 0
    catalog = open_catalog(settings)
    assert table_coordinates(catalog, "dns") == before
    rows: Counter[tuple[int, int]] = Counter()
    for log_type in LOG_TYPES:
        rows.update(table_coordinates(catalog, log_type))
    assert max(rows.values()) == 1
    assert set(rows) == {(0, o) for o in range(len(records))} - DEAD
