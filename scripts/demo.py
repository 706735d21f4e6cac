"""`make demo`: the whole pipeline on one machine, on real Zeek logs, with the embedded defaults.

Starts a local Kafka broker, creates the topics, starts normalizer-enricher, parquet-writer and the health
dashboard, publishes real Zeek logs (the shared corpus beside the project when present, else the sample
shipped in tests/data/zeek-sample), waits until every record is in Parquet or in the dead-letter topic,
and prints a summary. Everything lands under ./output. With a terminal attached the services keep running
until Ctrl-C so the dashboard can be explored; `--exit` stops right after the summary.
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
    import pyarrow.dataset as ds

    rows: collections.Counter[str] = collections.Counter()
    if not base.exists():
        return rows
    for type_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        files = [p for p in type_dir.rglob("*.parquet") if not p.name.startswith(("_", "."))]
        if files:
            rows[type_dir.name] = ds.dataset([str(f) for f in files], format="parquet").count_rows()
    return rows


def topic_count(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-count", "isolation.level": "read_committed"})
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

    shutil.rmtree(OUTPUT, ignore_errors=True)
    (OUTPUT / "log").mkdir(parents=True)
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
        }
        for name, module in SERVICES.items():
            if not built(module):
                say(f"{name}: not built yet, skipped")
                continue
            log = (OUTPUT / "log" / f"{name}.stdout").open("wb")
            processes[name] = subprocess.Popen([str(ZEEK), name, "--config", str(ROOT / "config")],
                                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            say(f"{name}: started (pid {processes[name].pid}, log output/log/{name}.stdout)")

        say("publishing real Zeek logs to zeek-raw ...")
        publish = subprocess.run([str(ZEEK), "publish", "--topic", "zeek-raw", "--brokers", broker.bootstrap,
                                  *map(str, inputs)], env=env, cwd=ROOT, check=False)
        if publish.returncode != 0:
            say("publish failed; see above")
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

        files = [p for p in (OUTPUT / "parquet").rglob("*.parquet") if not p.name.startswith(("_", "."))]
        print("\n=== zeek-pipeline demo summary ===")
        print(f"records published : {expected}")
        print(f"rows in Parquet   : {sum(rows.values())} in {len(files)} files under output/parquet/")
        print(f"rejected (DLQ)    : {rejected} in topic zeek-dlq")
        print(f"{'log type':<18} rows")
        for log_type, count in sorted(rows.items(), key=lambda item: -item[1]):
            print(f"  {log_type:<16} {count}")
        print("query it          : duckdb -c \"select log_type, count(*) from "
              "read_parquet('output/parquet/**/*.parquet', hive_partitioning=true) group by all\"")
        if "health" in processes:
            when = "" if keep_running else " (while the demo runs; `make demo` in a terminal keeps it up)"
            print(f"dashboard         : http://127.0.0.1:{health_port}/  (API: /api/v1/pipeline, docs: /docs){when}")
        print("logs              : output/log/")
        complete = sum(rows.values()) + rejected == expected
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
