"""The Iceberg schema of a log type, derived from the Arrow schema of its Parquet output (core.schema.arrow_schema).

Same columns, same order, same names (dots kept: `id.orig_h`), every one optional. Types map as below; where
Arrow has a type Iceberg lacks, the value is widened, never wrapped:

    timestamp[us|ms, UTC] -> timestamptz (ms widened to us)   int8/int16/uint8/uint16/int32 -> int
    int64/uint32 -> long      uint64 (Zeek count) -> long, rows above 2^63-1 refused (see `conform`)
    float64 -> double   float32 -> float   bool -> boolean   string -> string   list<T> -> list<T>

Why long for uint64 and not decimal(20,0): Zeek's counts are bytes, packets and such, far below 2^63; every
engine sums and compares a long natively, while decimal(20,0) is slower, larger on disk and surprises a SQL
user. A count above 2^63-1 is refused row by row (reason `iceberg_long_range`), to go to the dead-letter topic,
rather than wrapped to a negative number.

Field ids are assigned once, when the table is created; afterwards they come from the table's own schema
(`conform` takes the table's schema, never a freshly derived one), so a file written today and one written
next year name their columns by the same ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import PYARROW_PARQUET_FIELD_ID_KEY
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import HourTransform, IdentityTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
)

from zeek_pipeline.core.arrow import RowReject
from zeek_pipeline.core.schema import FIELD_LAYER, FIELD_SOURCE, FIELD_TYPE

EVENT_TIME = "event_time"
HOUR_PARTITION = "event_time_hour"
LONG_MAX = (1 << 63) - 1
REJECT_LONG_RANGE = "iceberg_long_range"  # a uint64 value above 2^63-1: Iceberg's long cannot hold it
PARTITION_FIELD_ID_START = 1000  # Iceberg's convention for partition field ids


class IcebergSchemaError(ValueError):
    """The Arrow layout cannot be written to the table as it is (an unmapped type, a column the table lacks)."""


def iceberg_type(arrow: pa.DataType, next_id: Iterator[int]) -> IcebergType:
    """The Iceberg type of one Arrow type (see the module doc); list element ids are drawn from `next_id`."""
    if pa.types.is_timestamp(arrow):
        if arrow.unit == "ns":
            raise IcebergSchemaError(f"{arrow}: Iceberg v2 timestamps stop at microseconds")
        return TimestamptzType() if arrow.tz is not None else TimestampType()
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        element_id = next(next_id)
        return ListType(element_id, iceberg_type(arrow.value_type, next_id), element_required=False)
    if pa.types.is_integer(arrow):
        fits_int = arrow.bit_width < 32 or (arrow.bit_width == 32 and pa.types.is_signed_integer(arrow))
        return IntegerType() if fits_int else LongType()
    simple: dict[pa.DataType, IcebergType] = {
        pa.float64(): DoubleType(), pa.float32(): FloatType(), pa.bool_(): BooleanType(),
        pa.string(): StringType(), pa.large_string(): StringType(), pa.binary(): BinaryType(),
        pa.large_binary(): BinaryType(), pa.date32(): DateType(),
    }
    if arrow in simple:
        return simple[arrow]
    raise IcebergSchemaError(f"no Iceberg type for Arrow {arrow}")


def _doc(field: pa.Field) -> str | None:
    """The column's origin, as core.schema records it: layer, Zeek type, raw source field."""
    metadata = field.metadata or {}
    parts = [metadata[key].decode() for key in (FIELD_LAYER, FIELD_TYPE) if key in metadata]
    if FIELD_SOURCE in metadata and metadata[FIELD_SOURCE].decode() != field.name:
        parts.append(f"from {metadata[FIELD_SOURCE].decode()}")
    return " ".join(parts) or None


def iceberg_schema(arrow: pa.Schema) -> Schema:
    """A new table's schema: one optional field per Arrow column, ids 1..n in column order, list elements after."""
    element_ids = iter(range(len(arrow) + 1, 1 << 31))
    fields = [
        NestedField(index, field.name, iceberg_type(field.type, element_ids), required=False, doc=_doc(field))
        for index, field in enumerate(arrow, start=1)
    ]
    return Schema(*fields)


def partition_spec(schema: Schema) -> PartitionSpec:
    """hours(event_time): hidden partitioning, so a reader filters on event_time and never names the hour."""
    source = schema.find_field(EVENT_TIME)
    return PartitionSpec(PartitionField(source_id=source.field_id, field_id=PARTITION_FIELD_ID_START,
                                        transform=HourTransform(), name=HOUR_PARTITION))


def sort_order(schema: Schema) -> SortOrder:
    """event_time ascending (`conform` sorts each table so, as the compaction does for the Hive output)."""
    source = schema.find_field(EVENT_TIME)
    return SortOrder(SortField(source_id=source.field_id, transform=IdentityTransform(),
                               direction=SortDirection.ASC, null_order=NullOrder.NULLS_LAST))


def arrow_type(iceberg: IcebergType) -> pa.DataType:
    """The Arrow type a conformed column has (plain string/list, not pyiceberg's large ones: no copy needed)."""
    if isinstance(iceberg, ListType):
        element = pa.field("element", arrow_type(iceberg.element_type), nullable=not iceberg.element_required,
                           metadata={PYARROW_PARQUET_FIELD_ID_KEY: str(iceberg.element_id)})
        return pa.list_(element)
    simple: dict[type[IcebergType], pa.DataType] = {
        TimestamptzType: pa.timestamp("us", tz="UTC"), TimestampType: pa.timestamp("us"),
        IntegerType: pa.int32(), LongType: pa.int64(), DoubleType: pa.float64(), FloatType: pa.float32(),
        BooleanType: pa.bool_(), StringType: pa.string(), BinaryType: pa.binary(), DateType: pa.date32(),
    }
    if type(iceberg) in simple:
        return simple[type(iceberg)]
    raise IcebergSchemaError(f"the table has a column of type {iceberg}, which the writer does not produce")


def table_arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of conformed tables: the table's columns in its order, with their Iceberg field ids."""
    return pa.schema([
        pa.field(field.name, arrow_type(field.field_type), nullable=not field.required,
                 metadata={PYARROW_PARQUET_FIELD_ID_KEY: str(field.field_id)})
        for field in schema.fields
    ])


@dataclass(frozen=True, slots=True)
class Conformed:
    """The rows ready to append, sorted by event_time, and the rows refused (index = row of the input table)."""

    table: pa.Table
    rejects: tuple[RowReject, ...] = ()


def _too_large(column: pa.ChunkedArray) -> pa.Array | None:
    """Row indexes whose uint64 value (or any list member) exceeds LONG_MAX; None when the column is not uint64."""
    kind = column.type
    if pa.types.is_list(kind) and pa.types.is_uint64(kind.value_type):
        values = pc.list_flatten(column)
        parents = pc.list_parent_indices(column)
        return pc.unique(pc.filter(parents, pc.greater(values, pa.scalar(LONG_MAX, pa.uint64()))))
    if pa.types.is_uint64(kind):
        over = pc.greater(column, pa.scalar(LONG_MAX, pa.uint64()))
        return pc.indices_nonzero(pc.fill_null(over, False))
    return None


def _out_of_range(table: pa.Table) -> dict[int, str]:
    """Row index -> why it cannot be stored in Iceberg (the first column found too large)."""
    reasons: dict[int, str] = {}
    for name in table.column_names:
        rows = _too_large(table.column(name))
        if rows is None or len(rows) == 0:
            continue
        for row in rows.to_pylist():
            reasons.setdefault(int(row), f"column {name!r}: a value above 2^63-1, Iceberg's long")
    return reasons


def conform(table: pa.Table, schema: Schema) -> Conformed:
    """A typed table of core.arrow (its log type's layout) as the Iceberg table `schema` stores it.

    Columns are taken by name in the table's order and cast to the table's types (widening only); a column
    the table has and the batch lacks is null (it was dropped from schema.json later); a batch column the
    table lacks is an error (the table's schema must be evolved first). Rows with a uint64 above 2^63-1 are
    left out and returned as rejects. The result is sorted by event_time, the table's sort order.
    """
    target = table_arrow_schema(schema)
    missing = [name for name in table.column_names if name not in target.names]
    if missing:
        raise IcebergSchemaError(f"columns not in the Iceberg table: {', '.join(missing)} (evolve its schema first)")
    reasons = _out_of_range(table)
    rejects = tuple(RowReject(index, REJECT_LONG_RANGE, reason) for index, reason in sorted(reasons.items()))
    if rejects:
        keep = pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()),
                                  value_set=pa.array(sorted(reasons), pa.int64())))
        table = table.filter(keep)
    columns = []
    for field in target:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    conformed = pa.Table.from_arrays(columns, schema=target)
    if EVENT_TIME in conformed.column_names and conformed.num_rows > 1:
        conformed = conformed.sort_by([(EVENT_TIME, "ascending")])
    return Conformed(conformed, rejects)
