"""DuckDB reads the Iceberg tables through its iceberg extension, loaded offline from the registry's packages.

Tables are written with the iceberg library's public functions (open_catalog, ensure_table, conform,
commit_exactly_once) from the real sample records, typed like the writer types them, into an SQLite catalog
(warehouse in tmp_path, or on the loopback S3 server) or Apache Iceberg's REST catalog server. DuckDB opens
them by metadata location with `iceberg_scan`, or attaches the REST catalog, with auto-install and auto-load
of extensions off (tests/infra/duckdb_iceberg.py), and must agree with pyiceberg's scan on rows, column
names, types and values.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from pydantic import SecretStr
from pyiceberg.table import Table
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    StringType,
    TimestamptzType,
)

from tests.infra import duckdb_iceberg, s3_fixtures
from tests.infra.iceberg_rest import IcebergRestCatalog
from tests.infra.s3 import S3Server
from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK, read_lines
from zeek_pipeline.core.arrow import convert_documents
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN, ZeekSchema, load_schema
from zeek_pipeline.core.schema import arrow_schema as parquet_schema
from zeek_pipeline.core.transform import Accepted, Transformer
from zeek_pipeline.iceberg import commit_exactly_once, conform, ensure_table, open_catalog
from zeek_pipeline.settings import IcebergCatalog, IcebergOutput, S3Settings

pytestmark = pytest.mark.integration

s3_server = s3_fixtures.s3_server

CONFIG = PROJECT_ROOT / "config"
TOPIC = "zeek-normalized"
PARTITIONS = 3
INGEST_MS = 1_713_484_800_123
SAMPLE_TYPES = sorted(path.name.removesuffix(".json.gz") for path in SAMPLE_ZEEK.glob("*.json.gz"))
LINEAGE_ORDER = [(PARTITION_COLUMN, "ascending"), (OFFSET_COLUMN, "ascending")]
DOCS = PROJECT_ROOT / "docs" / "iceberg.md"
DOCUMENTED_BLOCK = re.compile(r"^```duckdb\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDER = re.compile(r"<[a-z][a-z ]*>")
# the SQL catalog's table of tables (pyiceberg's SqlCatalog, Iceberg's JDBC catalog layout)
CURRENT_METADATA = ("SELECT metadata_location FROM iceberg_tables "
                    "WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?")
DUCKDB_TYPES: dict[type[IcebergType], str] = {
    TimestamptzType: "TIMESTAMP WITH TIME ZONE", LongType: "BIGINT", IntegerType: "INTEGER",
    DoubleType: "DOUBLE", BooleanType: "BOOLEAN", StringType: "VARCHAR",
}


def documented(first_words: str, values: Mapping[str, str]) -> list[str]:
    """The statements of the `duckdb` block of docs/iceberg.md that starts with `first_words`, comments
    dropped and placeholders replaced by `values`."""
    blocks = [block for block in DOCUMENTED_BLOCK.findall(DOCS.read_text()) if block.startswith(first_words)]
    assert len(blocks) == 1, (first_words, blocks)
    text = "\n".join(line.split("--")[0] for line in blocks[0].splitlines())
    for placeholder, value in values.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    statements = [statement.strip() for statement in text.split(";") if statement.strip()]
    assert not [s for s in statements if PLACEHOLDER.search(s)], statements
    return statements


def run_documented(con: duckdb.DuckDBPyConnection, first_words: str,
                   values: Mapping[str, str]) -> list[list[tuple[object, ...]]]:
    return [con.execute(statement).fetchall() for statement in documented(first_words, values)]


@pytest.fixture(scope="module")
def transformer() -> Transformer:
    return Transformer.from_config_dir(CONFIG)


@pytest.fixture(scope="module")
def zeek_schema() -> ZeekSchema:
    return load_schema(CONFIG)


def typed(log_type: str, transformer: Transformer, zeek_schema: ZeekSchema) -> pa.Table:
    """The sample's records of one log type, typed as the writer types them; record i is partition i % 3,
    offset i // 3."""
    values = []
    for line in read_lines(SAMPLE_ZEEK / f"{log_type}.json.gz"):
        result = transformer.transform(line, ingest_time_ms=INGEST_MS)
        assert isinstance(result, Accepted), result
        values.append(result.value)
    conversion = convert_documents(log_type, values, [i % PARTITIONS for i in range(len(values))],
                                   [i // PARTITIONS for i in range(len(values))], schema=zeek_schema,
                                   rules=transformer.rules)
    assert not conversion.rejects
    return conversion.table


def written(settings: IcebergOutput, log_type: str, transformer: Transformer,
            zeek_schema: ZeekSchema) -> tuple[Table, pa.Table]:
    """The log type's table, opened as a writer opens it, and the sample typed and conformed to it (not yet
    committed)."""
    table = ensure_table(open_catalog(settings), settings.namespace, log_type,
                         parquet_schema(log_type, zeek_schema, transformer.rules))
    conformed = conform(typed(log_type, transformer, zeek_schema), table.schema())
    assert not conformed.rejects
    return table, conformed.table


def local_settings(tmp_path: Path) -> IcebergOutput:
    return IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                                                              warehouse=str(tmp_path / "warehouse")))


def duckdb_type(kind: IcebergType) -> str:
    """The DuckDB type an Iceberg column must read as."""
    if isinstance(kind, ListType):
        return duckdb_type(kind.element_type) + "[]"
    return DUCKDB_TYPES[type(kind)]


def described(con: duckdb.DuckDBPyConnection, location: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM iceberg_scan('{location}')").fetchall()
    return {row[0]: row[1] for row in rows}


def scanned(con: duckdb.DuckDBPyConnection, location: str, schema: pa.Schema) -> pa.Table:
    """DuckDB's rows in lineage order, cast to pyiceberg's Arrow schema (a failing cast is a type mismatch)."""
    rows = con.execute("SELECT * FROM iceberg_scan(?)", [location]).to_arrow_table()
    return rows.cast(schema).sort_by(LINEAGE_ORDER)


def assert_duckdb_matches_pyiceberg(con: duckdb.DuckDBPyConnection, table: Table, what: str) -> None:
    """Same rows, names, types and values through DuckDB's iceberg_scan as through pyiceberg's scan."""
    expected = table.scan().to_arrow()
    types = described(con, table.metadata_location)
    assert list(types) == expected.column_names, what  # Iceberg names (dots kept), mapped by field id
    assert types == {field.name: duckdb_type(field.field_type) for field in table.schema().fields}, what
    rows = scanned(con, table.metadata_location, expected.schema)
    assert rows.num_rows == expected.num_rows > 0, what
    assert rows.equals(expected.sort_by(LINEAGE_ORDER)), what


def test_the_extensions_load_from_their_packages_with_auto_install_and_auto_load_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    con = duckdb_iceberg.connect(httpfs=True)
    assert {"avro", "iceberg", "httpfs"} <= duckdb_iceberg.loaded_extensions(con)
    settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name LIKE 'auto%known_extensions'")
                    .fetchall())
    assert settings == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    for name in ("avro", "iceberg", "httpfs"):
        path = duckdb_iceberg.extension_path(name)
        assert f"duckdb_extension_{name}" in path.parts and path.parent.name == f"v{duckdb.__version__}", path

    bare = duckdb.connect(config=dict(duckdb_iceberg.OFFLINE))  # nothing is fetched behind the test's back
    with pytest.raises(duckdb.CatalogException, match="iceberg_scan"):
        bare.execute("SELECT * FROM iceberg_scan('/nowhere/metadata.json')")
    with pytest.raises(duckdb.InvalidInputException, match="avro"):  # iceberg needs avro loaded first
        duckdb_iceberg.load_extensions(bare, ("iceberg",))

    documented_con = duckdb.connect()  # the statements docs/iceberg.md gives, on a default connection
    run_documented(documented_con, "SET autoinstall", {"<pkg>": str(duckdb_iceberg.extension_path("avro").parents[3])})
    assert {"avro", "iceberg", "httpfs"} <= duckdb_iceberg.loaded_extensions(documented_con)
    assert documented_con.execute("SELECT current_setting('autoload_known_extensions')").fetchone() == (False,)

    monkeypatch.setattr(duckdb_iceberg, "duckdb_release", lambda: "v0.0.1")
    with pytest.raises(duckdb_iceberg.ExtensionPackageError, match=f"it has: v{duckdb.__version__}"):
        duckdb_iceberg.extension_path("iceberg")
    with pytest.raises(duckdb_iceberg.ExtensionPackageError, match="not installed"):
        duckdb_iceberg.extension_path("no_such_extension")


def test_duckdb_reads_every_sample_log_type_as_pyiceberg_does(tmp_path: Path, transformer: Transformer,
                                                              zeek_schema: ZeekSchema) -> None:
    assert len(SAMPLE_TYPES) >= 20
    settings = local_settings(tmp_path)
    con = duckdb_iceberg.connect()
    seen: set[str] = set()
    counts = 0
    for log_type in SAMPLE_TYPES:
        table, rows = written(settings, log_type, transformer, zeek_schema)
        result = commit_exactly_once(table, TOPIC, rows)
        assert result.appended == rows.num_rows, log_type
        assert_duckdb_matches_pyiceberg(con, table, log_type)
        seen.update(duckdb_type(field.field_type) for field in table.schema().fields)

        source = parquet_schema(log_type, zeek_schema, transformer.rules)
        types = described(con, table.metadata_location)
        assert types["event_time"] == "TIMESTAMP WITH TIME ZONE" and types["_extra"] == "VARCHAR", log_type
        for field in source:  # Zeek's count (uint64) reads as BIGINT, a set/vector of counts as BIGINT[]
            if pa.types.is_uint64(field.type):
                assert types[field.name] == "BIGINT", (log_type, field.name)
                counts += 1
            if pa.types.is_list(field.type) and pa.types.is_uint64(field.type.value_type):
                assert types[field.name] == "BIGINT[]", (log_type, field.name)
    assert counts > 20  # Zeek counts are common in the sample
    # the sample exercises every mapped type, lists included
    assert {"TIMESTAMP WITH TIME ZONE", "BIGINT", "INTEGER", "DOUBLE", "BOOLEAN", "VARCHAR", "VARCHAR[]"} <= seen


def test_an_earlier_snapshot_reads_back_with_its_own_rows(tmp_path: Path, transformer: Transformer,
                                                          zeek_schema: ZeekSchema) -> None:
    table, rows = written(local_settings(tmp_path), "dns", transformer, zeek_schema)
    early = rows.filter(pa.compute.less(rows.column(OFFSET_COLUMN), 20))
    first = commit_exactly_once(table, TOPIC, early)
    first_metadata = table.metadata_location
    second = commit_exactly_once(table, TOPIC, rows)
    assert first.snapshot_id is not None and second.snapshot_id is not None
    assert (first.appended, second.appended) == (early.num_rows, rows.num_rows - early.num_rows)
    location = table.metadata_location
    with sqlite3.connect(tmp_path / "catalog.db") as catalog:  # where docs/iceberg.md finds the location
        assert catalog.execute(CURRENT_METADATA, ("zeek", "zeek", "dns")).fetchone() == (location,)
    con = duckdb_iceberg.connect()

    snapshots = con.execute("SELECT sequence_number, snapshot_id FROM iceberg_snapshots(?) ORDER BY 1",
                            [location]).fetchall()
    assert [snapshot_id for _, snapshot_id in snapshots] == [first.snapshot_id, second.snapshot_id]
    count = "SELECT count(*), max(_kafka_offset) FROM iceberg_scan(?{})"
    assert con.execute(count.format(""), [location]).fetchone() == (rows.num_rows, max(rows[OFFSET_COLUMN].to_pylist()))
    assert con.execute(count.format(", snapshot_from_id = ?"), [location, first.snapshot_id]).fetchone() == (
        early.num_rows, 19)
    assert con.execute(count.format(""), [first_metadata]).fetchone() == (early.num_rows, 19)  # an older version
    assert table.scan(snapshot_id=first.snapshot_id).to_arrow().num_rows == early.num_rows  # pyiceberg agrees

    scan, history, travel = run_documented(con, "SELECT count(*), min(event_time)", {
        "<metadata location>": location, "<snapshot id>": str(first.snapshot_id)})
    assert scan[0][0] == rows.num_rows and scan[0][1] == min(rows["event_time"].to_pylist())
    assert sorted(row[:2] for row in history) == snapshots and travel == [(early.num_rows,)]


def test_duckdb_reads_a_table_whose_warehouse_is_on_the_s3_server(s3_server: S3Server, tmp_path: Path,
                                                                  transformer: Transformer,
                                                                  zeek_schema: ZeekSchema) -> None:
    bucket = s3_server.create_bucket("iceberg-duckdb")
    s3 = S3Settings(endpoint=s3_server.endpoint, region=s3_server.region, scheme="http",
                    access_key=SecretStr(s3_server.access_key), secret_key=SecretStr(s3_server.secret_key))
    settings = IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                                                                  warehouse=f"s3://{bucket}/lake", s3=s3))
    for log_type in ("x509", "ssl"):
        table, rows = written(settings, log_type, transformer, zeek_schema)
        commit_exactly_once(table, TOPIC, rows)
        assert table.metadata_location.startswith(f"s3://{bucket}/lake/"), table.metadata_location

        without_httpfs = duckdb_iceberg.connect()
        with pytest.raises(duckdb.Error, match="httpfs"):
            without_httpfs.execute("SELECT count(*) FROM iceberg_scan(?)", [table.metadata_location])
        con = duckdb_iceberg.connect(httpfs=True)
        duckdb_iceberg.create_s3_secret(con, endpoint=s3_server.endpoint, region=s3_server.region,
                                        access_key=s3_server.access_key, secret_key=s3_server.secret_key)
        assert_duckdb_matches_pyiceberg(con, table, log_type)

        documented_con = duckdb_iceberg.connect(httpfs=True)  # docs/iceberg.md's secret and query
        _, count = run_documented(documented_con, "CREATE SECRET zeek_s3", {
            "<access key>": s3_server.access_key, "<secret key>": s3_server.secret_key,
            "us-east-1": s3_server.region, "s3.example.internal:8333": s3_server.endpoint.split("://", 1)[1],
            "<metadata location>": table.metadata_location})
        assert count == [(rows.num_rows,)], log_type


def test_duckdb_attaches_the_rest_catalog_and_reads_its_tables_and_their_history(
        iceberg_rest_catalog: IcebergRestCatalog, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    settings = IcebergOutput(enabled=True, namespace="zeek_duckdb",
                             catalog=IcebergCatalog(type="rest", uri=iceberg_rest_catalog.uri))
    table, rows = written(settings, "smtp", transformer, zeek_schema)
    early = rows.filter(pa.compute.less(rows.column(OFFSET_COLUMN), 20))
    first = commit_exactly_once(table, TOPIC, early)
    commit_exactly_once(table, TOPIC, rows)

    without_httpfs = duckdb_iceberg.connect()  # the REST client is httpfs's
    with pytest.raises(duckdb.Error, match="httpfs"):
        duckdb_iceberg.attach_rest_catalog(without_httpfs, "lake", iceberg_rest_catalog.uri)
    con = duckdb_iceberg.connect(httpfs=True)
    duckdb_iceberg.attach_rest_catalog(con, "lake", iceberg_rest_catalog.uri)
    assert con.execute("SELECT count(*) FROM lake.zeek_duckdb.smtp").fetchone() == (rows.num_rows,)
    assert con.execute(f"SELECT count(*) FROM lake.zeek_duckdb.smtp AT (VERSION => {first.snapshot_id})"
                       ).fetchone() == (early.num_rows,)
    assert_duckdb_matches_pyiceberg(con, table, "smtp over REST")  # the same table by its metadata location

    documented_con = duckdb_iceberg.connect(httpfs=True)  # docs/iceberg.md's ATTACH and queries
    _, count, travel = run_documented(documented_con, "ATTACH", {
        "http://rest-catalog:8181": iceberg_rest_catalog.uri, "lake.zeek.dns": "lake.zeek_duckdb.smtp",
        "<snapshot id>": str(first.snapshot_id)})
    assert (count, travel) == ([(rows.num_rows,)], [(early.num_rows,)])
