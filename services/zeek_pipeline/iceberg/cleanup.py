"""Snapshot expiry and orphan-file removal, with defaults that cannot break a reader, a writer or exactly-once.

Expiry removes snapshots older than `max_snapshot_age_seconds` from the table's metadata, except:
the current snapshot (and every branch or tag head), the `keep_last` newest snapshots of the current branch,
and, for each `zeek.kafka.offsets.<topic>` map, the newest snapshot carrying it together with every snapshot
between it and the current one. `commit.committed_offsets` walks the parent chain from the current snapshot
back to the first map: a gap in that chain would end the walk early and the writer would replay, so the
chain is kept whole. Expiry only edits metadata; it deletes no file.

Orphan removal deletes files under the table location that no remaining snapshot, manifest, manifest list or
metadata log entry references, and only when older than `orphan_min_age_seconds`: a writer writes its data
files before its commit, so a young unreferenced file may be part of a commit in flight. The listing is made
before the table is reloaded, so a file that was committed meanwhile is seen as referenced. Files are listed
and deleted through the table's FileIO (local disk and S3 alike).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from pyarrow.fs import FileSelector, FileType
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import ancestors_of

from zeek_pipeline.iceberg.commit import OFFSETS_PREFIX

log = logging.getLogger(__name__)

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class CleanupOptions:
    max_snapshot_age_seconds: float = DAY
    keep_last: int = 10
    orphan_min_age_seconds: float = 3 * DAY


def protected_snapshots(table: Table, keep_last: int) -> set[int]:
    """Snapshots expiry must keep (see the module doc)."""
    metadata = table.metadata
    keep = {ref.snapshot_id for ref in metadata.refs.values()
            if ref.snapshot_ref_type in (SnapshotRefType.BRANCH, SnapshotRefType.TAG)}
    chain = list(ancestors_of(table.current_snapshot(), metadata))
    keep.update(snapshot.snapshot_id for snapshot in chain[:keep_last])
    maps_seen: set[str] = set()
    deepest = -1
    for depth, snapshot in enumerate(chain):
        keys = {key for key in (snapshot.summary.additional_properties if snapshot.summary else {})
                if key.startswith(OFFSETS_PREFIX)}
        if keys - maps_seen:
            maps_seen |= keys
            deepest = depth
    keep.update(snapshot.snapshot_id for snapshot in chain[:deepest + 1])
    return keep


def expirable_snapshots(table: Table, *, now: float, options: CleanupOptions) -> list[int]:
    cutoff_ms = (now - options.max_snapshot_age_seconds) * 1000
    keep = protected_snapshots(table, options.keep_last)
    return [snapshot.snapshot_id for snapshot in table.metadata.snapshots
            if snapshot.timestamp_ms < cutoff_ms and snapshot.snapshot_id not in keep]


def expire_snapshots(table: Table, *, now: float, options: CleanupOptions, dry_run: bool = False) -> list[int]:
    """Expire what `expirable_snapshots` names; returns their ids. The removal is applied by the catalog to its
    current metadata, so a writer's commit meanwhile is kept (and it only adds a newer snapshot)."""
    expired = expirable_snapshots(table, now=now, options=options)
    if expired and not dry_run:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
        table.refresh()
    return expired


def _location_path(io: PyArrowFileIO, uri: str) -> tuple[str, str, str]:
    return io.parse_location(uri, io.properties)


def referenced_files(table: Table) -> set[str]:
    """Paths (scheme and bucket stripped as in the FileIO's listing) of every file the table's metadata names."""
    io, metadata = table.io, table.metadata
    uris = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    uris.update(statistics.statistics_path for statistics in metadata.statistics)
    uris.update(statistics.statistics_path for statistics in metadata.partition_statistics)
    for snapshot in metadata.snapshots:
        uris.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            uris.add(manifest.manifest_path)
            uris.update(entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io, discard_deleted=False))
    if not isinstance(io, PyArrowFileIO):
        raise TypeError(f"{table.name()}: orphan removal needs pyiceberg's PyArrowFileIO, not {type(io).__name__}")
    return {_location_path(io, uri)[2] for uri in uris}


def _listing(table: Table) -> tuple[str, str, list[tuple[str, datetime | None]]]:
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise TypeError(f"{table.name()}: orphan removal needs pyiceberg's PyArrowFileIO, not {type(io).__name__}")
    scheme, netloc, root = _location_path(io, table.location())
    filesystem = io.fs_by_scheme(scheme, netloc)
    infos = filesystem.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
    return scheme, netloc, [(info.path, info.mtime) for info in infos if info.type == FileType.File]


def _uri(scheme: str, path: str) -> str:
    return f"{scheme}://{path}"  # file:// + /abs/path, s3:// + bucket/key


def orphan_files(table: Table, *, now: float, options: CleanupOptions) -> list[str]:
    """URIs of the unreferenced files under the table location older than the safe age."""
    scheme, _, listed = _listing(table)
    table.refresh()  # after the listing: what was committed meanwhile counts as referenced
    referenced = referenced_files(table)
    cutoff = now - options.orphan_min_age_seconds
    return sorted(_uri(scheme, path) for path, mtime in listed
                  if path not in referenced and mtime is not None and mtime.timestamp() < cutoff)


def remove_orphans(table: Table, *, now: float, options: CleanupOptions, dry_run: bool = False) -> list[str]:
    orphans = orphan_files(table, now=now, options=options)
    if not dry_run:
        for uri in orphans:
            table.io.delete(uri)
            log.info("removed orphan file %s", uri)
    return orphans
