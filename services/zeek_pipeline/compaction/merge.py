"""Write one output of a plan: the rows of its inputs sorted by event_time, read in bounded slices.

Sorting needs the rows together, but an output of 128 MB of zstd Parquet is several times that in Arrow
memory. So the output is written in time slices: the bin's event_time span (from the footers) is cut into
as many equal slices as its input bytes need to stay under `slice_bytes` each, and each slice is read with
a filter (pyarrow.dataset skips row groups whose statistics lie outside it), sorted and appended as row
groups. Writer files cover about one flush interval each, so most are read once; a file whose rows spread
over the whole hour is read once per slice (the cost of the bound). Rows without event_time come last.
Memory: about one slice of Arrow data plus its sorted copy, plus pyarrow's read-ahead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from zeek_pipeline import __version__
from zeek_pipeline.compaction.plan import TIME_COLUMN, Bin
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN
from zeek_pipeline.writer.parquet_file import META_WRITER, ParquetOptions
from zeek_pipeline.writer.storage import Storage, as_storage_error

META_COMPACTED_FROM = b"zeek_pipeline.compacted_from"  # JSON list of the writer files merged into this one
META_COMPACTED_BY = b"zeek_pipeline.compacted_by"  # the compaction run
# Per-file keys of a writer file that say nothing true of a merged one (its rows span partitions and offsets).
PER_FILE_KEYS = frozenset({b"zeek_pipeline.kafka_topic", b"zeek_pipeline.kafka_partition",
                           b"zeek_pipeline.first_offset", b"zeek_pipeline.last_offset", b"ARROW:schema"})


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


def slice_filters(plan: Bin, schema: pa.Schema, slice_bytes: int) -> Iterator[ds.Expression | None]:
    """Filters that together select every row exactly once: time slices, then the rows without a time."""
    lows = [f.min_time for f in plan.files]
    highs = [f.max_time for f in plan.files]
    count = max(1, math.ceil(plan.bytes / slice_bytes))
    if TIME_COLUMN not in schema.names or count == 1 or None in lows or None in highs:
        yield None
        return
    kind = schema.field(TIME_COLUMN).type
    column = ds.field(TIME_COLUMN)
    low_us = math.floor(min(x for x in lows if x is not None) * 1_000_000)
    high_us = math.ceil(max(x for x in highs if x is not None) * 1_000_000) + 1
    step = max(1, (high_us - low_us) // count)
    cuts = [pa.scalar(low_us + i * step, pa.int64()).cast(pa.timestamp("us", tz="UTC")).cast(kind)
            for i in range(1, count)]
    for i in range(count):
        # The first slice has no lower bound and the last no upper one: every timed row falls in one slice,
        # whatever the precision of the statistics.
        parts = ([column >= cuts[i - 1]] if i > 0 else []) + ([column < cuts[i]] if i < count - 1 else [])
        expression = parts[0] if len(parts) == 1 else parts[0] & parts[1]
        yield expression
    yield column.is_null()


def _sort_keys(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(name, "ascending") for name in (TIME_COLUMN, PARTITION_COLUMN, OFFSET_COLUMN) if name in schema.names]


def merge(storage: Storage, plan: Bin, staged: str, run: str, options: ParquetOptions, slice_bytes: int) -> int:
    """Write the merged, sorted rows of `plan` to `staged` (synced); returns its size in bytes."""
    schema = plan.files[0].schema.remove_metadata()
    meta = output_metadata(plan, run)
    paths = [storage.arrow_path(f.rel) for f in plan.files]
    filesystem = paths[0][0]
    level = options.compression_level if options.compression in ("zstd", "gzip", "brotli") else None
    written = 0
    try:
        dataset = ds.dataset([p for _fs, p in paths], schema=schema, format="parquet", filesystem=filesystem)
        with storage.open_output(staged) as sink, pq.ParquetWriter(
                sink, schema.with_metadata(meta), compression=options.codec, compression_level=level,
                use_dictionary=options.dictionary, write_statistics=options.statistics) as writer:
            for expression in slice_filters(plan, schema, slice_bytes):
                table = dataset.to_table(filter=expression) if expression is not None else dataset.to_table()
                if table.num_rows == 0:
                    continue
                if TIME_COLUMN in schema.names:
                    table = table.take(pc.sort_indices(table, sort_keys=_sort_keys(schema)))
                writer.write_table(table.replace_schema_metadata(meta), row_group_size=options.row_group_size)
                written += table.num_rows
                del table
    except (OSError, pa.ArrowException) as exc:
        raise as_storage_error("merge into", staged, exc) from exc
    if written != plan.rows:
        raise MergeError(f"{staged}: wrote {written} rows, the inputs hold {plan.rows}")
    storage.sync(staged)
    return storage.size(staged)
