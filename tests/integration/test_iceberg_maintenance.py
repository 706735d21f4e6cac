"""Iceberg maintenance (iceberg/maintenance.py) on real catalogs: SQLite with a local warehouse, one test on
PostgreSQL, and the real `zeek-pipeline compact --iceberg` process (also killed with SIGKILL mid-run).

Tables hold the shipped real Zeek sample (dns, typed as the writer types it), committed in many small
exactly-once appends; half of the records are moved one hour later so a table has two hours. Every check reads
back with pyiceberg scans and with DuckDB's read_parquet over the data files the table lists.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from tests.infra import s3_fixtures
from tests.infra.s3 import S3Server
from tests.infra.service_process import CONFIG, ZEEK, clean_env
from tests.integration.test_iceberg_tables import (
    NAMESPACE,
    TOPIC,
    data_files,
    lineage,
    next_offsets,
    settings_for,
    slice_offsets,
    typed,
)
from zeek_pipeline.core.schema import OFFSET_COLUMN, ZeekSchema, load_schema
from zeek_pipeline.core.schema import arrow_schema as parquet_schema
from zeek_pipeline.core.transform import Transformer
from zeek_pipeline.iceberg.catalog import ensure_table, open_catalog
from zeek_pipeline.iceberg.cleanup import DAY, CleanupOptions, expire_snapshots, remove_orphans
from zeek_pipeline.iceberg.commit import commit_exactly_once, committed_offsets, offsets_property
from zeek_pipeline.iceberg.failpoints import ENVIRONMENT
from zeek_pipeline.iceberg.maintenance import MaintenanceOptions, compact_table, maintain_table
from zeek_pipeline.iceberg.rewrite import compact_hour, hours_of
from zeek_pipeline.iceberg.schema import EVENT_TIME, conform
from zeek_pipeline.settings import IcebergCatalog, IcebergOutput, S3Settings

pytestmark = pytest.mark.integration

s3_server = s3_fixtures.s3_server

LOG_TYPE = "dns"
SLICES = 8
NOW_CLOSED = MaintenanceOptions(grace_seconds=0, min_quiet_seconds=0)


@pytest.fixture(scope="module")
def transformer() -> Transformer:
    return Transformer.from_config_dir(CONFIG)


@pytest.fixture(scope="module")
def zeek_schema() -> ZeekSchema:
    return load_schema(CONFIG)


@pytest.fixture(scope="module")
def records(transformer: Transformer, zeek_schema: ZeekSchema) -> pa.Table:
    """The dns sample, records with an odd offset moved one hour later: two closed hours of 2018."""
    rows = typed(LOG_TYPE, transformer, zeek_schema)
    odd = pc.equal(pc.bit_wise_and(rows.column(OFFSET_COLUMN), 1), 1)
    later = pc.add(rows.column(EVENT_TIME), pa.scalar(timedelta(hours=1), pa.duration("us")))
    moved = pc.if_else(odd, later, rows.column(EVENT_TIME)).cast(rows.schema.field(EVENT_TIME).type)
    return rows.set_column(rows.schema.get_field_index(EVENT_TIME), EVENT_TIME, moved)


def open_dns(settings: IcebergOutput, transformer: Transformer, zeek_schema: ZeekSchema) -> Table:
    return ensure_table(open_catalog(settings), NAMESPACE, LOG_TYPE,
                        parquet_schema(LOG_TYPE, zeek_schema, transformer.rules))


def commit_slices(table: Table, records: pa.Table, slices: int = SLICES, stop: int | None = None) -> None:
    """Small exactly-once appends of consecutive offset ranges (each a file per hour), up to offset `stop`."""
    last = stop if stop is not None else max(records.column(OFFSET_COLUMN).to_pylist()) + 1
    step = -(-last // slices)
    for start in range(0, last, step):
        rows = slice_offsets(records, start, min(start + step, last))
        commit_exactly_once(table, TOPIC, conform(rows, table.schema()).table)


def files_per_hour(table: Table) -> dict[int, int]:
    return {hour: len(files.files) for hour, files in hours_of(table).items()}


def duckdb_rows(table: Table) -> list[list[object]]:
    """Per data file the table lists: DuckDB's event_time values, in file order."""
    connection = duckdb.connect()
    return [[row[0] for row in connection.execute(
        "SELECT epoch_us(event_time) FROM read_parquet(?, hive_partitioning = false)", [str(path)]).fetchall()]
        for path in data_files(table)]


def ancestors_between(table: Table, oldest_excluded: int) -> list[Snapshot]:
    """The current snapshot and its ancestors down to (not including) `oldest_excluded`, newest first."""
    found = []
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        if snapshot.snapshot_id == oldest_excluded:
            return found
        found.append(snapshot)
    raise AssertionError(f"snapshot {oldest_excluded} is not an ancestor of the current one")


def assert_exactly(table: Table, expected: Counter[tuple[int, int]], schema: pa.Schema) -> None:
    rows = table.scan().to_arrow()
    assert rows.schema == schema
    found = lineage(table)
    assert found == expected
    assert set(found.values()) == {1}
    connection = duckdb.connect()
    paths = [str(path) for path in data_files(table)]
    count = connection.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning = false)", [paths]).fetchone()
    assert count is not None and count[0] == sum(expected.values())


def test_compaction_merges_small_appends_into_fewer_sorted_files_with_the_same_rows(
        tmp_path: Path, records: pa.Table, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    table = open_dns(settings_for(tmp_path), transformer, zeek_schema)
    commit_slices(table, records)
    before_files = files_per_hour(table)
    assert len(before_files) == 2 and all(count == SLICES for count in before_files.values())
    before_schema = table.scan().to_arrow().schema
    before_lineage = lineage(table)
    before_snapshot = table.current_snapshot()
    assert before_snapshot is not None and sum(before_lineage.values()) == records.num_rows

    done = compact_table(table, NOW_CLOSED)

    assert [(hour.files_before, hour.files_after) for hour in done] == [(SLICES, 1), (SLICES, 1)]
    assert sum(hour.rows for hour in done) == records.num_rows
    assert files_per_hour(table) == dict.fromkeys(before_files, 1)
    assert_exactly(table, before_lineage, before_schema)
    for values in duckdb_rows(table):
        assert values == sorted(values) and len(values) > 1
    rewrites = list(ancestors_between(table, before_snapshot.snapshot_id))
    assert [snapshot.snapshot_id for snapshot in rewrites] == [hour.snapshot_id for hour in reversed(done)]
    for snapshot in rewrites:  # ONE overwrite snapshot per hour, each carrying the offsets map forward
        assert snapshot.summary is not None and snapshot.summary.operation.value == "overwrite"
        assert snapshot.summary["deleted-data-files"] == str(SLICES)
        assert snapshot.summary["added-data-files"] == "1"
        assert offsets_property(TOPIC) in snapshot.summary.additional_properties
    assert committed_offsets(table, TOPIC) == next_offsets(records)
    # time travel: the snapshot before the rewrite still reads the same rows from the small files
    old = table.scan(snapshot_id=before_snapshot.snapshot_id).to_arrow()
    assert Counter(zip(old.column("_kafka_partition").to_pylist(), old.column(OFFSET_COLUMN).to_pylist(),
                       strict=True)) == before_lineage
    # a second run finds nothing worth rewriting
    assert compact_table(table, NOW_CLOSED) == []


def test_compaction_writes_files_of_about_the_target_size_sorted_across_them(
        tmp_path: Path, records: pa.Table, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    table = open_dns(settings_for(tmp_path), transformer, zeek_schema)
    commit_slices(table, records, slices=20)
    hour = max(hours_of(table).values(), key=lambda item: item.hour)
    target = hour.size // 4  # four files' worth of bytes
    expected = lineage(table)

    done = compact_table(table, MaintenanceOptions(grace_seconds=0, min_quiet_seconds=0, target_bytes=target))

    assert all(1 < result.files_after < result.files_before for result in done), done
    merged = hours_of(table)[hour.hour]
    assert len(merged.files) == hour.planned_files(target)
    per_file = [values for values in duckdb_rows(table) if values]
    assert all(values == sorted(values) for values in per_file)
    assert lineage(table) == expected


def test_a_late_append_between_the_rewrites_read_and_its_commit_loses_and_duplicates_nothing(
        tmp_path: Path, records: pa.Table, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    settings = settings_for(tmp_path)
    table = open_dns(settings, transformer, zeek_schema)
    last = max(records.column(OFFSET_COLUMN).to_pylist()) + 1
    commit_slices(table, records, stop=last - 10)
    late = slice_offsets(records, last - 10, last)  # both hours get late records
    writer = open_dns(settings, transformer, zeek_schema)  # the writer's own table object and connection
    hour = min(hours_of(table))
    appended = []

    def late_append() -> None:
        appended.append(commit_exactly_once(writer, TOPIC, conform(late, writer.schema()).table))

    result = compact_hour(table, hour, target_bytes=NOW_CLOSED.target_bytes, grace_seconds=0, min_quiet_seconds=0,
                          before_commit=late_append)

    assert appended and appended[0].appended == late.num_rows
    table.refresh()
    expected = Counter(zip(records.column("_kafka_partition").to_pylist(),
                           records.column(OFFSET_COLUMN).to_pylist(), strict=True))
    assert_exactly(table, expected, table.scan().to_arrow().schema)
    assert committed_offsets(table, TOPIC) == next_offsets(records)  # the late commit's map, not the stale one
    assert result is not None and result.conflicts == 1  # the first rewrite was refused, the re-plan went in
    assert files_per_hour(table)[hour] == 1
    leftovers = set((tmp_path / "warehouse").rglob("*.parquet")) - set(data_files(table))
    snapshot_files = {Path(task.file.file_path.removeprefix("file://")) for snapshot in table.snapshots()
                      for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files()}
    assert leftovers <= snapshot_files  # the refused rewrite's files were deleted, not left behind


def test_expiry_keeps_the_offsets_map_readable_and_the_current_snapshot(
        tmp_path: Path, records: pa.Table, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    table = open_dns(settings_for(tmp_path), transformer, zeek_schema)
    commit_slices(table, records)
    compact_table(table, NOW_CLOSED)
    # another tool's delete on top: the newest snapshot then has no offsets map of its own
    table.delete(f"{OFFSET_COLUMN} == 0")
    current = table.current_snapshot()
    assert current is not None and current.summary is not None
    assert offsets_property(TOPIC) not in current.summary.additional_properties
    count_before = len(table.snapshots())

    expired = expire_snapshots(table, now=time.time() + 2 * DAY,
                               options=CleanupOptions(max_snapshot_age_seconds=DAY, keep_last=1))

    assert expired and len(table.snapshots()) == count_before - len(expired)
    current_after = table.current_snapshot()
    assert current_after is not None and current_after.snapshot_id == current.snapshot_id
    assert committed_offsets(table, TOPIC) == next_offsets(records)
    assert table.scan().to_arrow().num_rows == records.num_rows - 3  # offset 0 of each partition deleted


def test_orphan_removal_deletes_an_old_unreferenced_file_only(
        tmp_path: Path, records: pa.Table, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    table = open_dns(settings_for(tmp_path), transformer, zeek_schema)
    commit_slices(table, records)
    referenced = data_files(table)
    folder = referenced[0].parent
    old, fresh = folder / "old-orphan.parquet", folder / "in-flight.parquet"
    for path in (old, fresh):
        path.write_bytes(referenced[0].read_bytes())
    four_days_ago = time.time() - 4 * DAY
    os.utime(old, (four_days_ago, four_days_ago))
    for path in referenced:  # referenced files as old: age alone never makes a file an orphan
        os.utime(path, (four_days_ago, four_days_ago))

    removed = remove_orphans(table, now=time.time(), options=CleanupOptions())

    assert removed == [f"file://{old}"]
    assert not old.exists() and fresh.exists()
    assert all(path.exists() for path in referenced)
    assert table.scan().to_arrow().num_rows == records.num_rows


def test_compaction_expiry_and_orphans_on_a_postgres_catalog(
        postgres_catalog_uri: str, tmp_path: Path, records: pa.Table, transformer: Transformer,
        zeek_schema: ZeekSchema) -> None:
    settings = IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=postgres_catalog_uri,
                                                                  warehouse=str(tmp_path / "warehouse")))
    table = open_dns(settings, transformer, zeek_schema)
    commit_slices(table, records)
    expected = lineage(table)
    schema = table.scan().to_arrow().schema
    before = table.current_snapshot()
    assert before is not None

    summary = maintain_table(table, NOW_CLOSED, now=time.time)
    later = maintain_table(table, MaintenanceOptions(
        grace_seconds=0, min_quiet_seconds=0,
        cleanup=CleanupOptions(max_snapshot_age_seconds=0, keep_last=1, orphan_min_age_seconds=0)),
        now=lambda: time.time() + 1)

    assert [(hour.files_before, hour.files_after) for hour in summary.hours] == [(SLICES, 1), (SLICES, 1)]
    assert later.hours == [] and later.snapshots_expired >= SLICES
    assert later.orphans_removed >= 2 * SLICES  # the small files, unreferenced once their snapshots expired
    assert_exactly(table, expected, schema)
    assert committed_offsets(table, TOPIC) == next_offsets(records)
    assert table.metadata.snapshot_by_id(before.snapshot_id) is None


def test_maintenance_on_an_s3_warehouse_removes_old_orphans_through_the_file_io(
        s3_server: S3Server, tmp_path: Path, records: pa.Table, transformer: Transformer,
        zeek_schema: ZeekSchema) -> None:
    bucket = s3_server.create_bucket("iceberg-maintenance")
    s3 = S3Settings(endpoint=s3_server.endpoint, region=s3_server.region, scheme="http",
                    access_key=SecretStr(s3_server.access_key), secret_key=SecretStr(s3_server.secret_key))
    settings = IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                                                                  warehouse=f"s3://{bucket}/lake", s3=s3))
    table = open_dns(settings, transformer, zeek_schema)
    commit_slices(table, records)
    expected = lineage(table)
    filesystem = s3_server.filesystem()
    stray = f"{bucket}/lake/zeek/dns/data/stray.parquet"
    with filesystem.open_output_stream(stray) as stream:
        stream.write(b"not referenced by any snapshot")
    cleanup = CleanupOptions(max_snapshot_age_seconds=0, keep_last=1)  # orphans: the default 3 days

    today = maintain_table(table, MaintenanceOptions(grace_seconds=0, min_quiet_seconds=0, cleanup=cleanup))
    in_four_days = maintain_table(table, MaintenanceOptions(grace_seconds=0, min_quiet_seconds=0, cleanup=cleanup),
                                  now=lambda: time.time() + 4 * DAY)

    assert len(today.hours) == 2 and today.snapshots_expired >= SLICES and today.orphans_removed == 0
    assert in_four_days.orphans_removed >= 2 * SLICES + 1  # the small files of expired snapshots and the stray
    assert filesystem.get_file_info(stray).type.name == "NotFound"
    files = [task.file.file_path for task in table.scan().plan_files()]
    assert len(files) == 2
    read = pa.concat_tables([pq.read_table(path.removeprefix("s3://"), filesystem=filesystem) for path in files])
    assert read.num_rows == records.num_rows and read.schema.field(OFFSET_COLUMN).type == pa.int64()
    assert lineage(table) == expected and set(lineage(table).values()) == {1}
    assert committed_offsets(table, TOPIC) == next_offsets(records)


def config_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env({"ZEEK_PIPELINE_OUTPUT__ICEBERG__ENABLED": "true",
                      "ZEEK_PIPELINE_OUTPUT__ICEBERG__CATALOG__URI": f"sqlite:///{tmp_path / 'catalog.db'}",
                      "ZEEK_PIPELINE_OUTPUT__ICEBERG__CATALOG__WAREHOUSE": str(tmp_path / "warehouse"),
                      "ZEEK_PIPELINE_LOG__PATH": str(tmp_path / "log"), **extra})


def compact_iceberg(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(ZEEK), "compact", "--iceberg", "--config", str(CONFIG), "--grace-seconds", "0",
                           "--min-quiet-seconds", "0", *flags], env=config_env(tmp_path, **env),
                          capture_output=True, timeout=300, check=False)


def summary_of(process: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    line: dict[str, object] = orjson.loads(process.stdout.splitlines()[-1])
    return line


def test_compact_iceberg_command_prints_a_json_summary(
        tmp_path: Path, records: pa.Table, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    table = open_dns(settings_for(tmp_path), transformer, zeek_schema)
    commit_slices(table, records)
    expected = lineage(table)

    planned = summary_of(compact_iceberg(tmp_path, "--dry-run"))
    done = summary_of(compact_iceberg(tmp_path))

    common = {"tables": 1, "hours_compacted": 2, "files_before": 2 * SLICES, "files_after": 2,
              "rows": records.num_rows, "snapshots_expired": 0, "orphans_removed": 0, "errors": {}}
    assert {key: planned[key] for key in common} == common and planned["dry_run"] is True
    assert {key: done[key] for key in common} == common and done["dry_run"] is False
    table.refresh()
    assert list(files_per_hour(table).values()) == [1, 1]
    assert lineage(table) == expected


@pytest.mark.parametrize("failpoint", ["written", "committed", "committed@2", "expired"])
def test_compact_iceberg_killed_mid_run_leaves_every_row_exactly_once(
        failpoint: str, tmp_path: Path, records: pa.Table, transformer: Transformer,
        zeek_schema: ZeekSchema) -> None:
    table = open_dns(settings_for(tmp_path), transformer, zeek_schema)
    commit_slices(table, records)
    expected = lineage(table)
    schema = table.scan().to_arrow().schema

    killed = compact_iceberg(tmp_path, **{ENVIRONMENT: failpoint})

    assert killed.returncode == -9, killed.stderr.decode()[-3000:]
    table.refresh()
    assert_exactly(table, expected, schema)
    assert committed_offsets(table, TOPIC) == next_offsets(records)
    done = summary_of(compact_iceberg(tmp_path))
    table.refresh()
    assert files_per_hour(table) == dict.fromkeys(files_per_hour(table), 1)
    assert done["errors"] == {}
    assert_exactly(table, expected, schema)
