"""Crash the writer at every storage operation (a simulated kill -9), restart it, and check the output
holds every record exactly once and a reader never sees a temporary or partial file.

The engine runs on real documents (three log types at very different rates, so fast types run ahead of
the restart offset and replays must skip their done ranges), with real Parquet files on local disk.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.unit.test_writer_support import (
    CONFIG,
    Crash,
    FaultyStorage,
    RecordingDeadLetters,
    documents,
    interleave,
)
from zeek_pipeline.writer.buffers import Buffers, FlushPolicy
from zeek_pipeline.writer.commitlog import STAGING_DIR, CommitLog
from zeek_pipeline.writer.convert import Converter
from zeek_pipeline.writer.engine import WriterEngine
from zeek_pipeline.writer.flush import Flusher
from zeek_pipeline.writer.parquet_file import ParquetOptions

TOPIC = "norm"
CONVERTER = Converter.from_config_dir(CONFIG)


def stream() -> dict[int, list[bytes]]:
    """Two partitions of real records: dns (many), ssl (some), weird (few), plus two dead letters."""
    part0 = interleave(documents("dns", 150), documents("ssl", 60), documents("weird", 12))
    part1 = interleave(documents("dns", 400)[150:], documents("ssl", 120)[60:], documents("weird", 20)[12:])
    bad = orjson.loads(part0[40])
    bad["raw"]["trans_id" if bad["log_type"] == "dns" else "version"] = "not a count"
    part0[40] = orjson.dumps(bad)
    part1[7] = b"{broken json"
    return {0: part0, 1: part1}


STREAM = stream()
TOTAL = sum(len(v) for v in STREAM.values())
DEAD = {(0, 40), (1, 7)}


# Typing ahead: off, or chunks of a few records (so count cuts fall inside typed chunks).
TYPE_AHEAD = [pytest.param(0, id="typed-at-flush"), pytest.param(3000, id="typed-ahead")]


def engine_on(storage: FaultyStorage, dlq: RecordingDeadLetters, type_ahead: int = 0) -> WriterEngine:
    commitlog = CommitLog(storage, TOPIC, "test")
    flusher = Flusher(storage=storage, commitlog=commitlog, converter=CONVERTER, dead_letters=dlq,  # type: ignore[arg-type]
                      options=ParquetOptions(), file_prefix="events", topic=TOPIC)
    policy = FlushPolicy(flush_bytes=0, interval=0.5, event_count=25, max_memory=400_000)
    return WriterEngine(Buffers(policy), commitlog, flusher, type_ahead_bytes=type_ahead)


def run_writer(storage: FaultyStorage, dlq: RecordingDeadLetters, batch: int = 17, type_ahead: int = 0) -> None:
    """What the service does, minus Kafka: recover, consume from the restart offsets, flush, drain at the end."""
    engine = engine_on(storage, dlq, type_ahead)
    position = {}
    for partition in STREAM:
        state = engine.recover(partition)
        position[partition] = state.next_offset or 0
    now = 0.0
    while any(position[p] < len(STREAM[p]) for p in STREAM):
        for partition, records in STREAM.items():
            for offset in range(position[partition], min(position[partition] + batch, len(records))):
                engine.add(partition, offset, records[offset], now)
            position[partition] = min(position[partition] + batch, len(records))
        now += 0.05
        engine.flush_due(now)
        while engine.failing:  # a storage failure: the service pauses and retries until it goes through
            engine.retry()
        assert not engine.queue
    assert engine.drain(set(STREAM), deadline=float("inf"), reason="shutdown", sleep=lambda _s: None) == set()
    engine.collect()


def visible_files(base: Path) -> list[str]:
    if not base.exists():
        return []
    dataset = ds.dataset(base, format="parquet", partitioning="hive")
    return list(dataset.files)


def assert_reader_view_is_clean(base: Path) -> None:
    """What a reader sees at any moment: only final, complete Parquet files."""
    files = visible_files(base)
    assert all(f.endswith(".parquet") and "/_" not in f and "/." not in f for f in files), files
    if files:
        duckdb.sql(f"select count(*) from read_parquet('{base}/**/*.parquet', union_by_name=true)").fetchall()


def assert_exactly_once(base: Path, dlq: RecordingDeadLetters) -> None:
    rows = duckdb.sql(f"select _kafka_partition, _kafka_offset from read_parquet('{base}/**/*.parquet', "
                      "union_by_name=true)").fetchall()
    counts = Counter(rows)
    duplicated = [c for c, n in counts.items() if n > 1]
    assert not duplicated, f"written twice: {duplicated[:5]}"
    expected = {(p, o) for p, records in STREAM.items() for o in range(len(records))} - DEAD
    assert set(counts) == expected, f"missing {sorted(expected - set(counts))[:5]}"
    lettered = {(d["partition"], d["offset"]) for d in dlq.acknowledged}
    assert lettered == DEAD  # at least once in the DLQ, never lost
    assert list((base / STAGING_DIR).rglob("*.tmp")) == []


@pytest.mark.parametrize("type_ahead", TYPE_AHEAD)
def test_without_crash_every_record_is_written_once(tmp_path: Path, type_ahead: int) -> None:
    storage, dlq = FaultyStorage(tmp_path), RecordingDeadLetters()
    run_writer(storage, dlq, type_ahead=type_ahead)
    assert_exactly_once(tmp_path, dlq)
    log = CommitLog(storage, TOPIC)
    for partition, records in STREAM.items():
        assert log.recover(partition).next_offset == len(records)
    assert storage.operations > 100  # many flushes: every step of the protocol gets crashed below


def count_operations(tmp_path: Path, type_ahead: int = 0) -> int:
    storage = FaultyStorage(tmp_path / "count")
    run_writer(storage, RecordingDeadLetters(), type_ahead=type_ahead)
    return storage.operations


@pytest.mark.slow
@pytest.mark.parametrize("type_ahead", TYPE_AHEAD)
def test_a_crash_at_any_storage_operation_loses_and_repeats_nothing(tmp_path: Path, type_ahead: int) -> None:
    total = count_operations(tmp_path, type_ahead)
    for crash_at in range(1, total + 1):
        base = tmp_path / f"crash-{crash_at}"
        storage, dlq = FaultyStorage(base), RecordingDeadLetters()
        storage.crash_at = crash_at
        with pytest.raises(Crash):
            run_writer(storage, dlq, type_ahead=type_ahead)
        assert_reader_view_is_clean(base)
        storage.crash_at = None  # the restarted process: fresh memory, same disk
        run_writer(storage, dlq, type_ahead=type_ahead)
        assert_exactly_once(base, dlq)


@pytest.mark.slow
def test_crashes_during_recovery_and_again_after_restart(tmp_path: Path) -> None:
    total = count_operations(tmp_path)
    rng = random.Random(5)
    for trial in range(25):
        base = tmp_path / f"multi-{trial}"
        storage, dlq = FaultyStorage(base), RecordingDeadLetters()
        crashes = 0
        for _ in range(rng.randint(2, 5)):
            storage.crash_at = storage.operations + rng.randint(1, max(2, total // 3))
            try:
                run_writer(storage, dlq)
            except Crash:
                crashes += 1
                assert_reader_view_is_clean(base)
        storage.crash_at = None
        run_writer(storage, dlq)
        assert crashes >= 1
        assert_exactly_once(base, dlq)


@pytest.mark.parametrize("type_ahead", TYPE_AHEAD)
def test_storage_failures_delay_flushes_without_loss(tmp_path: Path, type_ahead: int) -> None:
    storage, dlq = FaultyStorage(tmp_path), RecordingDeadLetters()
    storage.fail_at = set(range(5, 400, 7))  # every 7th operation fails once (disk full, S3 error)
    run_writer(storage, dlq, type_ahead=type_ahead)
    assert_exactly_once(tmp_path, dlq)


def test_an_unreachable_dlq_holds_the_flush_until_it_is_back(tmp_path: Path) -> None:
    storage, dlq = FaultyStorage(tmp_path), RecordingDeadLetters()
    engine = engine_on(storage, dlq)
    engine.recover(1)
    for offset, record in enumerate(STREAM[1][:30]):
        engine.add(1, offset, record, 0.0)
    dlq.fail = True
    engine.flush_due(100.0)  # the unroutable record at offset 7 cannot be dead-lettered
    assert engine.failing
    assert [job.segment.offsets for job in engine.queue][0] == [7]
    held = CommitLog(storage, TOPIC).latest(1)
    assert held is None or held.next_offset <= 7  # nothing past the unacknowledged dead letter is committed
    assert not engine.retry()
    dlq.fail = False
    assert engine.retry()
    engine.drain({1}, float("inf"), "shutdown", sleep=lambda _s: None)
    assert [(d["partition"], d["offset"], d["reason"]) for d in dlq.acknowledged] == [(1, 7, "invalid_json")]
    latest = CommitLog(storage, TOPIC).latest(1)
    assert latest is not None and latest.next_offset == 30


def test_a_commit_conflict_gives_the_partition_up_until_it_is_recovered_again(tmp_path: Path) -> None:
    storage, dlq = FaultyStorage(tmp_path), RecordingDeadLetters()
    engine = engine_on(storage, dlq)
    engine.recover(0)
    for offset in range(30):
        engine.add(0, offset, STREAM[0][offset], 0.0)
    # another writer took the partition over and committed its next record first
    other = CommitLog(storage, TOPIC, "other")
    theirs = other.new_record(other.recover(0), log_type="dns", first=0, last=29, next_offset=30, files=[])
    other.commit(theirs)
    engine.flush_due(100.0)
    assert engine.collect() == set()
    assert engine.conflicts == {0} and 0 not in engine.states and engine.buffers.count == 0
    assert CommitLog(storage, TOPIC).latest(0) == theirs  # nothing of ours was committed over theirs
    assert engine.recover(0).next_offset == 30  # what the service does next: resume after their commit


def test_dead_letters_already_sent_are_not_sent_again_when_the_partition_is_lost(tmp_path: Path) -> None:
    storage, dlq = FaultyStorage(tmp_path), RecordingDeadLetters()
    engine = engine_on(storage, dlq)
    engine.recover(1)
    engine.add(1, 7, STREAM[1][7], 0.0)  # the unroutable record: its flush is a dead letter and a commit
    storage.fail_at = set(range(storage.operations + 1, storage.operations + 50))  # the output is stuck
    engine.flush_due(100.0)
    assert engine.failing and len(dlq.acknowledged) == 1  # dead-lettered, not committed
    engine.forget({1}, finish_dead_lettered=True)  # the broker went away long enough: partition lost
    storage.fail_at = set()
    state = engine.recover(1)  # it comes back to this writer: the kept flush commits first
    for offset in range(state.next_offset or 0, 30):  # the replay from the commit log
        engine.add(1, offset, STREAM[1][offset], 0.0)
    engine.drain({1}, float("inf"), "shutdown", sleep=lambda _s: None)
    assert [(d["partition"], d["offset"]) for d in dlq.acknowledged] == [(1, 7)]  # once, not twice
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table(columns=["_kafka_offset"])
    assert table.schema.field("_kafka_offset").type == pa.int64()
    assert sorted(table.column(0).to_pylist()) == list(range(8, 30))
