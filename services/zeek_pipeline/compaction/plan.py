"""The plan of one hour: which input files go into which output, from their footers alone.

Files are grouped by schema (column names and types; the layout or enrichment may have changed within an
hour, and such files are kept apart rather than promoted), ordered by their earliest event_time, and packed
greedily into outputs of at most the target size (compressed input bytes: merged files compress at least
as well). Packing in time order gives outputs that cover mostly disjoint time ranges, so row-group
statistics prune time ranges across outputs too. A file already at the target size stays as it is; an
output of one input would only rewrite it, so such bins are dropped. Each file's row groups are kept too
(rows, uncompressed bytes, event_time span): merge.py sizes its slices by them, not by compressed bytes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from zeek_pipeline.writer.storage import FileEntry, Storage, as_storage_error

TIME_COLUMN = "event_time"


@dataclass(frozen=True, slots=True)
class RowGroup:
    """One row group's footer entry: what a slice needs to know before deciding to decode it."""

    index: int
    rows: int
    uncompressed: int  # the pages' bytes before compression (an estimate of the decoded size; merge.py scales it)
    min_time: float | None  # event_time span (epoch seconds); None: no statistics, or no row has a time
    max_time: float | None
    untimed_rows: bool  # may hold rows without an event_time (they go with the last slice)


@dataclass(frozen=True, slots=True)
class InputFile:
    rel: str
    bytes: int
    rows: int
    schema: pa.Schema  # with the file's key/value metadata
    schema_key: str  # the schema without metadata: files with equal keys can share an output
    min_time: float | None  # event_time span from the row-group statistics (epoch seconds)
    max_time: float | None
    groups: tuple[RowGroup, ...] = ()

    @property
    def uncompressed(self) -> int:
        return sum(g.uncompressed for g in self.groups)


@dataclass(slots=True)
class Bin:
    files: list[InputFile] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def epoch_seconds(value: object) -> float | None:
    """An event_time statistic (or value) as seconds since the epoch."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value) / 1_000_000  # a raw int64 timestamp statistic (microseconds)
    return None


def row_groups(metadata: pq.FileMetaData) -> tuple[RowGroup, ...]:
    """Rows, uncompressed bytes and event_time span of each row group, from the footer alone."""
    groups = []
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        low: float | None = None
        high: float | None = None
        untimed = True  # without statistics for event_time, assume the worst
        for j in range(group.num_columns):
            column = group.column(j)
            if column.path_in_schema != TIME_COLUMN:
                continue
            stats = column.statistics
            if stats is not None and stats.has_min_max:
                low, high = epoch_seconds(stats.min), epoch_seconds(stats.max)
            if low is None or high is None:
                low = high = None
            untimed = stats is None or low is None or stats.null_count != 0
        groups.append(RowGroup(i, group.num_rows, group.total_byte_size, low, high, untimed))
    return tuple(groups)


def time_span(metadata: pq.FileMetaData) -> tuple[float | None, float | None]:
    """min/max of event_time over the row groups; None when a row group has no statistics for it."""
    lows: list[float] = []
    highs: list[float] = []
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        for j in range(group.num_columns):
            column = group.column(j)
            if column.path_in_schema != TIME_COLUMN:
                continue
            stats = column.statistics
            if stats is None or not stats.has_min_max:
                if group.num_rows and (stats is None or stats.null_count != group.num_rows):
                    return None, None
                continue
            low, high = epoch_seconds(stats.min), epoch_seconds(stats.max)
            if low is None or high is None:
                return None, None
            lows.append(low)
            highs.append(high)
    return (min(lows), max(highs)) if lows else (None, None)


def read_input(storage: Storage, entry: FileEntry) -> InputFile:
    """The footer of one file: rows, schema, event_time span (one small read, never the data)."""
    fs, path = storage.arrow_path(entry.rel)
    try:
        with fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            metadata, schema = parquet.metadata, parquet.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        raise as_storage_error("read footer", entry.rel, exc) from exc
    low, high = time_span(metadata)
    return InputFile(entry.rel, entry.size, metadata.num_rows, schema, schema.remove_metadata().to_string(),
                     low, high, row_groups(metadata))


def plan_bins(files: list[InputFile], target_bytes: int) -> list[Bin]:
    """Outputs of two or more inputs each, at most `target_bytes` of input (one input over it stays alone)."""
    by_schema: dict[str, list[InputFile]] = {}
    for f in files:
        by_schema.setdefault(f.schema_key, []).append(f)
    bins: list[Bin] = []
    for group in by_schema.values():
        group.sort(key=lambda f: (f.min_time is None, f.min_time or 0.0, f.rel))
        current = Bin()
        for f in group:
            if f.bytes >= target_bytes:
                continue
            if current.files and current.bytes + f.bytes > target_bytes:
                bins.append(current)
                current = Bin()
            current.files.append(f)
        bins.append(current)
    return [b for b in bins if len(b.files) >= 2]
