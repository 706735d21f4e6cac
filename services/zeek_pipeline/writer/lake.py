"""Reading the lake back: the partition keys as integers, and what each log type holds.

The folders are the seed's `<base>/<log_type>/year=YYYY/month=MM/day=DD/hour=HH/`, zero-padded so they
sort by time. Readers that infer Hive key types disagree on padded values: DuckDB reads `year=2018` as
BIGINT but `month=03` as VARCHAR (it keeps leading zeros as text), so `where month = 3` fails and `day`
switches type with the value of the first file. The layout stays as it is (a replay must land on the same
paths, or it would duplicate rows next to the old ones), and readers name the key types instead:
`DUCKDB_HIVE_TYPES` for DuckDB's `read_parquet`, `hive_partitioning()` for pyarrow.dataset. The log type
is the first folder (no `key=`), and every row carries it as `event_type` with the shipped
normalization.json.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTITION_KEYS = ("year", "month", "day", "hour")
DUCKDB_HIVE_TYPES = "hive_types={'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"


def hive_partitioning() -> Any:
    """pyarrow.dataset partitioning of one log type's folder with the keys typed (int16 year, int8 others)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    schema = pa.schema([("year", pa.int16()), ("month", pa.int8()), ("day", pa.int8()), ("hour", pa.int8())])
    return ds.partitioning(schema, flavor="hive")


# The DuckDB queries the demo prints, run from the project directory (tests run each against a lake the
# writer wrote): rows and time span per log type across every type, and one type by hour with typed keys.
EXAMPLE_QUERIES = (
    "select event_type as log_type, count(*) as records, min(event_time) as first_event, "
    "max(event_time) as last_event from read_parquet('output/parquet/**/*.parquet', union_by_name=true) "
    "group by all order by records desc",
    "select year, month, day, hour, count(*) as records from read_parquet('output/parquet/dns/**/*.parquet', "
    "hive_partitioning=true, hive_types={'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}) "
    "group by all order by all",
)


@dataclass(frozen=True)
class LogTypeSummary:
    log_type: str
    rows: int
    files: int
    first_event: dt.datetime | None
    last_event: dt.datetime | None


def parquet_files(folder: Path) -> list[Path]:
    """Published files only: staged and commit-log names start with `_` or `.` or do not end in .parquet."""
    return sorted(p for p in folder.rglob("*.parquet")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))


def log_type_folders(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def summarize(base: Path, *, times: bool = True) -> list[LogTypeSummary]:
    """Rows, files and the event-time span per log type, read back with pyarrow.dataset (most rows first)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    found = []
    for folder in log_type_folders(base):
        files = parquet_files(folder)
        if not files:
            continue
        dataset = ds.dataset([str(f) for f in files], format="parquet", partitioning=hive_partitioning(),
                             partition_base_dir=str(folder))
        first = last = None
        if times and "event_time" in dataset.schema.names:
            span = pc.min_max(dataset.to_table(columns=["event_time"]).column("event_time")).as_py()
            first, last = span["min"], span["max"]
        found.append(LogTypeSummary(folder.name, dataset.count_rows(), len(files), first, last))
    return sorted(found, key=lambda s: (-s.rows, s.log_type))
