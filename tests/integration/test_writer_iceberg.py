"""The parquet-writer with output.iceberg on (beside the Hive output), as a real process on the real broker,
with an SQLite catalog on local disk: every record in the Hive lake and in its log type's table exactly once,
after kill -9 between the Hive publish and the table commit (a failpoint), during the recovery that rolls the
table commit forward, at random moments, and with two writers in one group. Tables are read back with
pyiceberg scans and with DuckDB's iceberg_scan (extensions loaded offline)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from pyiceberg.catalog import Catalog

from tests.infra import duckdb_iceberg, s3_fixtures, topics
from tests.infra.s3 import S3Server
from tests.infra.zeek_data import SAMPLE_ZEEK
from tests.integration.test_writer_faults import BUSY, kill_at_random_moments, real_stream, s3_lake, wait_until
from tests.integration.test_writer_support import (
    Coordinate,
    Feeder,
    Lake,
    assert_exactly_once,
    last_data_offsets,
    produce_transactional,
    running,
    topic_coordinates,
)
from tests.unit.test_writer_support import documents, interleave
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN
from zeek_pipeline.iceberg.catalog import open_catalog
from zeek_pipeline.iceberg.commit import committed_offsets
from zeek_pipeline.settings import IcebergCatalog, IcebergOutput, S3Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

s3_server = s3_fixtures.s3_server

NAMESPACE = "zeek"
SAMPLE_TYPES = sorted(path.name.removesuffix(".json.gz") for path in SAMPLE_ZEEK.glob("*.json.gz"))


@dataclass
class IcebergLake(Lake):
    """A Lake whose writers also commit to Iceberg tables in an SQLite catalog under the work directory;
    the warehouse is beside it, or on the S3 server (`s3_warehouse`)."""

    s3_warehouse: S3Server | None = None
    warehouse_url: str = ""

    def iceberg_settings(self) -> IcebergOutput:
        s3 = S3Settings()
        if self.s3_warehouse is not None:
            server = self.s3_warehouse
            if not self.warehouse_url:
                self.warehouse_url = f"s3://{server.create_bucket(topics.unique_name('wh'))}/tables"
            s3 = S3Settings(endpoint=server.endpoint, region=server.region, scheme="http",
                            access_key=SecretStr(server.access_key), secret_key=SecretStr(server.secret_key))
        return IcebergOutput(enabled=True, catalog=IcebergCatalog(
            uri=f"sqlite:///{self.workdir / 'iceberg' / 'catalog.db'}",
            warehouse=self.warehouse_url or str(self.workdir / "iceberg" / "wh"), s3=s3))

    def service_env(self) -> dict[str, str]:
        settings = self.iceberg_settings()
        (self.workdir / "iceberg").mkdir(parents=True, exist_ok=True)
        prefix = "ZEEK_PIPELINE_OUTPUT__ICEBERG__CATALOG__"
        env = {**super().service_env(), "ZEEK_PIPELINE_OUTPUT__ICEBERG__ENABLED": "true",
               prefix + "URI": str(settings.catalog.uri), prefix + "WAREHOUSE": str(settings.catalog.warehouse)}
        s3 = settings.catalog.s3
        if s3.endpoint is not None and s3.access_key is not None and s3.secret_key is not None:
            env |= {prefix + "S3__ENDPOINT": s3.endpoint, prefix + "S3__REGION": s3.region,
                    prefix + "S3__SCHEME": s3.scheme, prefix + "S3__ACCESS_KEY": s3.access_key.get_secret_value(),
                    prefix + "S3__SECRET_KEY": s3.secret_key.get_secret_value()}
        return env

    def catalog(self) -> Catalog:
        return open_catalog(self.iceberg_settings())


def scanned(catalog: Catalog) -> dict[str, list[Coordinate]]:
    """pyiceberg: log type -> (partition, offset) of every row of its table."""
    out: dict[str, list[Coordinate]] = {}
    for _namespace, name in catalog.list_tables(NAMESPACE):
        table = catalog.load_table((NAMESPACE, name)).scan(selected_fields=(PARTITION_COLUMN, OFFSET_COLUMN)).to_arrow()
        assert table.schema.field(OFFSET_COLUMN).type == pa.int64()
        out[name] = list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    return out


def duckdb_counts(catalog: Catalog, s3: S3Server | None = None) -> dict[str, int]:
    """DuckDB's iceberg_scan of each table's current metadata: rows per log type (and distinct coordinates)."""
    con = duckdb_iceberg.connect(httpfs=s3 is not None)
    if s3 is not None:
        duckdb_iceberg.create_s3_secret(con, endpoint=s3.endpoint, region=s3.region, access_key=s3.access_key,
                                        secret_key=s3.secret_key)
    out = {}
    for _namespace, name in catalog.list_tables(NAMESPACE):
        location = catalog.load_table((NAMESPACE, name)).metadata_location
        rows, distinct = con.sql(f"select count(*), count(distinct ({PARTITION_COLUMN}, {OFFSET_COLUMN})) "
                                 f"from iceberg_scan('{location}')").fetchone()  # type: ignore[misc]
        assert rows == distinct, f"{name}: {rows - distinct} rows twice in DuckDB's view"
        kinds = dict(con.sql(f"select column_name, column_type from (describe select * from iceberg_scan('{location}'))"
                             ).fetchall())
        assert kinds["event_time"] == "TIMESTAMP WITH TIME ZONE" and kinds[OFFSET_COLUMN] == "BIGINT", kinds
        out[name] = rows
    return out


def hive_counts(lake: Lake) -> dict[str, int]:
    """Rows per log type of the Hive lake (a pyarrow dataset's files, on disk or S3)."""
    fs, root = lake._fs_and_root()
    counts: Counter[str] = Counter()
    for path in lake.dataset().files:
        with fs.open_input_file(path) as source:
            counts[path.removeprefix(root + "/").split("/", 1)[0]] += pq.ParquetFile(source).metadata.num_rows
    return dict(counts)


def assert_tables_exactly_once(lake: IcebergLake, expected: set[Coordinate]) -> None:
    """Every expected record once in the tables, in its log type's table, as in the Hive lake."""
    catalog = lake.catalog()
    tables = scanned(catalog)
    counts = Counter(c for rows in tables.values() for c in rows)
    duplicated = {c: n for c, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} records twice in the tables, e.g. {list(duplicated.items())[:5]}"
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} records missing from the tables, e.g. {sorted(missing)[:5]}"
    assert set(counts) == expected
    per_type = {name: len(rows) for name, rows in tables.items()}
    assert per_type == hive_counts(lake)
    assert duckdb_counts(catalog, lake.s3_warehouse) == per_type
    for name, rows in tables.items():  # each table's map covers its rows
        offsets = committed_offsets(catalog.load_table((NAMESPACE, name)), lake.topic)
        for partition, offset in rows:
            assert offset < offsets[partition], (name, partition, offset, offsets)


def finish(lake: IcebergLake, total: int, **env: str) -> set[Coordinate]:
    last = last_data_offsets(lake.bootstrap, lake.topic, total)
    writer = lake.start("writer-final", **{**BUSY, **env})
    writer.wait_assigned(lake.partitions, timeout=90)
    lake.wait_written(last, timeout=180, alive=writer)
    assert writer.terminate() == 0, writer.tail()
    expected = topic_coordinates(lake.bootstrap, lake.topic, total)
    assert_exactly_once(lake, expected)
    return expected


def test_the_writer_puts_every_sample_record_in_the_lake_and_in_the_tables(kafka_bootstrap: str,
                                                                           tmp_path: Path) -> None:
    values = interleave(*(documents(log_type, 4000) for log_type in SAMPLE_TYPES))
    lake = IcebergLake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"))
    lake.create()
    with running(lake):
        produce_transactional(kafka_bootstrap, lake.topic, values, partitions=lake.partitions)
        expected = finish(lake, len(values))
    assert topics.consume_all(kafka_bootstrap, lake.dlq, timeout=10, idle=2) == []
    assert_tables_exactly_once(lake, expected)
    assert len(scanned(lake.catalog())) == len({doc.split(b'"log_type":"', 1)[1].split(b'"', 1)[0] for doc in values})


def dies(lake: IcebergLake, instance: str, failpoint: str, timeout: float = 120.0) -> None:
    """Start a writer that kills itself (SIGKILL) at `failpoint`, and wait for it to die."""
    writer = lake.start(instance, ZEEK_WRITER_FAILPOINT=failpoint, **BUSY)
    deadline = time.monotonic() + timeout
    while writer.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert writer.process.returncode == -9, f"{failpoint}: not killed there\n{writer.tail()}"


def test_kill_between_the_publish_and_the_table_commit_and_during_its_roll_forward(kafka_bootstrap: str,
                                                                                  tmp_path: Path) -> None:
    total = 30_000
    lake = IcebergLake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"))
    lake.create()
    with running(lake):
        produce_transactional(kafka_bootstrap, lake.topic, real_stream(total), partitions=lake.partitions)
        dies(lake, "writer-0", "published@5")  # files published, commit record the latest, table not committed
        dies(lake, "writer-1", "recovering@1")  # the restart dies before rolling that commit forward...
        dies(lake, "writer-2", "rolled_forward@1")  # ... and after it, before its takeover record
        dies(lake, "writer-3", "committed@3")  # a table commit landed, its job not done
        expected = finish(lake, total)
    logs = (lake.workdir / "log" / "parquet-writer.log").read_text(errors="replace")
    assert "rolling forward the Iceberg commit" in logs
    assert_tables_exactly_once(lake, expected)


def test_sigkill_at_random_moments_keeps_the_tables_exactly_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    total = 60_000
    lake = IcebergLake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"))
    lake.create()
    with running(lake):
        feeder = Feeder(kafka_bootstrap, lake.topic, real_stream(total), lake.partitions, pause=0.5)
        feeder.start()
        kill_at_random_moments(lake, feeder, kills=5, seed=int(time.time()))
        expected = finish(lake, total)
    assert_tables_exactly_once(lake, expected)


def test_two_writers_in_one_group_keep_the_tables_exactly_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    total = 40_000
    lake = IcebergLake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"), partitions=4)
    lake.create()
    with running(lake):
        feeder = Feeder(kafka_bootstrap, lake.topic, real_stream(total), lake.partitions, batch=2000, pause=0.6)
        feeder.start()
        first = lake.start("writer-a", **BUSY)
        first.wait_assigned(4, timeout=90)
        time.sleep(2)  # the first is committing to the tables when the second joins
        second = lake.start("writer-b", **BUSY)
        wait_until(lambda: len(first.assigned()) == 2 and len(second.assigned()) == 2, 120, second,
                   "partitions split 2 + 2")
        feeder.finish()
        last = last_data_offsets(kafka_bootstrap, lake.topic, total)
        lake.wait_written(last, timeout=180, alive=second)
        assert first.terminate() == 0 and second.terminate() == 0
    expected = topic_coordinates(kafka_bootstrap, lake.topic, total)
    assert_exactly_once(lake, expected)
    assert_tables_exactly_once(lake, expected)


@pytest.mark.s3
def test_on_s3_a_kill_before_the_table_commit_keeps_lake_and_tables_exactly_once(kafka_bootstrap: str,
                                                                                 tmp_path: Path,
                                                                                 s3_server: S3Server) -> None:
    total = 20_000
    hive = s3_lake(kafka_bootstrap, tmp_path, s3_server)  # the Hive lake on S3, and the warehouse too
    lake = IcebergLake(kafka_bootstrap, tmp_path, hive.base, s3_env=hive.s3_env, filesystem=hive.filesystem,
                       s3_warehouse=s3_server)
    lake.create(topic=hive.topic)
    with running(lake):
        produce_transactional(kafka_bootstrap, lake.topic, real_stream(total), partitions=lake.partitions)
        dies(lake, "writer-0", "published@4")
        dies(lake, "writer-1", "recovering@1")
        expected = finish(lake, total)
    assert lake.warehouse_url.startswith("s3://")
    assert_tables_exactly_once(lake, expected)
