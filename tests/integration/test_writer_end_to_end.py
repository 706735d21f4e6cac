"""Every shared real log type, raw → normalizer-enricher → parquet-writer (both real subprocesses), read back
by DuckDB and pyarrow.dataset and compared value by value with the raw records the sensor sent."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.infra import topics
from tests.infra.zeek_data import json_logs, read_lines, tsv_logs
from tests.integration.test_normalizer_support import Pipeline
from tests.integration.test_normalizer_support import running as normalizer_running
from tests.integration.test_writer_support import Lake, assert_exactly_once, last_data_offsets, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NOT_RAW = {"_path", "_write_ts"}  # the flat form's routing/write-time keys are not Zeek fields of the record


def input_counts(files: list[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in files:
        log_type = path.name.split(".")[0]
        counts[log_type] += sum(1 for line in read_lines(path) if not line.startswith(b"#"))
    return counts


def zeek_time(value: Any) -> dt.datetime:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    micros = int((Decimal(str(value)) * 1_000_000).to_integral_value())
    return EPOCH + dt.timedelta(microseconds=micros)


def expected_value(value: Any, zeek_type: str, arrow_type: pa.DataType) -> Any:
    """The Parquet value an independent reader must find for a raw JSON value of this Zeek type."""
    if value is None:
        return None
    if zeek_type.startswith(("set[", "vector[")):
        inner = zeek_type[zeek_type.index("[") + 1:-1]
        return [expected_value(v, inner, arrow_type.value_type) for v in value]
    if zeek_type == "time":
        return zeek_time(value)
    if zeek_type == "interval":
        if pa.types.is_duration(arrow_type):
            return dt.timedelta(microseconds=int((Decimal(str(value)) * 1_000_000).to_integral_value()))
        return float(value)
    if zeek_type in ("count", "int", "port"):
        return int(value)
    if zeek_type == "double":
        return float(value)
    if zeek_type == "bool":
        return value if isinstance(value, bool) else value in ("T", "true")
    return str(value) if not isinstance(value, str) else value


def compare_log_type(base: Path, log_type: str, raw_of: dict[tuple[int, int], dict[str, Any]]) -> int:
    """Every row of the log type equals its raw record, field by field; unknown fields are in `_extra`."""
    table = ds.dataset(base / log_type, format="parquet", partitioning="hive").to_table()
    mapped: list[tuple[str, list[str], str, pa.DataType]] = []
    for field in table.schema:
        meta = field.metadata or {}
        if b"zeek.source" in meta and b"zeek.type" in meta:
            mapped.append((field.name, meta[b"zeek.source"].decode().split(","), meta[b"zeek.type"].decode(),
                           field.type))
    assert any(sources == ["ts"] for _, sources, _, _ in mapped) or log_type == "loaded_scripts", log_type
    assert len(mapped) >= 2, (log_type, table.schema.names)
    covered = {source for _, sources, _, _ in mapped for source in sources}
    for row in table.to_pylist():
        raw = raw_of[(row["_kafka_partition"], row["_kafka_offset"])]
        for column, sources, zeek_type, arrow_type in mapped:
            source = next((s for s in sources if s in raw), None)
            expected = expected_value(raw[source], zeek_type, arrow_type) if source else None
            got = row[column]
            if isinstance(expected, float) and isinstance(got, float):
                assert got == pytest.approx(expected, rel=1e-15, abs=0), (log_type, column, raw)
            else:
                assert got == expected, (log_type, column, got, expected, raw)
        extra = {k: v for k, v in raw.items() if k not in covered and k not in NOT_RAW}
        assert (orjson.loads(row["_extra"]) if row["_extra"] else {}) == extra, (log_type, raw)
    return table.num_rows


def test_every_real_log_type_reaches_parquet_once_with_its_values(kafka_bootstrap: str, tmp_path: Path) -> None:
    files = json_logs() + tsv_logs()
    counts = input_counts(files)
    total = sum(counts.values())
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=3, name="e2e").create()
    lake = Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake")).create(topic=pipe.output)
    with normalizer_running(pipe), running(lake):
        pipe.publish(files)
        normalizer = pipe.start()
        writer = lake.start(ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS="2")
        pipe.wait_all_committed(timeout=240, alive=normalizer)
        last = last_data_offsets(kafka_bootstrap, pipe.output, total)
        lake.wait_written(last, timeout=240, alive=writer)
        assert writer.terminate() == 0, writer.tail()
        assert normalizer.terminate() == 0, normalizer.tail()

    normalized = topics.consume_all(kafka_bootstrap, pipe.output, expected=total, timeout=120)
    raw_records = {(r.partition, r.offset): r.value for r in topics.consume_all(kafka_bootstrap, pipe.input,
                                                                                  expected=total, timeout=120)}
    assert topics.consume_all(kafka_bootstrap, lake.dlq, timeout=10, idle=2) == []
    assert_exactly_once(lake, {(r.partition, r.offset) for r in normalized})

    base = Path(lake.base)
    # DuckDB over the whole lake, then per log type with the Hive columns
    assert duckdb.sql(f"select count(*) from read_parquet('{base}/**/*.parquet', hive_partitioning=true)"
                      ).fetchall() == [(total,)]
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    for log_type, expected in counts.items():
        rel = f"read_parquet('{base}/{log_type}/**/*.parquet', hive_partitioning=true)"
        assert con.sql(f"select count(*) from {rel}").fetchall() == [(expected,)], log_type
        assert con.sql(f"select count(*) from {rel} where event_time is not null and "
                       "(year != year(event_time) or month != month(event_time) or day != day(event_time) "
                       "or hour != hour(event_time))").fetchall() == [(0,)], log_type
    # pyarrow.dataset over the whole lake (discovery skips the commit log and staging folders)
    assert ds.dataset(base, format="parquet", partitioning="hive").count_rows() == total

    # types an analyst relies on
    dns = ds.dataset(base / "dns", format="parquet", partitioning="hive").schema
    assert dns.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert pa.types.is_list(dns.field("answers").type) and pa.types.is_list(dns.field("TTLs").type)
    assert dns.field("trans_id").type == pa.uint64()
    conn = ds.dataset(base / "conn", format="parquet", partitioning="hive").schema
    assert conn.field("src_bytes").type == pa.uint64() and conn.field("missed_bytes").type == pa.uint64()

    # values: every row against the raw record it came from (normalized headers point back to it)
    raw_of = {}
    for record in normalized:
        source = (int(record.headers["source.partition"]), int(record.headers["source.offset"]))
        raw_of[(record.partition, record.offset)] = orjson.loads(raw_records[source] or b"{}")
    compared = sum(compare_log_type(base, log_type, raw_of) for log_type in counts)
    assert compared == total
