"""Write one output of a plan: the rows of its inputs sorted by event_time, read in bounded slices.

Sorting needs the rows together, but an output of 128 MB of zstd Parquet is several times that in Arrow
memory. So the output is written in time slices: the bin's event_time span (from the footers) is cut into
as many equal slices as its input bytes need to stay under `slice_bytes` each; for each slice, every input
whose span overlaps it is decoded (one at a time), filtered to the slice, and the pieces are sorted and
appended as row groups. Writer files cover about one flush interval each, so most are decoded once; a file
whose rows spread over the whole hour is decoded once per slice (the CPU cost of the bound). Rows without
event_time go with the last slice. Memory: one slice of Arrow rows and its sorted copy, plus one decoded
input file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zeek_pipeline import __version__
from zeek_pipeline.compaction.plan import TIME_COLUMN, Bin
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN
from zeek_pipeline.writer.memory import Releaser
from zeek_pipeline.writer.parquet_file import META_WRITER, ParquetOptions
from zeek_pipeline.writer.storage import Storage, as_storage_error

META_COMPACTED_FROM = b"zeek_pipeline.compacted_from"  # JSON list of the writer files merged into this one
META_COMPACTED_BY = b"zeek_pipeline.compacted_by"  # the compaction run
# Per-file keys of a writer file that say nothing true of a merged one (its rows span partitions and offsets).
PER_FILE_KEYS = frozenset({b"zeek_pipeline.kafka_topic", b"zeek_pipeline.kafka_partition",
                           b"zeek_pipeline.first_offset", b"zeek_pipeline.last_offset", b"ARROW:schema"})


release = Releaser()


class MergeError(Exception):
    """An output does not hold exactly the rows of its inputs: the run must not commit it."""


def output_metadata(plan: Bin, run: str) -> dict[bytes, bytes]:
    """The first input's key/value metadata (log type, schema and layout version), minus per-file keys,
    plus where the rows came from (names of the original writer files, flattened over earlier merges)."""
    first = plan.files[0].schema.metadata or {}
    meta = {k: v for k, v in first.items() if k not in PER_FILE_KEYS}
    sources: list[str] = []
    for f in plan.files:
        earlier = (f.schema.metadata or {}).get(META_COMPACTED_FROM)
        sources.extend(orjson.loads(earlier) if earlier else [f.rel.rsplit("/", 1)[-1]])
    meta[META_COMPACTED_FROM] = orjson.dumps(sorted(sources))
    meta[META_COMPACTED_BY] = run.encode()
    meta[META_WRITER] = f"zeek-pipeline {__version__} compact".encode()
    return meta


@dataclass(frozen=True, slots=True)
class Slice:
    """Rows with low <= event_time < high (None: unbounded on that side), plus the rows without a time if
    `nulls`. The slices of a bin split its rows: every row is in exactly one."""

    low: int | None  # microseconds since the epoch
    high: int | None
    nulls: bool

    def overlaps(self, first: float | None, last: float | None) -> bool:
        if first is None or last is None:
            return True  # no statistics: the file may hold anything
        return ((self.high is None or first * 1_000_000 < self.high + 1)
                and (self.low is None or last * 1_000_000 >= self.low - 1))

    def mask(self, column: pa.ChunkedArray) -> pa.ChunkedArray:
        kind = column.type
        conditions = []
        if self.low is not None:
            conditions.append(pc.greater_equal(column, _scalar(self.low, kind)))
        if self.high is not None:
            conditions.append(pc.less(column, _scalar(self.high, kind)))
        if not conditions:
            keep = pc.is_valid(column)
        else:
            keep = conditions[0] if len(conditions) == 1 else pc.and_(conditions[0], conditions[1])
            keep = pc.fill_null(keep, False)
        return pc.or_(keep, pc.is_null(column)) if self.nulls else keep


def _scalar(micros: int, kind: pa.DataType) -> pa.Scalar:
    return pa.scalar(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")).cast(kind)


def slices(plan: Bin, slice_bytes: int) -> list[Slice]:
    """As many equal time slices as the bin's input bytes need to keep each under `slice_bytes`; the first
    is open below and the last open above (whatever the precision of the statistics), the last also takes
    the rows without a time."""
    lows = [f.min_time for f in plan.files if f.min_time is not None]
    highs = [f.max_time for f in plan.files if f.max_time is not None]
    count = max(1, math.ceil(plan.bytes / slice_bytes))
    if count == 1 or not lows or not highs:
        return [Slice(None, None, nulls=True)]
    low_us = math.floor(min(lows) * 1_000_000)
    step = max(1, (math.ceil(max(highs) * 1_000_000) + 1 - low_us) // count)
    cuts = [low_us + i * step for i in range(1, count)]
    bounds = [None, *cuts, None]
    return [Slice(bounds[i], bounds[i + 1], nulls=i == count - 1) for i in range(count)]


def _sort_keys(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(name, "ascending") for name in (TIME_COLUMN, PARTITION_COLUMN, OFFSET_COLUMN) if name in schema.names]


def _read_slice(storage: Storage, plan: Bin, part: Slice, schema: pa.Schema) -> pa.Table | None:
    """The rows of one slice, one input file decoded at a time (a file outside the slice is not read)."""
    pieces = []
    for f in plan.files:
        if not part.overlaps(f.min_time, f.max_time):
            continue
        fs, path = storage.arrow_path(f.rel)
        with fs.open_input_file(path) as source:
            table = pq.ParquetFile(source).read().replace_schema_metadata(None)
        if part.low is not None or part.high is not None:
            table = table.filter(part.mask(table.column(TIME_COLUMN)))
        if table.num_rows:
            pieces.append(table.cast(schema))
        del table
    return pa.concat_tables(pieces) if pieces else None


def merge(storage: Storage, plan: Bin, staged: str, run: str, options: ParquetOptions, slice_bytes: int) -> int:
    """Write the merged, sorted rows of `plan` to `staged` (synced); returns its size in bytes."""
    schema = plan.files[0].schema.remove_metadata()
    meta = output_metadata(plan, run)
    timed = TIME_COLUMN in schema.names
    parts = slices(plan, slice_bytes) if timed else [Slice(None, None, nulls=True)]
    level = options.compression_level if options.compression in ("zstd", "gzip", "brotli") else None
    written = 0
    try:
        with storage.open_output(staged) as sink, pq.ParquetWriter(
                sink, schema.with_metadata(meta), compression=options.codec, compression_level=level,
                use_dictionary=options.dictionary, write_statistics=options.statistics) as writer:
            for part in parts:
                table = _read_slice(storage, plan, part, schema)
                if table is None:
                    continue
                if timed:
                    table = table.take(pc.sort_indices(table, sort_keys=_sort_keys(schema)))
                writer.write_table(table.replace_schema_metadata(meta), row_group_size=options.row_group_size)
                written += table.num_rows
                del table
                release(force=True)  # the slice's memory back to the system before the next one
    except (OSError, pa.ArrowException) as exc:
        raise as_storage_error("merge into", staged, exc) from exc
    if written != plan.rows:
        raise MergeError(f"{staged}: wrote {written} rows, the inputs hold {plan.rows}")
    storage.sync(staged)
    return storage.size(staged)
