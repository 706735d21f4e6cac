"""Compaction of a table's closed hours: an hour's small data files replaced by few sorted ones in ONE snapshot.

An hour (partition `event_time_hour`) is closed once its end plus `grace_seconds` has passed and no snapshot
added a file to it for `min_quiet_seconds`. It is rewritten when the files it would become are fewer than
the files it has: read them, sort by event_time, write files of about `target_bytes` and commit one
`overwrite` snapshot that deletes the old files and adds the new ones.

Why a late append cannot be lost or doubled: the snapshot is built on the snapshot the hour was read from
(its parent) and the catalog accepts it only if the branch still points there (SQL: compare-and-swap of
`metadata_location`; REST: `assert-ref-snapshot-id`). A writer's append in between moves the branch, the
rewrite fails with CommitFailedException, its new files are deleted and the hour is planned again from the
new snapshot (with the late file), or skipped because it is no longer quiet. pyiceberg's own retry, which
would rebuild the rewrite on the newer snapshot with the stale offsets map, must be off
(catalog.NO_PYICEBERG_RETRY); `rewrite_hour` refuses a table where it is on.

The new snapshot carries forward every `zeek.kafka.offsets.<topic>` map of its parent's history, so
`commit.committed_offsets` finds the map in the current snapshot and snapshot expiry cannot orphan it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from zeek_pipeline.iceberg.commit import OFFSETS_PREFIX
from zeek_pipeline.iceberg.failpoints import Failpoints
from zeek_pipeline.iceberg.schema import EVENT_TIME

log = logging.getLogger(__name__)

HOUR_SECONDS = 3600
# Far above any target: each call of pyiceberg's writer gets one chunk of rows and makes one file of it.
_NO_SPLIT = str(1 << 62)


class RewriteError(RuntimeError):
    """The table cannot be rewritten safely (pyiceberg's own commit retry is on)."""


@dataclass(frozen=True, slots=True)
class HourFiles:
    """The live data files of one hour of the current snapshot, and when a snapshot last added one."""

    hour: int  # hours since the epoch: the partition value of hours(event_time)
    files: tuple[DataFile, ...]
    last_added_ms: int
    has_deletes: bool = False

    @property
    def rows(self) -> int:
        return sum(file.record_count for file in self.files)

    @property
    def size(self) -> int:
        return sum(file.file_size_in_bytes for file in self.files)

    def rows_per_file(self, target_bytes: int) -> int:
        """Rows of about `target_bytes` on disk, from the bytes per row the hour's files have now."""
        return max(1, target_bytes * self.rows // max(1, self.size))

    def planned_files(self, target_bytes: int) -> int:
        return math.ceil(self.rows / self.rows_per_file(target_bytes)) if self.rows else 0


@dataclass(frozen=True, slots=True)
class HourRewrite:
    """What one hour's rewrite did (or, in a dry run, would do)."""

    hour: int
    files_before: int
    files_after: int
    rows: int
    snapshot_id: int | None = None
    conflicts: int = 0


def hours_of(table: Table) -> dict[int, HourFiles]:
    """The current snapshot's live data files grouped by hour (files of an older partition spec are left out)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {}
    spec_id = table.spec().spec_id
    files: dict[int, list[DataFile]] = {}
    added: dict[int, int] = {}
    deletes: set[int] = set()
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            data_file = entry.data_file
            hour = data_file.partition[0] if data_file.spec_id == spec_id else None
            if hour is None:
                continue
            if manifest.content != ManifestContent.DATA or data_file.content != DataFileContent.DATA:
                deletes.add(hour)
                continue
            files.setdefault(hour, []).append(data_file)
            source = table.metadata.snapshot_by_id(entry.snapshot_id) if entry.snapshot_id is not None else None
            added[hour] = max(added.get(hour, 0), source.timestamp_ms if source is not None else 0)
    return {hour: HourFiles(hour, tuple(hour_files), added[hour], hour in deletes)
            for hour, hour_files in files.items()}


def closed_hours(table: Table, *, now: float, grace_seconds: float, min_quiet_seconds: float,
                 target_bytes: int) -> list[HourFiles]:
    """The hours worth rewriting: closed, quiet, without delete files, and fewer files after than before."""
    chosen = []
    for hour in sorted(hours_of(table).values(), key=lambda item: item.hour):
        closed = (hour.hour + 1) * HOUR_SECONDS + grace_seconds <= now
        quiet = hour.last_added_ms / 1000 + min_quiet_seconds <= now
        if closed and quiet and not hour.has_deletes and hour.planned_files(target_bytes) < len(hour.files):
            chosen.append(hour)
    return chosen


def carried_offsets(table: Table, base: Snapshot | None) -> dict[str, str]:
    """Every offsets map of `base`'s history, newest first wins: what the rewrite's snapshot must carry."""
    carried: dict[str, str] = {}
    for snapshot in ancestors_of(base, table.metadata):
        for key, value in (snapshot.summary.additional_properties if snapshot.summary else {}).items():
            if key.startswith(OFFSETS_PREFIX):
                carried.setdefault(key, value)
    return carried


def _sorted_rows(table: Table, hour: HourFiles) -> pa.Table:
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    rows = scan.to_table([FileScanTask(data_file) for data_file in hour.files])
    return rows.sort_by([(EVENT_TIME, "ascending")]) if rows.num_rows > 1 else rows


def _chunks(rows: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, rows.num_rows, size):
        yield rows.slice(start, size)


def _write(table: Table, rows: pa.Table, rows_per_file: int) -> list[DataFile]:
    """The sorted rows as data files of `rows_per_file` rows each (written, not committed)."""
    metadata = table.metadata.model_copy(update={"properties": {
        **table.metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES: _NO_SPLIT}})
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    written: list[DataFile] = []
    for chunk in _chunks(rows, rows_per_file):
        written.extend(_dataframe_to_data_files(metadata, chunk, table.io, write_uuid, counter))
    return written


def _delete_quietly(table: Table, files: list[DataFile]) -> None:
    for data_file in files:
        try:
            table.io.delete(data_file.file_path)
        except OSError:
            log.warning("could not delete %s (left for the orphan removal)", data_file.file_path, exc_info=True)


def check_no_pyiceberg_retry(table: Table) -> None:
    retries = table.properties.get(TableProperties.COMMIT_NUM_RETRIES)
    if retries != "0":
        raise RewriteError(f"{table.name()}: table property {TableProperties.COMMIT_NUM_RETRIES} is {retries!r}; "
                           "pyiceberg's own retry would rebuild a rewrite on a newer snapshot with a stale "
                           "offsets map (open the table with catalog.ensure_table, which sets it to 0)")


def _commit(table: Table, hour: HourFiles, written: list[DataFile], base: Snapshot | None) -> int:
    """One overwrite snapshot: the hour's files out, the written ones in; conditional on `base` still current."""
    transaction = table.transaction()
    with transaction.update_snapshot(snapshot_properties=carried_offsets(table, base)).overwrite() as producer:
        for data_file in hour.files:
            producer.delete_data_file(data_file)
        for data_file in written:
            producer.append_data_file(data_file)
        snapshot_id = producer.snapshot_id
    transaction.commit_transaction()
    return snapshot_id


def rewrite_hour(table: Table, hour: HourFiles, *, target_bytes: int,
                 before_commit: Callable[[], None] | None = None,
                 failpoints: Failpoints | None = None) -> HourRewrite:
    """Rewrite one hour of `table` as planned from its current snapshot; raises CommitFailedException when
    another commit moved the table meanwhile (nothing changed then, and the written files are removed)."""
    check_no_pyiceberg_retry(table)
    base = table.current_snapshot()
    rows = _sorted_rows(table, hour)
    written = _write(table, rows, hour.rows_per_file(target_bytes))
    if failpoints is not None:
        failpoints.hit("written")
    if before_commit is not None:
        before_commit()
    try:
        snapshot_id = _commit(table, hour, written, base)
    except CommitFailedException:
        _delete_quietly(table, written)  # the catalog refused it: nothing references them
        raise
    except CommitStateUnknownException:
        table.refresh()
        if _landed(table, written):
            return HourRewrite(hour.hour, len(hour.files), len(written), rows.num_rows)
        raise  # unknown: the written files are left to the orphan removal, which sees whether they are used
    if failpoints is not None:
        failpoints.hit("committed")
    return HourRewrite(hour.hour, len(hour.files), len(written), rows.num_rows, snapshot_id)


def _landed(table: Table, written: list[DataFile]) -> bool:
    paths = {data_file.file_path for data_file in written}
    return any(data_file.file_path in paths for hour in hours_of(table).values() for data_file in hour.files)


def compact_hour(table: Table, hour: int, *, target_bytes: int, grace_seconds: float, min_quiet_seconds: float,
                 attempts: int = 3, now: Callable[[], float] = time.time,
                 before_commit: Callable[[], None] | None = None,
                 failpoints: Failpoints | None = None) -> HourRewrite | None:
    """Rewrite `hour` if it is (still) worth it, re-planning after each conflict; None when it no longer is
    (a late append made it un-quiet) or it kept conflicting `attempts` times (the next run tries again)."""
    conflicts = 0
    for _ in range(attempts):
        planned = {item.hour: item for item in closed_hours(
            table, now=now(), grace_seconds=grace_seconds, min_quiet_seconds=min_quiet_seconds,
            target_bytes=target_bytes)}
        if hour not in planned:
            return None
        try:
            done = rewrite_hour(table, planned[hour], target_bytes=target_bytes,
                                before_commit=before_commit if conflicts == 0 else None, failpoints=failpoints)
        except CommitFailedException:
            conflicts += 1
            log.info("rewrite of %s hour %d conflicted with another commit; re-planning", table.name(), hour)
            table.refresh()
            continue
        table.refresh()
        return HourRewrite(done.hour, done.files_before, done.files_after, done.rows, done.snapshot_id, conflicts)
    log.warning("rewrite of %s hour %d conflicted %d times; left for the next run", table.name(), hour, conflicts)
    return None
