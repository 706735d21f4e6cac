"""The real catalog servers the Iceberg output is tested against, used through pyiceberg directly: a SQL catalog
on PostgreSQL, and Apache Iceberg's REST catalog server with a warehouse on local disk and on the loopback S3
server. Each test creates a namespace and a table, appends a small Arrow table, and reads it back through a second
catalog client (types, row count) and, independently, from the Parquet files the table lists."""

from __future__ import annotations

import datetime as dt
import os
import signal
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table

from tests.infra import catalog_fixtures, s3_fixtures
from tests.infra.iceberg_rest import IcebergRestCatalog
from tests.infra.postgres import PostgresServer
from tests.infra.s3 import S3Server

pytestmark = pytest.mark.integration

s3_server = s3_fixtures.s3_server
iceberg_rest_s3_catalog = catalog_fixtures.iceberg_rest_s3_catalog

ROWS = pa.table(
    {
        "ts": pa.array(
            [dt.datetime(2026, 12, 2, 16, minute, tzinfo=dt.UTC) for minute in range(5)], pa.timestamp("us", tz="UTC")
        ),
        "uid": pa.array([f"C{n}" for n in range(5)], pa.string()),
        "orig_bytes": pa.array([0, 1, None, 300, 2**40], pa.int64()),
        "ok": pa.array([True, False, True, None, True], pa.bool_()),
    }
)


def _round_trip(writer: Catalog, reader: Catalog) -> Table:
    """Namespace, table and one append through `writer`; the table as `reader`, a separate client, loads it."""
    namespace = f"ns_{uuid.uuid4().hex[:8]}"
    writer.create_namespace(namespace)
    writer.create_table(f"{namespace}.conn", schema=ROWS.schema).append(ROWS)
    assert (namespace,) in reader.list_namespaces()
    assert (namespace, "conn") in reader.list_tables(namespace)
    table = reader.load_table(f"{namespace}.conn")
    scanned = table.scan().to_arrow().sort_by("uid")
    assert scanned.num_rows == ROWS.num_rows
    assert scanned.column("uid").to_pylist() == ROWS.column("uid").to_pylist()
    assert scanned.column("orig_bytes").to_pylist() == ROWS.column("orig_bytes").to_pylist()
    assert scanned.column("ok").to_pylist() == ROWS.column("ok").to_pylist()
    assert scanned.column("ts").to_pylist() == ROWS.column("ts").to_pylist()
    _assert_types(scanned.schema)
    return table


def _assert_types(schema: pa.Schema) -> None:
    """Zeek's types survive: microsecond UTC timestamps, 64-bit integers, strings, booleans."""
    ts = schema.field("ts").type
    assert pa.types.is_timestamp(ts) and ts.unit == "us" and ts.tz in ("UTC", "+00:00"), ts
    assert schema.field("orig_bytes").type == pa.int64()
    assert pa.types.is_string(schema.field("uid").type) or pa.types.is_large_string(schema.field("uid").type)
    assert schema.field("ok").type == pa.bool_()


def _data_files(table: Table) -> list[str]:
    return [task.file.file_path for task in table.scan().plan_files()]


def _assert_parquet_files(table: Table, read: Any) -> None:
    """The Parquet files the snapshot lists, read without pyiceberg, hold exactly the appended rows."""
    files = _data_files(table)
    assert files, "the snapshot lists no data file"
    tables = [read(path) for path in files]
    assert sum(t.num_rows for t in tables) == ROWS.num_rows
    for parquet in tables:
        _assert_types(parquet.schema)


def test_postgres_sql_catalog_keeps_tables_in_postgres(postgres_catalog_uri: str, tmp_path: Path) -> None:
    warehouse = (tmp_path / "warehouse").as_uri()
    writer = load_catalog("pg", type="sql", uri=postgres_catalog_uri, warehouse=warehouse)
    reader = load_catalog("pg", type="sql", uri=postgres_catalog_uri, warehouse=warehouse)
    table = _round_trip(writer, reader)
    _assert_parquet_files(table, lambda path: pq.read_table(urllib.parse.urlparse(path).path))
    # The catalog row is PostgreSQL's, read with a plain SQL query, and points at the table's current metadata.
    engine = sqlalchemy.create_engine(postgres_catalog_uri)
    try:
        with engine.connect() as connection:
            server = connection.execute(sqlalchemy.text("SELECT version()")).scalar_one()
            rows = connection.execute(
                sqlalchemy.text("SELECT table_name, metadata_location FROM iceberg_tables WHERE catalog_name = 'pg'")
            ).all()
    finally:
        engine.dispose()
    assert server.startswith("PostgreSQL "), server
    assert rows == [("conn", table.metadata_location)]


def test_postgres_fixture_stops_by_pid_and_removes_its_cluster() -> None:
    server = PostgresServer()
    with server:
        assert server.process is not None
        pid = server.process.pid
        workdir = server.workdir
        assert workdir is not None and (workdir / "data" / "PG_VERSION").exists()
        server.create_database("probe")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, signal.SIG_DFL)
    assert not workdir.exists()


def test_rest_catalog_on_local_disk(iceberg_rest_catalog: IcebergRestCatalog) -> None:
    writer = load_catalog("rest", type="rest", uri=iceberg_rest_catalog.uri)
    reader = load_catalog("rest", type="rest", uri=iceberg_rest_catalog.uri)
    table = _round_trip(writer, reader)
    warehouse = urllib.parse.urlparse(iceberg_rest_catalog.warehouse).path
    for path in _data_files(table):
        assert urllib.parse.urlparse(path).path.startswith(warehouse), path
    assert urllib.parse.urlparse(table.metadata_location).path.startswith(warehouse), table.metadata_location
    _assert_parquet_files(table, lambda path: pq.read_table(urllib.parse.urlparse(path).path))


def test_rest_catalog_with_s3_warehouse(iceberg_rest_s3_catalog: IcebergRestCatalog, s3_server: S3Server) -> None:
    client = {
        "type": "rest",
        "uri": iceberg_rest_s3_catalog.uri,
        "s3.endpoint": s3_server.endpoint,
        "s3.access-key-id": s3_server.access_key,
        "s3.secret-access-key": s3_server.secret_key,
        "s3.region": s3_server.region,
    }
    table = _round_trip(load_catalog("rest_s3", **client), load_catalog("rest_s3", **client))
    bucket_prefix = iceberg_rest_s3_catalog.warehouse
    # The server wrote the metadata through S3FileIO, the client the data files: both in the bucket.
    assert table.metadata_location.startswith(bucket_prefix), table.metadata_location
    filesystem = s3_server.filesystem()
    assert filesystem.get_file_info(table.metadata_location.removeprefix("s3://")).size > 0
    _assert_parquet_files(table, lambda path: pq.read_table(path.removeprefix("s3://"), filesystem=filesystem))
