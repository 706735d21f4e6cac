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


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet column paths worth a dictionary: strings and lists of strings (addresses, enums, names
    repeat). Times, counters and floats are nearly unique per row: a dictionary for them cost more CPU than
    the rest of the encoding and made files larger (bench/README.md, writer section)."""
    paths: list[str] = []
    for field in schema:
        if _is_text(field.type):
            paths.append(field.name)
        elif pa.types.is_list(field.type) and _is_text(field.type.value_type):
            paths.append(f"{field.name}.list.element")  # the leaf of a list, as pyarrow names it
    return paths


def write_table(sink: pa.NativeFile, table: pa.Table, options: ParquetOptions, metadata: Mapping[bytes, bytes]) -> None:
    """Write `table` to an open sink (the caller closes and syncs it)."""
    schema = table.schema.with_metadata({**(table.schema.metadata or {}), **metadata})
    level = options.compression_level if options.compression in ("zstd", "gzip", "brotli") else None
    with pq.ParquetWriter(
        sink,
        schema,
        compression=options.codec,
        compression_level=level,
        use_dictionary=dictionary_columns(schema) if options.dictionary else False,
        write_statistics=options.statistics,
    ) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata), row_group_size=options.row_group_size)
