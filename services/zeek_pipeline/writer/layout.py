"""Where a row goes: the Hive-partitioned path of the data lake, and deterministic file names.

    <base>/<log_type>/year=YYYY/month=MM/day=DD/hour=HH/<prefix>_<log_type>_<id>.parquet

`<id>` is `<topic>_p<partition>-o<first offset>-<last offset>` (offsets of the rows in the file, zero-padded
to 12 digits so names sort by offset): unique across instances (a partition has one owner) and restarts (the
offset ranges of one (log type, partition) never overlap), and the same on a replay of the same records,
so a replay overwrites instead of duplicating. The topic is in the name because offsets are per topic: two
pipelines reading different topics into one base path would otherwise write the same names. Files written
before the topic was added (`p<partition>-o...`) keep their names and are read alike (readers go by the
Hive folders and `.parquet`; commit records store every final name whole). The hour is the event's (UTC,
from `event_time`), or the ingest time's when a record has no event time, so a late event lands in its own
hour's folder.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from zeek_pipeline.core.rules import is_valid_name

HOUR_US = 3_600_000_000
HOUR_MS = 3_600_000
# Event times outside 1970..9999 cannot name a folder; such rows fall back to their ingest hour.
MIN_HOUR = 0
MAX_HOUR = (253_402_300_800 // 3600) - 1  # 9999-12-31T23


def is_valid_log_type(log_type: str) -> bool:
    """A log type is a directory name: 1-100 of A-Z a-z 0-9 _ - (no dots, no slashes)."""
    return is_valid_name(log_type)


def hour_dir(hour: int) -> str:
    """`year=2018/month=03/day=24/hour=17` for an hour index (hours since the epoch, UTC)."""
    t = time.gmtime(hour * 3600)
    return f"year={t.tm_year:04d}/month={t.tm_mon:02d}/day={t.tm_mday:02d}/hour={t.tm_hour:02d}"


def kafka_file_id(topic: str, partition: int, first: int, last: int) -> str:
    return f"{topic}_p{partition}-o{first:012d}-{last:012d}"


def file_name(prefix: str, log_type: str, file_id: str) -> str:
    return f"{prefix}_{log_type}_{file_id}.parquet"


def relative_path(log_type: str, hour: int, name: str) -> str:
    return f"{log_type}/{hour_dir(hour)}/{name}"


def _hours_of(column: pa.ChunkedArray, per_hour: int) -> pa.ChunkedArray:
    """Hour index per row (int64), null where the value is null or outside 1970..9999."""
    if pa.types.is_timestamp(column.type):
        ints = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
        per_hour = HOUR_US
    else:
        ints = pc.cast(column, pa.int64(), safe=False)
    valid = pc.and_(pc.greater_equal(ints, MIN_HOUR * per_hour), pc.less_equal(ints, MAX_HOUR * per_hour))
    return pc.if_else(valid, pc.divide(ints, per_hour), pa.scalar(None, pa.int64()))


def event_hours(table: pa.Table, now_ms: int | None = None) -> pa.ChunkedArray:
    """The hour index of each row: event_time, else ingest_time (ms), else now; vectorised."""
    fallback = (int(time.time() * 1000) if now_ms is None else now_ms) // HOUR_MS
    candidates = [_hours_of(table.column(name), HOUR_MS) for name in ("event_time", "ingest_time")
                  if name in table.column_names]
    if not candidates:
        return pa.chunked_array([pa.array([fallback] * table.num_rows, pa.int64())])
    hours = pc.coalesce(*candidates, pa.scalar(fallback, pa.int64()))
    return hours if isinstance(hours, pa.ChunkedArray) else pa.chunked_array([hours])


def split_by_hour(table: pa.Table, now_ms: int | None = None) -> list[tuple[int, pa.Table]]:
    """One (hour, rows) pair per event hour present, hours ascending, rows in their original (offset) order.

    Offsets mostly follow event time, so each hour's rows are usually one run: those are returned as slices
    of the table, without a copy. Only hours that interleave (late events) cost one stable sort and one copy
    of the table (one filter per hour did that for every hour)."""
    if table.num_rows == 0:
        return []
    hours = event_hours(table, now_ms).combine_chunks()
    runs = pc.run_end_encode(hours)
    values = runs.values.to_pylist()
    if len(values) == 1:
        return [(int(values[0]), table)]
    if len(set(values)) == len(values):
        ends = runs.run_ends.to_pylist()
        starts = [0, *ends[:-1]]
        return sorted((int(hour), table.slice(start, end - start))
                      for hour, start, end in zip(values, starts, ends, strict=True))
    order = pc.sort_indices(hours)  # stable: rows of one hour keep their order
    ordered, ordered_hours = table.take(order), hours.take(order)
    runs = pc.run_end_encode(ordered_hours)
    ends = runs.run_ends.to_pylist()
    starts = [0, *ends[:-1]]
    return [(int(hour), ordered.slice(start, end - start))
            for hour, start, end in zip(runs.values.to_pylist(), starts, ends, strict=True)]
