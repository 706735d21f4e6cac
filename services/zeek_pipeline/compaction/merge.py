"""Write one output of a plan: the rows of its inputs sorted by event_time, in slices of bounded decoded size.

Sorting needs the rows together, and an output of 128 MB of zstd Parquet can be 30 times that in Arrow
memory (wide, repetitive rows), so compressed bytes say little about memory. The output is written in time
slices of at most `slice_bytes` of decoded rows (Arrow `nbytes`) each. The next slice's end is chosen from
the footers (each row group's uncompressed bytes spread evenly over its event_time span), scaled by what
the rows really decoded to so far, so that the slice should fill half the budget. For each slice, every row
group overlapping it is decoded in batches of about an eighth of the budget and filtered to the slice; the
slice is then sorted and written in row groups taken from it in sorted order. A slice that outgrows the
budget while it is read is dropped and read again, narrower. Row groups (not whole files) are decoded once
per slice they overlap: the CPU cost of the bound. Rows without event_time go with the last slice; rows
sharing one event_time are never split, so only a single microsecond (or the untimed rows) holding more
than the budget goes over it (logged). An output without an event_time column is not sorted: its rows are
streamed.

Memory: the slice (<= slice_bytes), one output row group taken from it (<= half the slice), one decoded
batch and its filtered copy (an eighth each), the Parquet writer's buffers of one row group (compressed),
plus the fixed cost of the process; the slice's memory goes back to the system before the next one.
docs/writer-durability.md ("Compaction") gives the measured bound.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, replace

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zeek_pipeline import __version__
from zeek_pipeline.compaction.plan import TIME_COLUMN, Bin, InputFile, RowGroup, epoch_seconds
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN
from zeek_pipeline.writer.memory import Releaser
from zeek_pipeline.writer.parquet_file import META_WRITER, ParquetOptions
from zeek_pipeline.writer.storage import Storage, as_storage_error

META_COMPACTED_FROM = b"zeek_pipeline.compacted_from"  # JSON list of the writer files merged into this one
META_COMPACTED_BY = b"zeek_pipeline.compacted_by"  # the compaction run
# Per-file keys of a writer file that say nothing true of a merged one (its rows span partitions and offsets).
PER_FILE_KEYS = frozenset({b"zeek_pipeline.kafka_topic", b"zeek_pipeline.kafka_partition",
                           b"zeek_pipeline.first_offset", b"zeek_pipeline.last_offset", b"ARROW:schema"})


FILL = 0.5  # a slice is planned at half the budget: the estimate may be off twofold before a slice is re-read
BATCH_SHARE = 8  # a decoded batch is at most this fraction of the budget
SAMPLE_ROWS = 256  # decoded up front to learn how much larger than its uncompressed pages a row is

log = logging.getLogger("zeek_pipeline.compaction")
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

    def mask(self, column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
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


class SliceTooLarge(Exception):
    """The rows of a slice outgrew the budget while they were read: read a narrower one."""


def _scalar(micros: int, kind: pa.DataType) -> pa.Scalar:
    return pa.scalar(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")).cast(kind)


class Estimate:
    """How many decoded bytes the bin's timed rows take in [low, high) microseconds: each row group's
    uncompressed bytes spread evenly over its event_time span (a row group without statistics over the
    whole bin), times `ratio`, which the merge learns from what it decodes. The cumulative bytes are a
    piecewise linear function of time, kept as its breakpoints."""

    def __init__(self, plan: Bin, ratio: float) -> None:
        groups = [g for f in plan.files for g in f.groups]
        spans = [(math.floor(g.min_time * 1_000_000), math.ceil(g.max_time * 1_000_000) + 1)
                 if g.min_time is not None and g.max_time is not None else None for g in groups]
        known = [s for s in spans if s is not None]
        self.ratio = ratio
        self.start = min(s[0] for s in known) if known else 0
        self.end = max(s[1] for s in known) if known else 1
        slopes: dict[int, float] = {}
        for group, span in zip(groups, spans, strict=True):
            low, high = span or (self.start, self.end)
            slope = group.uncompressed / (high - low)
            slopes[low] = slopes.get(low, 0.0) + slope
            slopes[high] = slopes.get(high, 0.0) - slope
        self._times = sorted(slopes)
        self._total: list[float] = []  # the cumulative bytes at each breakpoint
        self._slope: list[float] = []  # ... and the bytes per microsecond after it
        total = slope = 0.0
        previous = self.start
        for at in self._times:
            total += slope * (at - previous)
            slope += slopes[at]
            self._total.append(total)
            self._slope.append(slope)
            previous = at

    def _cumulative(self, at: int) -> float:
        k = bisect.bisect_right(self._times, at) - 1
        return 0.0 if k < 0 else self._total[k] + self._slope[k] * (at - self._times[k])

    def bytes(self, low: int, high: int) -> float:
        return (self._cumulative(high) - self._cumulative(low)) * self.ratio

    def next_end(self, low: int, budget: float) -> int | None:
        """The first microsecond after `low` at which [low, end) is estimated to hold `budget` bytes; None
        when the rest of the bin fits (the last slice). Never less than low + 1."""
        if self.bytes(low, self.end) <= budget:
            return None
        target = self._cumulative(low) + budget / self.ratio
        k = max(0, bisect.bisect_left(self._total, target) - 1)  # the segment in which the target is reached
        end = self._times[k] + (target - self._total[k]) / self._slope[k] if self._slope[k] > 0 else self._times[k]
        return min(max(low + 1, math.ceil(end)), self.end)


def _sort_keys(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(name, "ascending") for name in (TIME_COLUMN, PARTITION_COLUMN, OFFSET_COLUMN) if name in schema.names]


def _groups(f: InputFile, part: Slice) -> list[RowGroup]:
    return [g for g in f.groups if part.overlaps(g.min_time, g.max_time) or (part.nulls and g.untimed_rows)]


def _batch_rows(group: RowGroup, width: float, slice_bytes: int) -> int:
    """Rows of about an eighth of the budget, `width` being decoded bytes per uncompressed byte."""
    per_row = max(1.0, group.uncompressed * width / max(1, group.rows))
    return max(64, min(65_536, int(slice_bytes / BATCH_SHARE / per_row)))


def _sample_width(storage: Storage, plan: Bin) -> float:
    """Decoded bytes per uncompressed byte of the first rows of the bin's first non-empty row group."""
    for f in plan.files:
        for g in f.groups:
            if not g.rows or not g.uncompressed:
                continue
            fs, path = storage.arrow_path(f.rel)
            with fs.open_input_file(path) as source:
                batch = next(pq.ParquetFile(source).iter_batches(batch_size=SAMPLE_ROWS, row_groups=[g.index]))
            decoded_per_row: float = batch.nbytes / batch.num_rows
            return max(1.0, decoded_per_row / (g.uncompressed / g.rows))
    return 1.0


def _with_time_spans(storage: Storage, plan: Bin) -> Bin:
    """Row groups without event_time statistics (files written with `statistics` off) get their span from
    the column itself, one row group at a time (8 bytes a row), so that they are sliced like the others."""
    files = []
    for f in plan.files:
        missing = [g for g in f.groups if g.rows and g.min_time is None]
        if missing:
            fs, path = storage.arrow_path(f.rel)
            with fs.open_input_file(path) as source:
                parquet = pq.ParquetFile(source)
                found = {}
                for g in missing:
                    column = parquet.read_row_group(g.index, columns=[TIME_COLUMN]).column(TIME_COLUMN)
                    span = pc.min_max(column)
                    found[g.index] = replace(g, min_time=epoch_seconds(span["min"].as_py()),
                                             max_time=epoch_seconds(span["max"].as_py()),
                                             untimed_rows=column.null_count > 0)
            f = replace(f, groups=tuple(found.get(g.index, g) for g in f.groups))
        files.append(f)
    return Bin(files)


def _read_slice(storage: Storage, plan: Bin, part: Slice, schema: pa.Schema, width: float, slice_bytes: int,
                limit: int | None) -> pa.Table | None:
    """The rows of one slice (None: there are none), decoded batch by batch (a row group outside the slice is
    not read); SliceTooLarge as soon as they hold more than `limit` bytes."""
    pieces: list[pa.RecordBatch] = []
    held = 0
    for f in plan.files:
        groups = _groups(f, part)
        if not groups:
            continue
        fs, path = storage.arrow_path(f.rel)
        with fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            for group in groups:
                for batch in parquet.iter_batches(batch_size=_batch_rows(group, width, slice_bytes),
                                                  row_groups=[group.index]):
                    if part.low is not None or part.high is not None:
                        batch = batch.filter(part.mask(batch.column(TIME_COLUMN)))
                    if not batch.num_rows:
                        continue
                    pieces.append(batch.cast(schema))
                    held += pieces[-1].nbytes
                    del batch
                    if limit is not None and held > limit:
                        raise SliceTooLarge
    return pa.Table.from_batches(pieces, schema) if pieces else None


def _write_sorted(storage: Storage, plan: Bin, schema: pa.Schema, writer: pq.ParquetWriter,
                  meta: dict[bytes, bytes], row_group_size: int, slice_bytes: int) -> int:
    plan = _with_time_spans(storage, plan)
    width = _sample_width(storage, plan)
    estimate = Estimate(plan, width)
    written = 0
    low: int | None = None  # the first slice is open below, the last open above
    cursor = estimate.start
    ceiling: int | None = None  # after a slice outgrew the budget: the retry ends at half its span
    while True:
        end = estimate.next_end(cursor, slice_bytes * FILL)
        if ceiling is not None and (end is None or end > ceiling):
            end = ceiling
        part = Slice(low, end, nulls=end is None)
        try:
            table = _read_slice(storage, plan, part, schema, width, slice_bytes, slice_bytes)
        except SliceTooLarge:
            release(force=True)
            span_end = end if end is not None else max(estimate.end, cursor + 1)
            if span_end - cursor > 1:
                estimate.ratio *= 2
                ceiling = cursor + (span_end - cursor) // 2
                continue
            log.warning("%s: the rows at %d us (or without a time) hold more than slice_mb; merged in one slice",
                        plan.files[0].rel.rsplit("/", 1)[0], cursor)
            table = _read_slice(storage, plan, part, schema, width, slice_bytes, None)
        ceiling = None
        expected = estimate.bytes(cursor, end if end is not None else max(estimate.end, cursor + 1))
        if expected > 0:  # learn how large the rows really decode (falling at most by half per slice)
            decoded = table.nbytes if table is not None else 0
            estimate.ratio = max(estimate.ratio * decoded / expected, estimate.ratio / 2)
        if table is not None:
            written += _write_in_order(writer, table, schema, meta, row_group_size, slice_bytes)
            del table
        release(force=True)  # the slice's memory back to the system before the next one
        if end is None:
            return written
        low = cursor = end


def _write_in_order(writer: pq.ParquetWriter, table: pa.Table, schema: pa.Schema, meta: dict[bytes, bytes],
                    row_group_size: int, slice_bytes: int) -> int:
    """The slice sorted, a row group at a time (each at most half the budget): never a second whole copy."""
    order = pc.sort_indices(table, sort_keys=_sort_keys(schema))
    rows = min(row_group_size, max(1, math.ceil(table.num_rows * slice_bytes / 2 / max(1, table.nbytes))))
    for first in range(0, table.num_rows, rows):
        writer.write_table(table.take(order.slice(first, rows)).replace_schema_metadata(meta))
    count: int = table.num_rows
    return count


def _write_streamed(storage: Storage, plan: Bin, schema: pa.Schema, writer: pq.ParquetWriter,
                    meta: dict[bytes, bytes], row_group_size: int, slice_bytes: int) -> int:
    """No event_time, no order to keep: the inputs' rows in row groups of up to half the budget."""
    width = _sample_width(storage, plan)
    pieces: list[pa.RecordBatch] = []
    held = written = 0
    for f in plan.files:
        fs, path = storage.arrow_path(f.rel)
        with fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            for group in f.groups:
                for batch in parquet.iter_batches(batch_size=_batch_rows(group, width, slice_bytes),
                                                  row_groups=[group.index]):
                    pieces.append(batch.cast(schema))
                    held += pieces[-1].nbytes
                    written += batch.num_rows
                    if held >= slice_bytes / 2 or sum(p.num_rows for p in pieces) >= row_group_size:
                        writer.write_table(pa.Table.from_batches(pieces, schema).replace_schema_metadata(meta))
                        pieces, held = [], 0
                        release()
    if pieces:
        writer.write_table(pa.Table.from_batches(pieces, schema).replace_schema_metadata(meta))
    return written


def merge(storage: Storage, plan: Bin, staged: str, run: str, options: ParquetOptions, slice_bytes: int) -> int:
    """Write the merged, sorted rows of `plan` to `staged` (synced); returns its size in bytes."""
    schema = plan.files[0].schema.remove_metadata()
    meta = output_metadata(plan, run)
    write = _write_sorted if TIME_COLUMN in schema.names else _write_streamed
    level = options.compression_level if options.compression in ("zstd", "gzip", "brotli") else None
    try:
        with storage.open_output(staged) as sink, pq.ParquetWriter(
                sink, schema.with_metadata(meta), compression=options.codec, compression_level=level,
                use_dictionary=options.dictionary, write_statistics=options.statistics) as writer:
            written = write(storage, plan, schema, writer, meta, options.row_group_size, slice_bytes)
    except (OSError, pa.ArrowException) as exc:
        raise as_storage_error("merge into", staged, exc) from exc
    finally:
        release(force=True)
    if written != plan.rows:
        raise MergeError(f"{staged}: wrote {written} rows, the inputs hold {plan.rows}")
    storage.sync(staged)
    return storage.size(staged)
