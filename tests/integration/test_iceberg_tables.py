"""The Iceberg table library on a real SQLite catalog and a warehouse on local disk (tmp_path), with real records.

Records are the shipped real Zeek sample, transformed like the normalizer does and typed with
convert_documents. Tables are read back with pyiceberg scans and with DuckDB. DuckDB reads the Parquet data
files the table's current snapshot lists (`read_parquet`): its iceberg extension is built per DuckDB release
and the one on the package registry is for an older DuckDB than the project's, so it cannot load here.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.schema import make_compatible_name
from pyiceberg.table import Table, TableProperties

from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK, read_lines
from zeek_pipeline.core.arrow import convert_documents
from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN, ZeekSchema, load_schema, parse_schema
from zeek_pipeline.core.schema import arrow_schema as parquet_schema
from zeek_pipeline.core.transform import Accepted, Transformer
from zeek_pipeline.iceberg.catalog import CATALOG_NAME, ensure_table, open_catalog
from zeek_pipeline.iceberg.commit import CommitError, commit_exactly_once, committed_offsets, offsets_property
from zeek_pipeline.iceberg.schema import HOUR_PARTITION, conform
from zeek_pipeline.settings import IcebergCatalog, IcebergOutput

pytestmark = pytest.mark.integration

CONFIG = PROJECT_ROOT / "config"
TOPIC = "zeek-normalized"
NAMESPACE = "zeek"
PARTITIONS = 3
INGEST_MS = 1_713_484_800_123
SAMPLE_TYPES = sorted(path.name.removesuffix(".json.gz") for path in SAMPLE_ZEEK.glob("*.json.gz"))
DUCKDB_TYPES = {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.string(): "VARCHAR", pa.float64(): "DOUBLE",
                pa.bool_(): "BOOLEAN", pa.timestamp("us", tz="UTC"): "TIMESTAMP WITH TIME ZONE"}


@pytest.fixture(scope="module")
def transformer() -> Transformer:
    return Transformer.from_config_dir(CONFIG)


@pytest.fixture(scope="module")
def zeek_schema() -> ZeekSchema:
    return load_schema(CONFIG)


def typed(log_type: str, transformer: Transformer, zeek_schema: ZeekSchema) -> pa.Table:
    """The sample's records of one log type, typed; record i is Kafka partition i % 3, offset i // 3."""
    values = []
    for line in read_lines(SAMPLE_ZEEK / f"{log_type}.json.gz"):
        result = transformer.transform(line, ingest_time_ms=INGEST_MS)
        assert isinstance(result, Accepted), result
        values.append(result.value)
    partitions = [index % PARTITIONS for index in range(len(values))]
    offsets = [index // PARTITIONS for index in range(len(values))]
    conversion = convert_documents(log_type, values, partitions, offsets, schema=zeek_schema, rules=transformer.rules)
    assert not conversion.rejects
    return conversion.table


def settings_for(tmp_path: Path) -> IcebergOutput:
    return IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                                                              warehouse=str(tmp_path / "warehouse")))


def open_table(tmp_path: Path, log_type: str, transformer: Transformer, zeek_schema: ZeekSchema) -> Table:
    """A table as a writer opens it: its own catalog connection, created if missing."""
    catalog = open_catalog(settings_for(tmp_path))
    return ensure_table(catalog, NAMESPACE, log_type, parquet_schema(log_type, zeek_schema, transformer.rules))


def data_files(table: Table) -> list[Path]:
    return [Path(urlsplit(task.file.file_path).path) for task in table.scan().plan_files()]


def lineage(table: Table) -> Counter[tuple[int, int]]:
    """(Kafka partition, offset) -> how many rows of the table carry it."""
    rows = table.scan(selected_fields=(PARTITION_COLUMN, OFFSET_COLUMN)).to_arrow()
    return Counter(zip(rows.column(PARTITION_COLUMN).to_pylist(), rows.column(OFFSET_COLUMN).to_pylist(),
                       strict=True))


def slice_offsets(table: pa.Table, start: int, stop: int) -> pa.Table:
    """The rows with start <= offset < stop, in every partition."""
    offsets = table.column(OFFSET_COLUMN).to_pylist()
    return table.take([index for index, offset in enumerate(offsets) if start <= offset < stop])


def next_offsets(rows: pa.Table) -> dict[int, int]:
    """Each partition's highest offset + 1."""
    highest: dict[int, int] = {}
    for partition, offset in zip(rows.column(PARTITION_COLUMN).to_pylist(), rows.column(OFFSET_COLUMN).to_pylist(),
                                 strict=True):
        highest[partition] = max(highest.get(partition, -1), offset)
    return {partition: offset + 1 for partition, offset in highest.items()}


def test_every_sample_log_type_reads_back_with_pyiceberg_and_duckdb(tmp_path: Path, transformer: Transformer,
                                                                   zeek_schema: ZeekSchema) -> None:
    assert len(SAMPLE_TYPES) >= 20
    for log_type in SAMPLE_TYPES:
        source = typed(log_type, transformer, zeek_schema)
        table = open_table(tmp_path, log_type, transformer, zeek_schema)
        conformed = conform(source, table.schema())
        assert not conformed.rejects
        result = commit_exactly_once(table, TOPIC, conformed.table)
        assert (result.appended, result.skipped) == (source.num_rows, 0), log_type

        scanned = table.scan().to_arrow()
        assert scanned.num_rows == source.num_rows, log_type
        assert scanned.column_names == source.column_names
        for field in conformed.table.schema:  # the types the schema mapping promises, large or not
            kind = scanned.schema.field(field.name).type
            assert kind == field.type or pa.types.is_large_string(kind) and field.type == pa.string() or \
                pa.types.is_large_list(kind) and pa.types.is_list(field.type), (log_type, field.name, kind)
        order = [(PARTITION_COLUMN, "ascending"), (OFFSET_COLUMN, "ascending")]
        assert scanned.cast(conformed.table.schema).sort_by(order).equals(conformed.table.sort_by(order)), log_type

        files = [str(path) for path in data_files(table)]
        con = duckdb.connect()
        described = con.execute("DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = false)", [files]).fetchall()
        duck_types = {row[0]: row[1] for row in described}
        count = con.execute("SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)) "
                            "FROM read_parquet(?, hive_partitioning = false)", [files]).fetchone()
        con.close()
        assert count == (source.num_rows, source.num_rows), log_type
        # Iceberg writes Avro-compatible names into the files ('.' -> '_x2E'); engines map columns by field id
        assert list(duck_types) == [make_compatible_name(name) for name in conformed.table.column_names]
        for field in conformed.table.schema:
            if field.type in DUCKDB_TYPES:
                assert duck_types[make_compatible_name(field.name)] == DUCKDB_TYPES[field.type], (log_type, field)
        assert duck_types["_kafka_offset"] == "BIGINT" and duck_types["event_time"] == "TIMESTAMP WITH TIME ZONE"


def test_data_files_land_under_the_hour_of_their_rows(tmp_path: Path, transformer: Transformer,
                                                      zeek_schema: ZeekSchema) -> None:
    table = open_table(tmp_path, "dns", transformer, zeek_schema)
    source = typed("dns", transformer, zeek_schema)
    # spread the sample over three hours so more than one partition is written
    times = source.column("event_time").to_pylist()
    shifted = [moment.replace(hour=(moment.hour + index % 3) % 24) for index, moment in enumerate(times)]
    source = source.set_column(source.schema.get_field_index("event_time"), source.schema.field("event_time"),
                               pa.array(shifted, pa.timestamp("us", tz="UTC")))
    commit_exactly_once(table, TOPIC, conform(source, table.schema()).table)

    hours_seen = set()
    files = data_files(table)
    for path in files:
        folder = path.parent.name
        assert folder.startswith(f"{HOUR_PARTITION}="), path
        hour = datetime.strptime(folder.split("=", 1)[1], "%Y-%m-%d-%H").replace(tzinfo=UTC)
        in_file = pq.read_table(path, columns=["event_time"]).column("event_time").to_pylist()
        assert {moment.replace(minute=0, second=0, microsecond=0) for moment in in_file} == {hour}, path
        hours_seen.add(hour)
    assert len(hours_seen) == len({moment.replace(minute=0, second=0, microsecond=0) for moment in shifted}) >= 3
    assert sum(pq.read_metadata(path).num_rows for path in files) == source.num_rows


def test_offsets_map_is_cumulative_and_reads_back_from_a_new_catalog(tmp_path: Path, transformer: Transformer,
                                                                   zeek_schema: ZeekSchema) -> None:
    source = typed("ssl", transformer, zeek_schema)
    table = open_table(tmp_path, "ssl", transformer, zeek_schema)
    assert committed_offsets(table, TOPIC) == {}
    rows = conform(source, table.schema()).table
    only = {partition: rows.filter(pa.compute.equal(rows.column(PARTITION_COLUMN), partition))
            for partition in range(PARTITIONS)}
    highest = {p: max(only[p].column(OFFSET_COLUMN).to_pylist()) for p in range(PARTITIONS)}

    commit_exactly_once(table, TOPIC, only[0])
    commit_exactly_once(table, TOPIC, only[1], {1: highest[1] + 50})  # a writer may claim past its last row
    result = commit_exactly_once(table, TOPIC, only[2])
    expected = {0: highest[0] + 1, 1: highest[1] + 50, 2: highest[2] + 1}
    assert result.offsets == expected
    assert table.current_snapshot().summary[offsets_property(TOPIC)] == (  # type: ignore[union-attr]
        f'{{"0":{expected[0]},"1":{expected[1]},"2":{expected[2]}}}')

    again = open_table(tmp_path, "ssl", transformer, zeek_schema)
    assert committed_offsets(again, TOPIC) == expected
    assert committed_offsets(again, "another-topic") == {}
    with pytest.raises(ValueError, match="partition 0"):
        commit_exactly_once(again, TOPIC, only[0], {0: highest[0]})  # claims less than its rows


def test_a_retried_commit_whose_offsets_are_covered_appends_nothing(tmp_path: Path, transformer: Transformer,
                                                                   zeek_schema: ZeekSchema) -> None:
    table = open_table(tmp_path, "dns", transformer, zeek_schema)
    rows = conform(typed("dns", transformer, zeek_schema), table.schema()).table
    first = commit_exactly_once(table, TOPIC, rows)
    snapshots = len(table.snapshots())

    retry = commit_exactly_once(open_table(tmp_path, "dns", transformer, zeek_schema), TOPIC, rows)
    assert (retry.appended, retry.skipped, retry.snapshot_id) == (0, rows.num_rows, None)
    table.refresh()
    assert len(table.snapshots()) == snapshots and table.current_snapshot().snapshot_id == first.snapshot_id  # type: ignore[union-attr]
    assert set(lineage(table).values()) == {1} and sum(lineage(table).values()) == rows.num_rows


def test_offsets_rise_without_rows_when_a_batch_only_went_to_the_dead_letter_topic(
        tmp_path: Path, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    table = open_table(tmp_path, "dns", transformer, zeek_schema)
    rows = conform(typed("dns", transformer, zeek_schema), table.schema()).table
    nothing = commit_exactly_once(table, TOPIC, rows.slice(0, 0), {0: 40, 1: 40})
    assert nothing.appended == 0 and nothing.snapshot_id is not None
    assert committed_offsets(table, TOPIC) == {0: 40, 1: 40}
    assert table.scan().to_arrow().num_rows == 0

    result = commit_exactly_once(table, TOPIC, rows)
    below = [(p, o) for p, o in zip(rows.column(PARTITION_COLUMN).to_pylist(), rows.column(OFFSET_COLUMN).to_pylist(),
                                    strict=True) if p in (0, 1) and o < 40]
    assert result.skipped == len(below) and result.appended == rows.num_rows - len(below)
    assert not set(below) & set(lineage(table))


def test_a_stale_committer_retries_after_the_conflict_and_appends_only_what_is_not_covered(
        tmp_path: Path, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    rows = conform(typed("smtp", transformer, zeek_schema), open_table(tmp_path, "smtp", transformer,
                                                                      zeek_schema).schema()).table
    writer_a = open_table(tmp_path, "smtp", transformer, zeek_schema)
    writer_b = open_table(tmp_path, "smtp", transformer, zeek_schema)  # loaded before A commits: stale
    top = max(rows.column(OFFSET_COLUMN).to_pylist()) + 1

    a = commit_exactly_once(writer_a, TOPIC, slice_offsets(rows, 0, top * 2 // 3))
    b = commit_exactly_once(writer_b, TOPIC, slice_offsets(rows, top // 3, top))
    assert b.attempts == 2  # the first attempt was refused by the catalog: its base snapshot had moved
    assert b.skipped == slice_offsets(rows, top // 3, top * 2 // 3).num_rows
    assert a.appended + b.appended == rows.num_rows
    counts = lineage(writer_b)
    assert len(counts) == rows.num_rows and set(counts.values()) == {1}
    assert committed_offsets(writer_b, TOPIC) == b.offsets == next_offsets(rows)


def test_two_concurrent_committers_leave_every_record_exactly_once(tmp_path: Path, transformer: Transformer,
                                                                  zeek_schema: ZeekSchema) -> None:
    """Two writers that both hold the same partitions (a rebalance's zombie) commit overlapping batches at once."""
    rows = conform(typed("x509", transformer, zeek_schema),
                   open_table(tmp_path, "x509", transformer, zeek_schema).schema()).table
    top = max(rows.column(OFFSET_COLUMN).to_pylist()) + 1
    start = threading.Barrier(2)
    results: dict[str, list[tuple[int, int, int]]] = {}
    errors: list[BaseException] = []

    def writer(name: str, step: int) -> None:
        try:
            table = open_table(tmp_path, "x509", transformer, zeek_schema)
            start.wait()
            done = []
            for begin in range(0, top, step):
                result = commit_exactly_once(table, TOPIC, slice_offsets(rows, begin, begin + step), attempts=50)
                done.append((result.appended, result.skipped, result.attempts))
            results[name] = done
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=("a", 7)), threading.Thread(target=writer, args=("b", 11))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    table = open_table(tmp_path, "x509", transformer, zeek_schema)
    counts = lineage(table)
    assert len(counts) == rows.num_rows and set(counts.values()) == {1}
    appended = sum(item[0] for done in results.values() for item in done)
    assert appended == rows.num_rows
    assert committed_offsets(table, TOPIC) == next_offsets(rows)


def test_pyiceberg_own_retry_is_off_and_a_table_with_it_on_is_refused(tmp_path: Path, transformer: Transformer,
                                                                     zeek_schema: ZeekSchema) -> None:
    table = open_table(tmp_path, "dns", transformer, zeek_schema)
    assert table.properties[TableProperties.COMMIT_NUM_RETRIES] == "0"
    with table.transaction() as transaction:
        transaction.set_properties({TableProperties.COMMIT_NUM_RETRIES: "4"})
    rows = conform(typed("dns", transformer, zeek_schema), table.schema()).table
    with pytest.raises(CommitError, match="commit.retry.num-retries"):
        commit_exactly_once(table, TOPIC, rows)
    assert open_table(tmp_path, "dns", transformer, zeek_schema).properties[TableProperties.COMMIT_NUM_RETRIES] == "0"


def _with_new_field(zeek_schema: ZeekSchema, log_type: str, name: str) -> ZeekSchema:
    data: dict[str, object] = {"$schema_version": zeek_schema.version,
                               "$all_logs": {"fields": dict(zeek_schema.all_logs.fields)},
                               "$unknown_log": {"fields": dict(zeek_schema.unknown_log.fields)}}
    for other, fields in zeek_schema.log_types.items():
        data[other] = {"fields": {**fields.fields, **({name: "count"} if other == log_type else {})}}
    return parse_schema(data)


def test_field_ids_come_from_the_table_on_later_runs_and_new_fields_get_new_ids(
        tmp_path: Path, transformer: Transformer, zeek_schema: ZeekSchema) -> None:
    table = open_table(tmp_path, "ssh", transformer, zeek_schema)
    rows = conform(typed("ssh", transformer, zeek_schema), table.schema()).table
    commit_exactly_once(table, TOPIC, rows)
    before = {field.name: field.field_id for field in table.schema().fields}

    assert {f.name: f.field_id for f in open_table(tmp_path, "ssh", transformer, zeek_schema).schema().fields} == before
    newer = _with_new_field(zeek_schema, "ssh", "hassh_rounds")
    evolved = ensure_table(open_catalog(settings_for(tmp_path)), NAMESPACE, "ssh",
                           parquet_schema("ssh", newer, transformer.rules))
    after = {field.name: field.field_id for field in evolved.schema().fields}
    assert {name: after[name] for name in before} == before
    assert after["hassh_rounds"] > max(before.values())
    scanned = evolved.scan().to_arrow()  # files written before the new column read back with it null
    assert scanned.num_rows == rows.num_rows and scanned.column("hassh_rounds").null_count == rows.num_rows


def test_default_settings_make_an_sqlite_catalog_under_output_iceberg(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    catalog = open_catalog(IcebergOutput())
    assert catalog.name == CATALOG_NAME and (NAMESPACE,) in catalog.list_namespaces()
    assert (tmp_path / "output" / "iceberg" / "catalog.db").is_file()
    assert (tmp_path / "output" / "iceberg" / "warehouse").is_dir()
