"""iceberg/schema.py: the Iceberg schema of each log type's Parquet layout, and conforming typed tables to it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.io.pyarrow import PYARROW_PARQUET_FIELD_ID_KEY
from pyiceberg.transforms import HourTransform
from pyiceberg.types import IntegerType, ListType, LongType, StringType, TimestamptzType

from tests.infra.zeek_data import PROJECT_ROOT
from zeek_pipeline.core.rules import load_rules
from zeek_pipeline.core.schema import FIELD_LAYER, load_schema
from zeek_pipeline.core.schema import arrow_schema as parquet_schema
from zeek_pipeline.iceberg.schema import (
    LONG_MAX,
    REJECT_LONG_RANGE,
    IcebergSchemaError,
    conform,
    iceberg_schema,
    partition_spec,
    sort_order,
)

CONFIG = PROJECT_ROOT / "config"
SCHEMA = load_schema(CONFIG / "schema.json")
RULES = load_rules(CONFIG / "normalization.json")


def layout(log_type: str) -> pa.Schema:
    return parquet_schema(log_type, SCHEMA, RULES)


def rows(log_type: str, values: list[dict[str, Any]]) -> pa.Table:
    """A typed table in the log type's Parquet layout (columns not given are null)."""
    return pa.Table.from_pylist(values, schema=layout(log_type))


@pytest.mark.parametrize("log_type", sorted(SCHEMA.log_types))
def test_every_log_type_gets_the_parquet_columns_with_iceberg_types(log_type: str) -> None:
    arrow = layout(log_type)
    schema = iceberg_schema(arrow)
    assert [field.name for field in schema.fields] == arrow.names
    assert all(not field.required for field in schema.fields)
    for field in arrow:
        iceberg = schema.find_field(field.name).field_type
        if pa.types.is_uint64(field.type) or field.type == pa.int64():
            assert iceberg == LongType(), field
        elif field.type in (pa.uint16(), pa.int8(), pa.int16(), pa.int32()):
            assert iceberg == IntegerType(), field
        elif pa.types.is_timestamp(field.type):
            assert iceberg == TimestamptzType(), field
        elif pa.types.is_list(field.type):
            assert isinstance(iceberg, ListType) and not iceberg.element_required, field
    for name, kind in (("_extra", StringType()), ("_kafka_partition", IntegerType()),
                       ("_kafka_offset", LongType())):
        assert schema.find_field(name).field_type == kind
    ids = [field.field_id for field in schema.fields]
    assert ids == list(range(1, len(arrow) + 1))


def test_partitioned_by_the_hour_of_event_time_and_sorted_by_it() -> None:
    schema = iceberg_schema(layout("conn"))
    spec = partition_spec(schema)
    (field,) = spec.fields
    assert isinstance(field.transform, HourTransform)
    assert field.source_id == schema.find_field("event_time").field_id
    assert sort_order(schema).fields[0].source_id == field.source_id


def test_conform_widens_types_sorts_by_event_time_and_names_field_ids() -> None:
    schema = iceberg_schema(layout("conn"))
    late = datetime(2018, 3, 24, 18, 0, 1, 5, tzinfo=UTC)
    early = datetime(2018, 3, 24, 17, 15, 20, 865716, tzinfo=UTC)
    table = rows("conn", [
        {"event_time": late, "src_port": 65535, "src_bytes": LONG_MAX, "_kafka_partition": 0, "_kafka_offset": 1},
        {"event_time": early, "src_port": 53, "src_bytes": 0, "_kafka_partition": 0, "_kafka_offset": 2},
    ])
    conformed = conform(table, schema)
    assert not conformed.rejects
    out = conformed.table
    assert out.schema.field("src_port").type == pa.int32()
    assert out.schema.field("src_bytes").type == pa.int64()
    assert out.schema.field("ingest_time").type == pa.timestamp("us", tz="UTC")  # was ms
    assert out.column("event_time").to_pylist() == [early, late]
    assert out.column("src_port").to_pylist() == [53, 65535]
    assert out.column("src_bytes").to_pylist() == [0, LONG_MAX]
    for field in out.schema:
        assert int(field.metadata[PYARROW_PARQUET_FIELD_ID_KEY]) == schema.find_field(field.name).field_id


def test_counts_above_the_long_range_are_refused_row_by_row_not_wrapped() -> None:
    schema = iceberg_schema(layout("ssl"))
    table = rows("ssl", [
        {"flow_id": "ok", "client_ciphers": [1, LONG_MAX], "_kafka_offset": 10},
        {"flow_id": "list", "client_ciphers": [1, LONG_MAX + 1], "_kafka_offset": 11},
        {"flow_id": "scalar", "_kafka_offset": 12},
    ])
    wide = [field.name for field in layout("ssl") if pa.types.is_uint64(field.type)]
    assert wide, "ssl has no count column"
    table = table.set_column(table.schema.get_field_index(wide[0]), table.schema.field(wide[0]),
                             pa.array([None, None, (1 << 64) - 1], pa.uint64()))
    conformed = conform(table, schema)
    assert [(reject.index, reject.reason) for reject in conformed.rejects] == [
        (1, REJECT_LONG_RANGE), (2, REJECT_LONG_RANGE)]
    assert "client_ciphers" in conformed.rejects[0].detail and wide[0] in conformed.rejects[1].detail
    assert conformed.table.column("flow_id").to_pylist() == ["ok"]
    assert conformed.table.column("client_ciphers").to_pylist() == [[1, LONG_MAX]]


def test_conform_fills_table_columns_the_batch_lacks_and_refuses_columns_the_table_lacks() -> None:
    arrow = layout("dns")
    schema = iceberg_schema(arrow.append(pa.field("added_later", pa.string())))
    conformed = conform(rows("dns", [{"flow_id": "C1"}]), schema)
    assert conformed.table.column("added_later").to_pylist() == [None]
    raw = next(field.name for field in arrow if field.metadata[FIELD_LAYER] == b"raw")
    narrower = iceberg_schema(pa.schema([field for field in arrow if field.name != raw]))
    with pytest.raises(IcebergSchemaError, match=raw):
        conform(rows("dns", [{"flow_id": "C1"}]), narrower)
