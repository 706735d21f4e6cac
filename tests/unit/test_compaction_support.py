"""A lake the real writer engine wrote (real records, commit logs, many small files), and checks of it."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from tests.unit.test_writer_recovery import DEAD, STREAM, run_writer
from tests.unit.test_writer_support import FaultyStorage, RecordingDeadLetters
from zeek_pipeline.compaction.lake import JOURNAL_DIR
from zeek_pipeline.compaction.run import CompactionOptions, Compactor
from zeek_pipeline.writer.lake import hive_partitioning, log_type_folders, parquet_files

EXPECTED = {(p, o) for p, records in STREAM.items() for o in range(len(records))} - DEAD
LEASE = 900.0
NOW = 2_000_000_000.0  # long after the real logs' hours (2018): every hour is closed


class CompactStorage(FaultyStorage):
    """FaultyStorage that also counts each file of `delete_many` (a crash may fall between two deletes) and
    can run a callback at a chosen operation (another compactor, a writer publishing a late file)."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.on_operation: dict[int, Callable[[], None]] = {}

    def _step(self, name: str, rel: str) -> None:
        super()._step(name, rel)
        callback = self.on_operation.pop(self.operations, None)
        if callback is not None:
            callback()

    def delete_many(self, rels: object) -> None:
        for rel in list(rels):  # type: ignore[call-overload]
            self.delete(rel)


def written_lake(template: Path) -> Path:
    """The writer's lake of STREAM (26 files in 3 hours of one day), built once per template folder."""
    if not template.exists():
        run_writer(FaultyStorage(template), RecordingDeadLetters())
    return template


def copy_lake(template: Path, base: Path) -> CompactStorage:
    shutil.copytree(written_lake(template), base)
    return CompactStorage(base)


def compactor(storage: CompactStorage, now: float = NOW, target_mb: float = 128, run: str | None = None) -> Compactor:
    options = CompactionOptions(grace_seconds=3600, min_quiet_seconds=0, target_bytes=int(target_mb * 1024 * 1024),
                                slice_bytes=64 * 1024, lease_seconds=LEASE)
    return Compactor(storage, options, clock=lambda: now, run_id=run)


def published(base: Path) -> list[Path]:
    return [f for folder in log_type_folders(base) for f in parquet_files(folder)]


def rows_seen(base: Path) -> Counter[tuple[int, int]]:
    rows = duckdb.sql(f"select _kafka_partition, _kafka_offset from read_parquet('{base}/**/*.parquet', "
                      "union_by_name=true)").fetchall()
    return Counter(rows)


def schemas(base: Path) -> dict[str, pa.Schema]:
    """Per log type, the unified column types a reader sees (pyarrow.dataset, typed Hive keys)."""
    found = {}
    for folder in log_type_folders(base):
        dataset = ds.dataset([str(f) for f in parquet_files(folder)], format="parquet",
                             partitioning=hive_partitioning(), partition_base_dir=str(folder))
        found[folder.name] = dataset.schema.remove_metadata()
    return found


def assert_nothing_lost(base: Path) -> None:
    """At any moment, even right after a crash: every row is visible (a duplicate may be, until recovery)."""
    missing = EXPECTED - set(rows_seen(base))
    assert not missing, f"rows not visible: {sorted(missing)[:5]}"
    assert not [f for f in base.rglob("*.parquet") if f.name.startswith(".")]


def assert_exactly_once(base: Path) -> None:
    counts = rows_seen(base)
    twice = [row for row, n in counts.items() if n > 1]
    assert not twice, f"rows twice: {twice[:5]}"
    assert set(counts) == EXPECTED
    assert list((base / JOURNAL_DIR).rglob("*.tmp")) == []
