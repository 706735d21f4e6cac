"""The Iceberg library opened from `output.iceberg` settings on the real catalog servers of the fixtures:
PostgreSQL (two writer processes committing the same records at once), an SQLite catalog with its warehouse on
the loopback S3 server, and Apache Iceberg's REST catalog server. Real sample records, read back by pyiceberg and,
from the data files the table lists, by pyarrow."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from pyiceberg.table import Table

from tests.infra import s3_fixtures
from tests.infra.iceberg_rest import IcebergRestCatalog
from tests.infra.s3 import S3Server
from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK, read_lines
from zeek_pipeline.core.arrow import convert_documents
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN, load_schema
from zeek_pipeline.core.schema import arrow_schema as parquet_schema
from zeek_pipeline.core.transform import Accepted, Transformer
from zeek_pipeline.iceberg.catalog import catalog_properties, ensure_table, open_catalog
from zeek_pipeline.iceberg.commit import commit_exactly_once, committed_offsets
from zeek_pipeline.iceberg.schema import HOUR_PARTITION, conform
from zeek_pipeline.settings import IcebergCatalog, IcebergOutput, S3Settings

pytestmark = pytest.mark.integration

s3_server = s3_fixtures.s3_server

CONFIG = PROJECT_ROOT / "config"
TOPIC = "zeek-normalized"
PARTITIONS = 3


def open_table(settings: IcebergOutput, log_type: str) -> tuple[Table, pa.Table]:
    """The log type's table opened as a writer would, and the sample's records conformed to it."""
    transformer = Transformer.from_config_dir(CONFIG)
    schema = load_schema(CONFIG)
    values = []
    for line in read_lines(SAMPLE_ZEEK / f"{log_type}.json.gz"):
        result = transformer.transform(line, ingest_time_ms=1_713_484_800_123)
        assert isinstance(result, Accepted)
        values.append(result.value)
    conversion = convert_documents(log_type, values, [i % PARTITIONS for i in range(len(values))],
                                   [i // PARTITIONS for i in range(len(values))], schema=schema,
                                   rules=transformer.rules)
    table = ensure_table(open_catalog(settings), settings.namespace, log_type,
                         parquet_schema(log_type, schema, transformer.rules))
    return table, conform(conversion.table, table.schema()).table


def lineage(table: Table) -> Counter[tuple[int, int]]:
    rows = table.scan(selected_fields=(PARTITION_COLUMN, OFFSET_COLUMN)).to_arrow()
    return Counter(zip(rows.column(PARTITION_COLUMN).to_pylist(), rows.column(OFFSET_COLUMN).to_pylist(),
                       strict=True))


def commit_in_steps(settings_json: str, log_type: str, step: int) -> None:
    """One writer process: commits the sample in slices of `step` offsets (all partitions at once)."""
    table, rows = open_table(IcebergOutput.model_validate_json(settings_json), log_type)
    offsets = rows.column(OFFSET_COLUMN).to_pylist()
    for begin in range(0, max(offsets) + 1, step):
        batch = rows.take([index for index, offset in enumerate(offsets) if begin <= offset < begin + step])
        commit_exactly_once(table, TOPIC, batch, attempts=50)


def test_two_writer_processes_on_a_postgres_catalog_commit_every_record_once(postgres_catalog_uri: str,
                                                                             tmp_path: Path) -> None:
    settings = IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=postgres_catalog_uri,
                                                                  warehouse=str(tmp_path / "warehouse")))
    table, rows = open_table(settings, "ntp")  # created once, so both processes only load it
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=commit_in_steps, args=(settings.model_dump_json(), "ntp", step))
               for step in (9, 13)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=600)
    assert [writer.exitcode for writer in writers] == [0, 0]

    table.refresh()
    counts = lineage(table)
    assert len(counts) == rows.num_rows and set(counts.values()) == {1}
    assert committed_offsets(table, TOPIC) == {p: max(o for q, o in counts if q == p) + 1 for p in range(PARTITIONS)}
    assert table.scan().to_arrow().num_rows == rows.num_rows


def test_sql_catalog_password_goes_into_the_uri_not_the_settings_file() -> None:
    catalog = IcebergCatalog(uri="postgresql+psycopg2://zeek@db.example:5432/iceberg",
                             password=SecretStr("s3cr:t/@x"), warehouse="s3://lake/iceberg")
    properties = catalog_properties(catalog, environ={})
    assert properties["uri"] == "postgresql+psycopg2://zeek:s3cr%3At%2F%40x@db.example:5432/iceberg"
    assert "s3cr" not in catalog.model_dump_json()
    assert properties["warehouse"] == "s3://lake/iceberg" and properties["s3.region"] == "us-east-1"


def test_sqlite_catalog_with_its_warehouse_on_s3(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket("iceberg-lake")
    s3 = S3Settings(endpoint=s3_server.endpoint, region=s3_server.region, scheme="http",
                    access_key=SecretStr(s3_server.access_key), secret_key=SecretStr(s3_server.secret_key))
    settings = IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                                                                  warehouse=f"s3://{bucket}/zeek", s3=s3))
    table, rows = open_table(settings, "dns")
    result = commit_exactly_once(table, TOPIC, rows)
    assert result.appended == rows.num_rows

    filesystem = s3_server.filesystem()
    files = [task.file.file_path for task in table.scan().plan_files()]
    assert files and all(path.startswith(f"s3://{bucket}/zeek/zeek/dns/data/{HOUR_PARTITION}=") for path in files)
    read = pa.concat_tables([pq.read_table(path.removeprefix("s3://"), filesystem=filesystem) for path in files])
    assert read.num_rows == rows.num_rows and read.schema.field("_kafka_offset").type == pa.int64()
    again, _ = open_table(settings, "dns")
    assert committed_offsets(again, TOPIC) == result.offsets
    assert again.scan().to_arrow().num_rows == rows.num_rows


def test_rest_catalog_from_settings(iceberg_rest_catalog: IcebergRestCatalog) -> None:
    settings = IcebergOutput(enabled=True, namespace="zeek_rest",
                             catalog=IcebergCatalog(type="rest", uri=iceberg_rest_catalog.uri))
    table, rows = open_table(settings, "smtp")
    early = rows.filter(pc.less(rows.column(OFFSET_COLUMN), 30))  # every record of offsets 0..29
    first = commit_exactly_once(table, TOPIC, early)
    second = commit_exactly_once(table, TOPIC, rows)  # those are covered already
    assert first.offsets == dict.fromkeys(range(PARTITIONS), 30)
    assert (first.appended, second.appended, second.skipped) == (early.num_rows, rows.num_rows - early.num_rows,
                                                                 early.num_rows)
    reader, _ = open_table(settings, "smtp")
    assert committed_offsets(reader, TOPIC) == second.offsets
    counts = lineage(reader)
    assert len(counts) == rows.num_rows and set(counts.values()) == {1}
    warehouse = urlsplit(iceberg_rest_catalog.warehouse).path
    assert all(urlsplit(task.file.file_path).path.startswith(warehouse) for task in reader.scan().plan_files())
