"""Parquet settings reach the file: codec, row groups, dictionary, statistics, self-describing metadata."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.unit.test_writer_support import CONFIG, documents
from zeek_pipeline.core.schema import META_LOG_TYPE, META_SCHEMA_VERSION
from zeek_pipeline.writer.convert import Converter
from zeek_pipeline.writer.parquet_file import ParquetOptions, file_metadata, write_table


@pytest.fixture(scope="module")
def dns_table() -> pa.Table:
    docs = documents("dns", 5000)
    return Converter.from_config_dir(CONFIG).convert("dns", docs, [0] * len(docs), list(range(len(docs)))).table


def write(path: Path, table: pa.Table, options: ParquetOptions) -> pq.FileMetaData:
    with pa.OSFile(str(path), "wb") as sink:
        write_table(sink, table, options, file_metadata("dns", "1"))
    return pq.read_metadata(path)


@pytest.mark.parametrize(("compression", "codec"), [
    ("zstd", "ZSTD"), ("snappy", "SNAPPY"), ("gzip", "GZIP"), ("lz4", "LZ4"), ("none", "UNCOMPRESSED")])
def test_every_compression_is_written_and_read_back_by_duckdb(tmp_path: Path, dns_table: pa.Table,
                                                              compression: str, codec: str) -> None:
    path = tmp_path / f"{compression}.parquet"
    meta = write(path, dns_table, ParquetOptions(compression=compression))
    assert meta.row_group(0).column(0).compression == codec
    assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall() == [(dns_table.num_rows,)]
    assert pq.read_table(path).equals(dns_table.replace_schema_metadata(pq.read_table(path).schema.metadata))


def test_row_group_size_is_applied(tmp_path: Path, dns_table: pa.Table) -> None:
    meta = write(tmp_path / "rg.parquet", dns_table, ParquetOptions(row_group_size=1024))
    assert meta.num_row_groups == -(-dns_table.num_rows // 1024)
    assert meta.row_group(0).num_rows == 1024


def test_dictionary_and_statistics_can_be_switched_off(tmp_path: Path, dns_table: pa.Table) -> None:
    column = dns_table.column_names.index("dns_qtype")
    on = write(tmp_path / "on.parquet", dns_table, ParquetOptions()).row_group(0).column(column)
    off = write(tmp_path / "off.parquet", dns_table, ParquetOptions(dictionary=False, statistics=False))
    off_column = off.row_group(0).column(column)
    assert "RLE_DICTIONARY" in on.encodings and on.is_stats_set
    assert "RLE_DICTIONARY" not in off_column.encodings and not off_column.is_stats_set


def test_key_value_metadata_names_log_type_and_schema_version(tmp_path: Path, dns_table: pa.Table) -> None:
    meta = write(tmp_path / "m.parquet", dns_table, ParquetOptions()).metadata
    assert meta[META_LOG_TYPE] == b"dns"
    assert meta[META_SCHEMA_VERSION] == b"1"
    assert meta[b"zeek_pipeline.writer"].startswith(b"zeek-pipeline ")


def test_dictionary_is_kept_for_strings_and_left_off_for_times_and_numbers(tmp_path: Path, dns_table: pa.Table) -> None:
    path = tmp_path / "d.parquet"
    row_group = write(path, dns_table, ParquetOptions()).row_group(0)
    encodings = {row_group.column(i).path_in_schema: row_group.column(i).encodings
                 for i in range(row_group.num_columns)}
    for text in ("dns_qtype", "src_ip", "answers.list.element"):
        assert "RLE_DICTIONARY" in encodings[text], text
    for number in ("event_time", "_kafka_offset", "rtt", "TTLs.list.element", "trans_id"):
        assert "RLE_DICTIONARY" not in encodings[number], number
    back = pq.read_table(path)
    assert back.equals(dns_table.replace_schema_metadata(back.schema.metadata))
    assert back.schema.field("answers").type == pa.list_(pa.string())


@pytest.mark.parametrize("level", [None, 3])
def test_columns_null_in_every_row_are_stored_uncompressed_and_read_back(tmp_path: Path, dns_table: pa.Table,
                                                                        level: int | None) -> None:
    empty = [name for name in dns_table.column_names if dns_table.column(name).null_count == dns_table.num_rows]
    assert "src_geo_country" in empty  # GeoIP is off in the shipped config
    path = tmp_path / "n.parquet"
    row_group = write(path, dns_table, ParquetOptions(compression_level=level)).row_group(0)
    codecs = {row_group.column(i).path_in_schema.removesuffix(".list.element"): row_group.column(i).compression
              for i in range(row_group.num_columns)}
    assert {codecs[name] for name in empty} == {"UNCOMPRESSED"}
    assert {codecs[name] for name in dns_table.column_names if name not in empty} == {"ZSTD"}
    back = pq.read_table(path)
    assert back.equals(dns_table.replace_schema_metadata(back.schema.metadata))
    assert duckdb.sql(f"select count(*), count(src_geo_country), count(answers) from read_parquet('{path}')"
                      ).fetchall() == [(dns_table.num_rows, 0, dns_table.column("answers").length()
                                        - dns_table.column("answers").null_count)]
