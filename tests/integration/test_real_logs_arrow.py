"""Every shared real Zeek log, JSON and TSV: Transformer -> documents_to_table -> Parquet -> read back with
pyarrow.dataset and DuckDB -> row counts, types and every raw value equal to the input's.

No broker needed: this is the conversion path of the parquet writer on the whole real corpus. Expected
values are computed independently of the pipeline: ISO times with datetime, epoch times with Decimal from
the input text, TSV times from the TSV text itself.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, json_logs, read_lines, shared_available, tsv_logs
from zeek_pipeline.core.arrow import convert_documents
from zeek_pipeline.core.schema import TableLayout, ZeekType, load_schema, table_layout
from zeek_pipeline.core.transform import Accepted, Transformer
from zeek_pipeline.core.tsv import TsvReader, TsvRecord

CONFIG = PROJECT_ROOT / "config"
BATCH = 7_000
INGEST_MS = 1_713_484_800_123
UTC_US = pa.timestamp("us", tz="UTC")

pytestmark = pytest.mark.skipif(not shared_available() and not json_logs(), reason="no real Zeek logs")


@pytest.fixture(scope="module")
def transformer() -> Transformer:
    return Transformer.from_config_dir(CONFIG)


@pytest.fixture(scope="module")
def schema():  # type: ignore[no-untyped-def]
    return load_schema(CONFIG)


def _iso_us(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return (moment.toordinal() - 719163) * 86_400_000_000 + (
        moment.hour * 3600 + moment.minute * 60 + moment.second) * 1_000_000 + moment.microsecond - \
        int(moment.utcoffset().total_seconds()) * 1_000_000  # type: ignore[union-attr]


def _decimal_us(text: str) -> int:
    micros = Decimal(text) * 1_000_000
    assert micros == micros.to_integral_value(), text  # Zeek prints 6 decimals at most
    return int(micros)


def _expected_time(value: Any, text: str | None) -> int:
    if isinstance(value, str):
        return _iso_us(value)
    return _decimal_us(text if text is not None else repr(value))


class Input:
    """One input record: the raw fields as Zeek wrote them, plus the time fields' original text."""

    def __init__(self, raw: dict[str, Any], time_text: dict[str, str], write_ts: Any) -> None:
        self.raw = raw
        self.time_text = time_text
        self.write_ts = write_ts


def _json_inputs(path: Path) -> Iterator[tuple[bytes, Input]]:
    for line in read_lines(path):
        record = orjson.loads(line)
        record.pop("_path")
        write_ts = record.pop("_write_ts", None)
        time_text = {}  # epoch times: the number exactly as written in the file
        for name, value in record.items():
            if isinstance(value, float):
                match = re.search(rb'"' + re.escape(name.encode()) + rb'":\s*(-?[0-9][0-9.eE+-]*)', line)
                if match:
                    time_text[name] = match.group(1).decode()
        yield line, Input(record, time_text, write_ts)


def _tsv_inputs(path: Path) -> Iterator[tuple[TsvRecord, Input]]:
    reader = TsvReader()
    fields: list[str] = []
    types: list[str] = []
    with gzip.open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip(b"\n")
            if line.startswith(b"#fields\t"):
                fields = line.decode().split("\t")[1:]
            elif line.startswith(b"#types\t"):
                types = line.decode().split("\t")[1:]
            result = reader.feed(number, line)
            if result is None:
                continue
            assert isinstance(result, TsvRecord), result
            cells = line.decode("utf-8", "backslashreplace").split("\t")
            time_text = {name: cell for name, kind, cell in zip(fields, types, cells, strict=True)
                         if kind == "time" and cell != "-"}
            yield result, Input(dict(result.record), time_text, None)


def _convert_file(path: Path, transformer: Transformer, schema: Any, out: Path) -> tuple[str, list[Input]]:
    """Transform every record, convert in batches (all must take the fast path), write Parquet files."""
    is_tsv = path.name.endswith(".log.gz")
    inputs: list[Input] = []
    values: list[bytes] = []
    log_type = ""
    source = _tsv_inputs(path) if is_tsv else _json_inputs(path)
    for item, expected in source:
        if isinstance(item, TsvRecord):
            result = transformer.transform_record(item.log_type, item.record, ingest_time_ms=INGEST_MS)
        else:
            result = transformer.transform(item, ingest_time_ms=INGEST_MS)
        assert isinstance(result, Accepted), (path.name, len(values), result)
        log_type = result.log_type
        values.append(result.value)
        inputs.append(expected)
    assert values
    out.mkdir(parents=True)
    for part, start in enumerate(range(0, len(values), BATCH)):
        batch = values[start:start + BATCH]
        offsets = list(range(start, start + len(batch)))
        conversion = convert_documents(log_type, batch, [part % 3] * len(batch), offsets,
                                       schema=schema, rules=transformer.rules)
        assert not conversion.rejects, conversion.rejects[:3]
        assert conversion.fast_path, f"{path.name} batch {part} needed the per-document fallback"
        pq.write_table(conversion.table, out / f"part-{part:04d}.parquet", compression="zstd")
    return log_type, inputs


def _assert_types(layout: TableLayout, table_schema: pa.Schema) -> None:
    for column in layout.columns:
        arrow = table_schema.field(column.name).type
        assert arrow == column.type, column.name
        zeek = column.zeek_type
        if zeek is None:
            continue
        if zeek.container:
            assert pa.types.is_list(arrow), column.name
        elif zeek.scalar == "time":
            assert arrow == UTC_US, column.name
        elif zeek.scalar == "count":
            assert arrow == pa.uint64(), column.name
    assert table_schema.field("event_time").type == UTC_US


def _same(expected: Any, got: Any, zeek: ZeekType, text: str | None) -> bool:
    if zeek.container:
        if not isinstance(got, list) or len(got) != len(expected):
            return False
        return all(_same(e, g, ZeekType(zeek.scalar), None) for e, g in zip(expected, got, strict=True))
    if expected is None:
        return got is None
    if zeek.scalar == "time":
        return got == _expected_time(expected, text)
    if isinstance(expected, float):
        return isinstance(got, float) and (got == expected or (math.isnan(got) and math.isnan(expected)))
    return type(got) is type(expected) and got == expected


def _compare_values(layout: TableLayout, table: pa.Table, inputs: list[Input]) -> int:
    """Every raw field of every input record against the table (times as µs ints); returns #values."""
    column_of = {column.source: column for column in layout.columns if column.source is not None}
    time_columns = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    plain = table.cast(pa.schema([
        pa.field(f.name, pa.int64()) if f.name in time_columns
        else pa.field(f.name, pa.list_(pa.int64())) if pa.types.is_list(f.type) and pa.types.is_timestamp(
            f.type.value_type) else f
        for f in table.schema]))
    columns = {name: plain.column(name).to_pylist() for name in plain.column_names}
    assert columns["_kafka_offset"] == list(range(len(inputs)))
    compared = 0
    for row, record in enumerate(inputs):
        extra: dict[str, Any] = {}
        for name, value in record.raw.items():
            column = column_of.get(name)
            if column is None:
                extra[name] = value
                continue
            assert column.zeek_type is not None
            got = columns[column.name][row]
            assert _same(value, got, column.zeek_type, record.time_text.get(name)), \
                (layout.log_type, row, name, value, got)
            compared += 1
        stored_extra = columns["_extra"][row]
        assert (orjson.loads(stored_extra) if stored_extra is not None else {}) == extra, (row, extra)
        for name, column in column_of.items():  # fields absent from the input are null in the table
            if name not in record.raw:
                assert columns[column.name][row] is None, (row, name)
        if record.write_ts is not None:
            assert columns["zeek_write_ts"][row] == _iso_us(record.write_ts) // 1000
        assert columns["ingest_time"][row] == INGEST_MS
    return compared


def _all_logs() -> list[Path]:
    return [*json_logs(), *tsv_logs()]


@pytest.mark.parametrize("path", _all_logs(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_real_log_round_trips_through_parquet_without_loss(path: Path, transformer: Transformer, schema: Any,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "lake"
    log_type, inputs = _convert_file(path, transformer, schema, out)
    layout = table_layout(log_type, schema, transformer.rules)

    # reader 1: pyarrow.dataset over the files
    dataset = ds.dataset(out, format="parquet")
    table = dataset.to_table().sort_by("_kafka_offset")
    assert table.num_rows == len(inputs)
    _assert_types(layout, table.schema)
    assert pq.read_schema(next(out.glob("*.parquet"))).metadata[b"zeek_pipeline.log_type"] == log_type.encode()
    compared = _compare_values(layout, table, inputs)
    assert compared >= len(inputs)

    # reader 2: DuckDB's own Parquet reader
    con = duckdb.connect()
    glob = f"{out}/*.parquet"
    count, min_offset, max_offset = con.execute(
        f"SELECT count(*), min(_kafka_offset), max(_kafka_offset) FROM read_parquet('{glob}')").fetchone()
    assert (count, min_offset, max_offset) == (len(inputs), 0, len(inputs) - 1)
    described = {row[0]: row[1] for row in
                 con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()}
    assert described["event_time"] == "TIMESTAMP WITH TIME ZONE"
    for column in layout.columns:
        if column.zeek_type is not None and column.zeek_type.scalar == "count":
            assert described[column.name] == ("UBIGINT[]" if column.zeek_type.container else "UBIGINT")
        if column.zeek_type is not None and column.zeek_type.container:
            assert described[column.name].endswith("[]"), column.name
    duck = con.sql(f"SELECT * FROM read_parquet('{glob}') ORDER BY _kafka_offset").to_arrow_table()
    assert duck.column_names == table.column_names
    assert duck.cast(table.schema).equals(table.cast(table.schema)), "duckdb and pyarrow read different values"
    event_us = con.execute(f"SELECT sum(epoch_us(event_time))::HUGEINT FROM read_parquet('{glob}')").fetchone()[0]
    expected_event_us = sum(_expected_time(r.raw["ts"], r.time_text.get("ts")) for r in inputs if "ts" in r.raw)
    assert (event_us or 0) == expected_event_us
