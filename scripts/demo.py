"""`make demo`: the whole pipeline on one machine, on real Zeek logs, with the embedded defaults.

Starts a local Kafka broker, creates the topics, starts normalizer-enricher, parquet-writer and the health
dashboard, publishes real Zeek logs (the shared corpus beside the project when present, else the sample
shipped in tests/data/zeek-sample), waits until every record is in Parquet or in the dead-letter topic,
and prints a summary. The writer also commits every record to Iceberg tables (namespace `zeek`, SQLite
catalog output/iceberg/catalog.db, warehouse output/iceberg/warehouse); the summary says how to query them.
Everything lands under ./output. With a terminal attached the services keep running until Ctrl-C so the
dashboard can be explored; `--exit` stops right after the summary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.infra.kafka import KafkaBroker  # noqa: E402
from tests.infra.zeek_data import SAMPLE_ZEEK, json_logs, shared_available, tsv_logs  # noqa: E402

OUTPUT = ROOT / "output"
ICEBERG = OUTPUT / "iceberg"
ZEEK = ROOT / ".venv" / "bin" / "zeek-pipeline"
SERVICES = {
    "normalizer-enricher": "zeek_pipeline.normalizer.cli",
    "parquet-writer": "zeek_pipeline.writer.cli",
    "health": "zeek_pipeline.health.cli",
}


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def built(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with gzip.open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip() and not line.startswith(b"#"))
    return total


def parquet_rows(base: Path) -> collections.Counter[str]:
    """Rows per log type, read back with an independent reader (pyarrow.dataset, Hive partitions)."""
    from zeek_pipeline.writer.lake import summarize

    return collections.Counter({s.log_type: s.rows for s in summarize(base, times=False)})


def log_to_file(path: Path) -> None:
    """The demo's own Kafka clients log (librdkafka's lines included) to output/log/demo.log, not the terminal."""
    import logging

    from zeek_pipeline.runtime.logging import PipeFormatter

    handler = logging.FileHandler(path)
    handler.setFormatter(PipeFormatter("demo"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def summary_lines(base: Path, expected: int, rejected: int) -> list[str]:
    """The summary printed at the end: rows and time span per log type, and queries that work as printed
    from the project directory."""
    from zeek_pipeline.writer.lake import EXAMPLE_QUERIES, summarize

    types = summarize(base)
    files = sum(t.files for t in types)
    lines = ["", "=== zeek-pipeline demo summary ===",
             f"records published : {expected}",
             f"rows in Parquet   : {sum(t.rows for t in types)} in {files} files under output/parquet/",
             f"rejected (DLQ)    : {rejected} in topic zeek-dlq",
             f"  {'log type':<18} {'rows':>8}  {'files':>5}  event time span (UTC)"]
    for t in types:
        span = "-" if t.first_event is None or t.last_event is None else (
            f"{t.first_event:%Y-%m-%d %H:%M:%S} .. {t.last_event:%Y-%m-%d %H:%M:%S}")
        lines.append(f"  {t.log_type:<18} {t.rows:>8}  {t.files:>5}  {span}")
    lines.append("query it (DuckDB; the hive keys typed as integers where they are used):")
    lines += [f"  duckdb -c \"{query}\"" for query in EXAMPLE_QUERIES]
    return lines


def iceberg_settings() -> object:
    from zeek_pipeline.settings import IcebergCatalog, IcebergOutput

    return IcebergOutput(enabled=True, catalog=IcebergCatalog(uri=f"sqlite:///{ICEBERG / 'catalog.db'}",
                                                              warehouse=str(ICEBERG / "warehouse")))


def iceberg_rows() -> tuple[collections.Counter[str], dict[str, str]]:
    """Rows and current metadata file per table of the demo's catalog (none before the writer's first commit)."""
    rows: collections.Counter[str] = collections.Counter()
    metadata: dict[str, str] = {}
    if not (ICEBERG / "catalog.db").exists():
        return rows, metadata
    from zeek_pipeline.iceberg.catalog import open_catalog

    catalog = open_catalog(iceberg_settings())  # type: ignore[arg-type]
    for identifier in catalog.list_tables("zeek"):
        table = catalog.load_table(identifier)
        snapshot = table.current_snapshot()
        summary = snapshot.summary if snapshot is not None else None
        rows[identifier[-1]] = int(summary["total-records"] or 0) if summary is not None else 0
        metadata[identifier[-1]] = table.metadata_location
    return rows, metadata


def iceberg_lines(rows: collections.Counter[str], metadata: dict[str, str]) -> list[str]:
    """How many rows the tables hold, and how to query them with pyiceberg and DuckDB (docs/iceberg.md); the
    commands work as printed from the project directory (DuckDB's: until the table's next commit)."""
    example = "dns" if "dns" in rows else next(iter(sorted(rows)), "dns")
    lines = [
        f"rows in Iceberg    : {sum(rows.values())} in {len(rows)} tables, namespace zeek, SQLite catalog "
        "output/iceberg/catalog.db (warehouse output/iceberg/warehouse)",
        "query them (pyiceberg):",
        "  .venv/bin/python -c \"from pyiceberg.catalog.sql import SqlCatalog; "
        "c = SqlCatalog('zeek', uri='sqlite:///output/iceberg/catalog.db'); "
        f"print(c.load_table('zeek.{example}').scan().to_arrow().num_rows)\"",
    ]
    from tests.infra.duckdb_iceberg import ExtensionPackageError, extension_path

    try:
        loads = "; ".join(f"LOAD '{extension_path(name)}'" for name in ("avro", "iceberg"))
    except ExtensionPackageError as exc:
        return [*lines, f"query them (DuckDB): see docs/iceberg.md ({exc})"]
    if example in metadata:
        lines += [
            "query them (DuckDB's iceberg extension, loaded from the venv's package; the table's current metadata):",
            "  .venv/bin/python -c \"import duckdb; con = duckdb.connect(config={'autoinstall_known_extensions': "  # noqa: S608
            f"False, 'autoload_known_extensions': False}}); con.execute(\\\"{loads}\\\"); "
            "print(con.sql(\\\"SELECT count(*), min(event_time), max(event_time) FROM "
            f"iceberg_scan('{metadata[example]}')\\\"))\"",
        ]
    return [*lines, "  (docs/iceberg.md: the metadata file of each table, time travel, Trino and Spark)"]


def topic_count(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from zeek_pipeline.kafka.client_log import librdkafka_logger

    quiet = {"bootstrap.servers": bootstrap, "logger": librdkafka_logger()}
    admin = AdminClient(quiet)
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    admin.poll(0)  # hands librdkafka's queued log lines to the logger
    consumer = Consumer({**quiet, "group.id": "demo-count", "isolation.level": "read_committed"})
    try:
        total = 0
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exit", action="store_true", help="stop everything after the summary")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the pipeline to drain")
    args = parser.parse_args(argv)
    keep_running = sys.stdin.isatty() and not args.exit

    # Only what the demo writes: output/ also holds others' files (output/cluster/kubeconfig from `make cluster`,
    # the cluster tests' measurements), which a demo run must not delete.
    for mine in ("parquet", "iceberg", "log", "kafka"):
        shutil.rmtree(OUTPUT / mine, ignore_errors=True)
    (OUTPUT / "log").mkdir(parents=True)
    log_to_file(OUTPUT / "log" / "demo.log")
    inputs = json_logs() + tsv_logs()
    say(f"input: {len(inputs)} real Zeek log files from "
        f"{'../shared/data/zeek' if shared_available() else SAMPLE_ZEEK.relative_to(ROOT)}")

    broker = KafkaBroker(workdir=OUTPUT / "kafka", port=int(os.environ.get("KAFKA_PORT", "0")) or None)
    say("starting Kafka (KRaft, 127.0.0.1) ...")
    broker.start()
    say(f"kafka ready at {broker.bootstrap} in {broker.startup_seconds:.1f}s")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        from zeek_pipeline.kafka.topics import STATUS_TOPIC_CONFIG, ensure_topics

        ensure_topics({"bootstrap.servers": broker.bootstrap},
                      {"zeek-raw": 3, "zeek-normalized": 3, "zeek-dlq": 1, "zeek-pipeline-status": 1},
                      configs={"zeek-pipeline-status": STATUS_TOPIC_CONFIG})
        health_port = free_port(8080)
        env = {
            **os.environ,
            "ZEEK_PIPELINE_KAFKA__BROKERS": broker.bootstrap,
            "ZEEK_PIPELINE_OUTPUT__PARQUET__BASE_PATH": str(OUTPUT / "parquet"),
            "ZEEK_PIPELINE_LOG__PATH": str(OUTPUT / "log"),
            "ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS": "5",
            "ZEEK_PIPELINE_STATUS__INTERVAL_SECONDS": "5",
            "ZEEK_PIPELINE_HEALTH__PORT": str(health_port),
            "ZEEK_PIPELINE_HEALTH__HOST": "127.0.0.1",
            "ZEEK_PIPELINE_NORMALIZER__HTTP_PORT": str(free_port(8081)),
            "ZEEK_PIPELINE_WRITER__HTTP_PORT": str(free_port(8082)),
            "ZEEK_PIPELINE_INSTANCE_ID": "demo",
            "ZEEK_PIPELINE_OUTPUT__ICEBERG__ENABLED": "true",
            "ZEEK_PIPELINE_OUTPUT__ICEBERG__CATALOG__URI": f"sqlite:///{ICEBERG / 'catalog.db'}",
            "ZEEK_PIPELINE_OUTPUT__ICEBERG__CATALOG__WAREHOUSE": str(ICEBERG / "warehouse"),
        }
        for name, module in SERVICES.items():
            if not built(module):
                say(f"{name}: not built yet, skipped")
                continue
            log = (OUTPUT / "log" / f"{name}.stdout").open("wb")
            processes[name] = subprocess.Popen([str(ZEEK), name, "--config", str(ROOT / "config")],
                                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            say(f"{name}: started (pid {processes[name].pid}, log output/log/{name}.stdout)")

        say("publishing real Zeek logs to zeek-raw (log output/log/publish.out) ...")
        with (OUTPUT / "log" / "publish.out").open("wb") as publish_log:
            publish = subprocess.run([str(ZEEK), "publish", "--topic", "zeek-raw", "--brokers", broker.bootstrap,
                                      *map(str, inputs)], env=env, cwd=ROOT, check=False,
                                     stdout=publish_log, stderr=subprocess.STDOUT)
        if publish.returncode != 0:
            say("publish failed; see output/log/publish.out")
            return 1
        expected = count_lines(inputs)

        deadline = time.monotonic() + args.timeout
        rows: collections.Counter[str] = collections.Counter()
        rejected = 0
        last_total, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            for name, proc in processes.items():
                if proc.poll() is not None:
                    say(f"{name} exited with {proc.returncode}; see output/log/{name}.stdout")
                    return 1
            rows = parquet_rows(OUTPUT / "parquet")
            rejected = topic_count(broker.bootstrap, "zeek-dlq")
            total = sum(rows.values()) + rejected
            if total != last_total:
                last_total, stable_since = total, time.monotonic()
                say(f"progress: {sum(rows.values())} rows in Parquet, {rejected} rejected, of {expected}")
            if total >= expected or time.monotonic() - stable_since > 120:
                break
            time.sleep(2)

        print("\n".join(summary_lines(OUTPUT / "parquet", expected, rejected)))
        tables, metadata = iceberg_rows()  # each table commit follows its Parquet publish: wait for the last
        while sum(tables.values()) < sum(rows.values()) and time.monotonic() < deadline + 60:
            time.sleep(1)
            tables, metadata = iceberg_rows()
        print("\n".join(iceberg_lines(tables, metadata)))
        if "health" in processes:
            when = "" if keep_running else " (while the demo runs; `make demo` in a terminal keeps it up)"
            print(f"dashboard         : http://127.0.0.1:{health_port}/  (API: /api/v1/pipeline, docs: /docs){when}")
        print("logs              : output/log/")
        complete = sum(rows.values()) + rejected == expected and sum(tables.values()) == sum(rows.values())
        if keep_running and processes:
            say("services keep running; press Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0 if complete else 1
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in processes.items():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                say(f"{name} did not stop in 40s; killed")
        broker.stop()
        say("stopped; output left under ./output")


if __name__ == "__main__":
    sys.exit(main())
