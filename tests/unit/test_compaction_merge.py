"""Compaction's merge in bounded memory: a slice never decodes to more than `slice_bytes`, whatever the
compression ratio, the spread of the rows in time or the statistics the inputs carry; every row is written
once, sorted by event_time. What a slice holds shows in the output: each slice is written as its own row
groups, so no output row group may decode to more than the budget."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zeek_pipeline.compaction.merge import Estimate, merge
from zeek_pipeline.compaction.plan import Bin, InputFile, RowGroup, plan_bins, read_input
from zeek_pipeline.writer.parquet_file import ParquetOptions
from zeek_pipeline.writer.storage import FileEntry, LocalStorage

KIB = 1024
TIME = pa.timestamp("us", tz="UTC")
HOUR_US = 1_796_032_800 * 1_000_000
WORDS = [f"O=Example Corp {i},OU=Servers,CN=host-{i}.example.internal;serial={i:032d}" for i in range(4)]


def wide_hour(base: Path, times: Callable[[random.Random, int], list[int | None]], *, files: int = 12,
              rows: int = 2_000, timed: bool = True, statistics: bool = True) -> tuple[LocalStorage, Bin]:
    """`files` inputs of wide rows that compress ~100x (a few long strings repeated), times from `times`."""
    rng = random.Random(14)
    entries = []
    for index in range(files):
        columns: dict[str, pa.Array] = {}
        if timed:
            columns["event_time"] = pa.array(times(rng, index), TIME)
        columns["_kafka_partition"] = pa.array([index % 3] * rows, pa.int32())
        columns["_kafka_offset"] = pa.array(range(index * rows, (index + 1) * rows), pa.int64())
        for c in range(8):
            columns[f"s{c}"] = pa.array([rng.choice(WORDS) for _ in range(rows)])
        name = f"f{index:02d}.parquet"
        pq.write_table(pa.table(columns), base / name, compression="zstd", row_group_size=rows // 2,
                       write_statistics=statistics)
        entries.append(FileEntry(name, (base / name).stat().st_size, 0.0))
    storage = LocalStorage(base)
    bins = plan_bins([read_input(storage, e) for e in entries], 1024 * KIB * KIB)
    assert len(bins) == 1
    return storage, bins[0]


def spread(rng: random.Random, index: int, rows: int = 2_000) -> list[int | None]:
    """Each file covers five minutes of the hour, the files of three partitions overlapping."""
    first = HOUR_US + (index // 3) * 300_000_000
    return sorted(first + rng.randrange(300_000_000) for _ in range(rows))


def merged(storage: LocalStorage, plan: Bin, budget: int) -> pq.ParquetFile:
    decoded = sum(pq.read_table(storage.base / f.rel).nbytes for f in plan.files)
    assert decoded > 8 * budget, decoded  # many slices' worth, though the files are small
    merge(storage, plan, "out.parquet", "run", ParquetOptions(), slice_bytes=budget)
    return pq.ParquetFile(storage.base / "out.parquet")


def assert_complete_and_bounded(out: pq.ParquetFile, plan: Bin, budget: int) -> pa.Table:
    sizes = [out.read_row_group(i).nbytes for i in range(out.metadata.num_row_groups)]
    assert max(sizes) <= budget, (max(sizes), budget, len(sizes))
    table = out.read()
    keys = list(zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(),
                    strict=True))
    assert len(keys) == len(set(keys)) == plan.rows
    if "event_time" in table.column_names:
        assert table.schema.field("event_time").type == TIME
        times = table.column("event_time").cast(pa.int64()).to_pylist()
        timed = [t for t in times if t is not None]
        assert times[:len(timed)] == sorted(timed)  # sorted, rows without a time last
    return table


def test_slices_are_counted_in_decoded_bytes_not_compressed_ones(tmp_path: Path) -> None:
    storage, plan = wide_hour(tmp_path, spread)
    budget = 512 * KIB
    assert plan.bytes < budget  # one slice, had it been counted in compressed bytes
    out = merged(storage, plan, budget)
    assert out.metadata.num_row_groups > 8
    assert_complete_and_bounded(out, plan, budget)


def test_a_burst_the_statistics_do_not_show_is_read_again_in_narrower_slices(tmp_path: Path) -> None:
    """Every file spans the hour, but nine rows in ten fall in the same second: the even-spread estimate
    is ten times off there, and the slices that outgrow the budget are narrowed until they fit."""

    def burst(rng: random.Random, index: int) -> list[int | None]:
        return sorted([HOUR_US + rng.randrange(3_600_000_000) for _ in range(200)]
                      + [HOUR_US + 1_800_000_000 + rng.randrange(1_000_000) for _ in range(1_800)])

    storage, plan = wide_hour(tmp_path, burst, files=6)
    budget = 512 * KIB
    assert_complete_and_bounded(merged(storage, plan, budget), plan, budget)


def test_files_without_statistics_and_rows_without_a_time_are_sliced_too(tmp_path: Path) -> None:
    def with_nulls(rng: random.Random, index: int) -> list[int | None]:
        times = spread(rng, index)
        return [None if i % 50 == 0 else t for i, t in enumerate(times)]

    storage, plan = wide_hour(tmp_path, with_nulls, statistics=False)
    assert all(g.min_time is None for f in plan.files for g in f.groups)
    budget = 512 * KIB
    table = assert_complete_and_bounded(merged(storage, plan, budget), plan, budget)
    assert table.column("event_time").null_count == 12 * 40


def test_rows_without_an_event_time_column_are_streamed_in_bounded_row_groups(tmp_path: Path) -> None:
    storage, plan = wide_hour(tmp_path, spread, timed=False)
    budget = 512 * KIB
    assert_complete_and_bounded(merged(storage, plan, budget), plan, budget)


@pytest.mark.parametrize("budget", [10.0, 35.0, 1000.0])
def test_the_estimate_ends_a_slice_where_its_share_of_the_spread_rows_is_reached(budget: float) -> None:
    schema = pa.schema([("event_time", TIME)])

    def group(low: float, high: float, size: int) -> RowGroup:
        return RowGroup(0, 10, size, low, high, False)

    # 100 bytes over [0 s, 1 s], 100 bytes over [0.5 s, 1.5 s]: 200 bytes per second in the overlap
    files = [InputFile("a", 1, 10, schema, "", 0.0, 1.0, (group(0.0, 1.0, 100),)),
             InputFile("b", 1, 10, schema, "", 0.5, 1.5, (group(0.5, 1.5, 100),))]
    estimate = Estimate(Bin(files), ratio=1.0)
    end = estimate.next_end(0, budget)
    if budget >= 200:
        assert end is None  # the rest fits: the last slice
        return
    assert end is not None and abs(estimate.bytes(0, end) - budget) < 0.01
    expected = budget / 100 * 1_000_000 if budget <= 50 else 500_000 + (budget - 50) / 200 * 1_000_000
    assert abs(end - expected) <= 2
