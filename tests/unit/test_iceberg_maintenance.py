"""Iceberg maintenance, the pure parts: the rewrite plan of an hour, the summary line, failpoints, the flags."""

from __future__ import annotations

import argparse

import pytest
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.typedef import Record

from zeek_pipeline.commands import compact
from zeek_pipeline.iceberg.failpoints import Failpoints
from zeek_pipeline.iceberg.maintenance import MaintenanceSummary, TableSummary
from zeek_pipeline.iceberg.rewrite import HourFiles, HourRewrite

MB = 1024 * 1024


def data_file(rows: int, size: int) -> DataFile:
    return DataFile.from_args(content=DataFileContent.DATA, file_path=f"file:///t/{rows}-{size}.parquet",
                              file_format=FileFormat.PARQUET, partition=Record(1), record_count=rows,
                              file_size_in_bytes=size)


def hour_of(*files: tuple[int, int]) -> HourFiles:
    return HourFiles(hour=1, files=tuple(data_file(rows, size) for rows, size in files), last_added_ms=0)


def test_many_small_files_of_an_hour_become_one_file_below_the_target() -> None:
    hour = hour_of(*[(1000, MB)] * 8)
    assert hour.planned_files(128 * MB) == 1
    assert hour.rows_per_file(128 * MB) >= hour.rows


def test_an_hour_is_split_into_files_of_about_the_target_size() -> None:
    hour = hour_of(*[(1000, 10 * MB)] * 10)  # 100 MB, 10000 rows
    assert hour.rows_per_file(25 * MB) == 2500
    assert hour.planned_files(25 * MB) == 4


def test_files_already_at_the_target_plan_as_many_files_as_they_are() -> None:
    hour = hour_of((1000, 128 * MB), (1000, 128 * MB))
    assert hour.planned_files(128 * MB) == 2  # not fewer than now: closed_hours leaves such an hour alone


def test_the_summary_line_adds_up_hours_and_names_failed_tables() -> None:
    summary = MaintenanceSummary([
        TableSummary("dns", [HourRewrite(1, 8, 1, 300), HourRewrite(2, 4, 1, 100, conflicts=1)], 3, 2),
        TableSummary("conn", error="CommitFailedException: boom"),
    ])
    assert summary.as_dict() == {"tables": 2, "hours_compacted": 2, "files_before": 12, "files_after": 2,
                                 "rows": 400, "conflicts": 1, "snapshots_expired": 3, "orphans_removed": 2,
                                 "errors": {"conn": "CommitFailedException: boom"}}


def test_failpoints_name_known_steps_only() -> None:
    assert Failpoints("committed@2").nth == 2
    with pytest.raises(ValueError, match="written"):
        Failpoints("claimed")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    compact.add_arguments(parser)
    return parser.parse_args(argv)


def test_compact_takes_iceberg_without_output_and_refuses_neither() -> None:
    assert parse("--iceberg", "--dry-run").iceberg is True
    assert compact.run(parse()) == 2
