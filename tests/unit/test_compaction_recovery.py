"""Crash a compaction run at every single storage operation (a simulated kill -9), run again, and check that
every row of the writer's lake is there exactly once with its types, and that no row was ever invisible."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.unit.test_compaction_support import (
    LEASE,
    NOW,
    CompactStorage,
    assert_exactly_once,
    assert_nothing_lost,
    compactor,
    copy_lake,
    published,
    schemas,
)
from tests.unit.test_writer_support import Crash
from zeek_pipeline.compaction.journal import HourJournal
from zeek_pipeline.compaction.lake import hour_folders
from zeek_pipeline.compaction.merge import META_COMPACTED_FROM


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lake") / "base"


def count_operations(template: Path, base: Path) -> int:
    storage = copy_lake(template, base)
    summary = compactor(storage).run_all()
    assert summary.hours_compacted == 3 and not summary.errors
    return storage.operations


def operation_index(template: Path, base: Path, prefix: str) -> int:
    """The number of the first storage operation of a clean run whose log line starts with `prefix`."""
    storage = copy_lake(template, base)
    compactor(storage).run_all()
    return next(i for i, line in enumerate(storage.log, start=1) if line.startswith(prefix))


def test_a_run_without_crash_merges_each_hour_and_keeps_rows_and_types(template: Path, tmp_path: Path) -> None:
    storage = copy_lake(template, tmp_path / "base")
    before_files, before_types = len(published(storage.base)), schemas(storage.base)
    summary = compactor(storage).run_all()
    assert summary.errors == [] and summary.hours_compacted == 3
    assert summary.files_before == 24 and summary.files_after == 3  # 2 files stay: a latest commit record lists them
    assert len(published(storage.base)) == before_files - summary.files_before + summary.files_after
    assert summary.rows == sum(pq.read_metadata(f).num_rows for f in published(storage.base)
                               if "compacted" in f.name)
    assert_exactly_once(storage.base)
    assert schemas(storage.base) == before_types
    merged = next(f for f in published(storage.base) if "compacted" in f.name)
    meta = pq.read_metadata(merged).metadata
    assert meta[b"zeek_pipeline.log_type"] in (b"dns", b"ssl", b"weird") and META_COMPACTED_FROM in meta
    assert b"zeek_pipeline.first_offset" not in meta
    times = pq.read_table(merged, columns=["event_time"]).column("event_time").to_pylist()
    assert times == sorted(times)  # sorted: row-group statistics prune time ranges
    for hour in hour_folders(storage.walk("")):
        latest = HourJournal(storage, hour.log_type, hour.hour).latest()
        assert latest is not None and latest.kind == "done"
    assert compactor(storage).run_all().hours_compacted == 0  # nothing left to merge: a second run is a no-op


@pytest.mark.slow
def test_a_crash_at_any_storage_operation_loses_and_repeats_nothing(template: Path, tmp_path: Path) -> None:
    total = count_operations(template, tmp_path / "count")
    assert total > 30
    for crash_at in range(1, total + 1):
        storage = copy_lake(template, tmp_path / f"crash-{crash_at}")
        storage.crash_at = crash_at
        with pytest.raises(Crash):
            compactor(storage).run_all()
        assert_nothing_lost(storage.base)
        storage.crash_at = None
        # The next run, after the dead run's lease: it finishes or cleans up, then compacts what is left.
        summary = compactor(storage, now=NOW + LEASE + 1).run_all()
        assert summary.errors == []
        assert_exactly_once(storage.base)
        assert len(published(storage.base)) == 5, f"crash at {crash_at}: {storage.log[crash_at - 1]}"


@pytest.mark.slow
def test_crashes_during_recovery_and_again(template: Path, tmp_path: Path) -> None:
    total = count_operations(template, tmp_path / "count")
    rng = random.Random(14)
    for trial in range(15):
        storage = copy_lake(template, tmp_path / f"multi-{trial}")
        now = NOW
        for _ in range(rng.randint(2, 4)):
            storage.crash_at = storage.operations + rng.randint(1, total)
            try:
                compactor(storage, now=now).run_all()
            except Crash:
                assert_nothing_lost(storage.base)
            now += LEASE + 1
        storage.crash_at = None
        assert compactor(storage, now=now).run_all().errors == []
        assert_exactly_once(storage.base)
        assert len(published(storage.base)) == 5


def test_a_live_claim_keeps_a_second_run_out_until_its_lease_expires(template: Path, tmp_path: Path) -> None:
    storage = copy_lake(template, tmp_path / "base")
    # The first run dies while it writes its first output: it holds a claim and has committed nothing.
    storage.crash_at = operation_index(template, tmp_path / "count", "open_output _zeek_compaction/")
    with pytest.raises(Crash):
        compactor(storage).run_all()
    storage.crash_at = None
    early = compactor(storage, now=NOW + 60).run_all()
    assert early.hours_skipped_busy >= 1 and early.errors == []
    assert_exactly_once(storage.base)
    late = compactor(storage, now=NOW + LEASE + 1).run_all()
    assert late.errors == [] and late.hours_compacted >= 1
    assert_exactly_once(storage.base)
    assert len(published(storage.base)) == 5


def test_storage_of_the_test_counts_each_deleted_file(tmp_path: Path) -> None:
    storage = CompactStorage(tmp_path)
    storage.put_bytes("a", b"1")
    storage.put_bytes("b", b"2")
    before = storage.operations
    storage.delete_many(["a", "b"])
    assert storage.operations == before + 2 and not (tmp_path / "a").exists()
