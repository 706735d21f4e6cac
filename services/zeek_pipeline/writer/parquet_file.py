"""One Parquet file from one Arrow table, with the configured encoding and self-describing metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from zeek_pipeline import __version__
from zeek_pipeline.core.schema import META_LOG_TYPE, META_SCHEMA_VERSION
from zeek_pipeline.settings import ParquetOutput

# Key/value metadata every file carries (readers: pq.read_metadata(path).metadata), besides the schema's own
# zeek_pipeline.log_type / schema_version / layout_version.
META_WRITER = b"zeek_pipeline.writer"


@dataclass(frozen=True, slots=True)
class ParquetOptions:
    compression: str = "zstd"  # zstd | snappy | gzip | lz4 | none
    compression_level: int | None = None
    row_group_size: int = 128 * 1024
    dictionary: bool = True  # for the string columns (see dictionary_columns)
    statistics: bool = True

    @classmethod
    def from_settings(cls, parquet: ParquetOutput) -> ParquetOptions:
        return cls(parquet.compression, parquet.compression_level, parquet.row_group_size, parquet.dictionary,
                   parquet.statistics)

    @property
    def codec(self) -> str:
        # the settings names are pyarrow's codec names (DuckDB, Spark and Trino read all of them)
        return "none" if self.compression == "none" else self.compression


def file_metadata(log_type: str, schema_version: str, extra: Mapping[str, str] | None = None) -> dict[bytes, bytes]:
    meta = {META_LOG_TYPE: log_type.encode(), META_SCHEMA_VERSION: schema_version.encode(),
            META_WRITER: f"zeek-pipeline {__version__}".encode()}
    for key, value in (extra or {}).items():
        meta[key.encode()] = value.encode()
    return meta


def _is_text(arrow: pa.DataType) -> bool:
    return bool(pa.types.is_string(arrow) or pa.types.is_large_string(arrow))


def _leaf_path(field: pa.Field) -> str:
    """The Parquet column path of a column: its name, or the leaf of a list as pyarrow names it."""
    return f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name


def _all_null(table: pa.Table, name: str) -> bool:
    return bool(table.column(name).null_count == table.num_rows)


def dictionary_columns(table: pa.Table) -> list[str]:
    """The Parquet column paths worth a dictionary: strings and lists of strings that hold a value (addresses,
    enums, names repeat). Times, counters and floats are nearly unique per row: a dictionary for them cost
    more CPU than the rest of the encoding and made files larger (bench/README.md, writer section)."""
    return [_leaf_path(field) for field in table.schema
            if (_is_text(field.type) or (pa.types.is_list(field.type) and _is_text(field.type.value_type)))
            and not _all_null(table, field.name)]


def column_compression(table: pa.Table, codec: str) -> str | dict[str, str]:
    """`codec` for every column that holds a value; none for the columns that are null in every row (often
    half of them: GeoIP off, fields a log type rarely sets), whose pages are a few bytes each, where the
    codec's per-page set-up (a zstd context) cost more than the rest of the encoding."""
    if codec == "none" or not any(_all_null(table, name) for name in table.column_names):
        return codec
    return {_leaf_path(field): "none" if _all_null(table, field.name) else codec for field in table.schema}


def write_table(sink: pa.NativeFile, table: pa.Table, options: ParquetOptions, metadata: Mapping[bytes, bytes]) -> None:
    """Write `table` to an open sink (the caller closes and syncs it)."""
    schema = table.schema.with_metadata({**(table.schema.metadata or {}), **metadata})
    level = options.compression_level if options.compression in ("zstd", "gzip", "brotli") else None
    compression = column_compression(table, options.codec)
    levels: int | dict[str, int] | None = level
    if isinstance(compression, dict) and level is not None:  # a level for an uncompressed column is an error
        levels = {path: level for path, codec in compression.items() if codec != "none"}
    with pq.ParquetWriter(
        sink,
        schema,
        compression=compression,
        compression_level=levels,
        use_dictionary=dictionary_columns(table) if options.dictionary else False,
        write_statistics=options.statistics,
    ) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata), row_group_size=options.row_group_size)
