"""The lake that live traffic leaves at the default flush settings, before and after `zeek-pipeline compact`,
and what a reader pays for it (DuckDB).

Live traffic is replayed time-compressed through the real parquet-writer: the real Zeek mix (every shared
JSON and TSV log through `zeek-pipeline normalize`, shuffled once with a fixed seed) at `--live-rate` events/s
of event time, for `--hours` whole event hours starting at midnight UTC two days ago. One wall second stands
for `--compression` seconds of event time, and the writer's `write.flush_interval_seconds` is divided by the
same factor, so each (log type, partition) buffer flushes as often per event hour as it would live (the other
flush conditions keep their defaults). Each record's time fields (raw `ts`, normalized `event_time`, the
enriched time parts) are set to its place in the replayed hours; everything else is the real record.

Then, for the lake as written (before) and after `zeek-pipeline compact` (default target size, grace 0: the
hours are long past): files per event hour (and per day, x24), bytes per file, and two DuckDB queries, each the
best of `--query-rounds` runs in a fresh connection: rows per log type over the whole lake, and a one-hour
time range of conn. Both must return the same answer before and after (checked), and compaction's own
summary line, wall time and peak RSS are reported. Writes bench/results/lake.json.

    python bench/bench_lake.py [--live-rate R] [--hours H] [--compression C]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from bench_writer import (  # noqa: E402
    CONFIG,
    PARTITIONS,
    RESULTS,
    ZEEK,
    cpu_seconds,
    documents,
    env_for,
    files_per_hour,
    peak_rss_mb,
    status,
)
from tests.infra.kafka import KafkaBroker, free_port  # noqa: E402
from tests.infra.topics import create_topic, produce_when_room  # noqa: E402

# Placeholders written into each document once; every replayed record fills them with its own time.
TS = "@@ts@@"
EVENT_MS, YEAR, MONTH, DAY, HOUR, WEEKDAY = 9_100_000_000_001, 987654301, 987654302, 987654303, 987654304, 987654305


def templates(docs: list[bytes], seed: int = 7) -> list[bytes]:
    """The documents with their time fields as placeholders, shuffled (the corpus comes grouped by log type)."""
    out = []
    for doc in docs:
        value = orjson.loads(doc)
        value["raw"]["ts"] = TS
        value["normalized"]["event_time"] = EVENT_MS
        enriched = value.setdefault("enriched", {})
        enriched.update(event_year=YEAR, event_month=MONTH, event_day=DAY, event_hour=HOUR, event_weekday=WEEKDAY)
        out.append(orjson.dumps(value))
    random.Random(seed).shuffle(out)
    return out


def stamped(template: bytes, at: dt.datetime) -> bytes:
    return (template.replace(TS.encode(), at.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode())
            .replace(str(EVENT_MS).encode(), str(int(at.timestamp() * 1000)).encode())
            .replace(b":%d" % YEAR, b":%d" % at.year).replace(b":%d" % MONTH, b":%d" % at.month)
            .replace(b":%d" % DAY, b":%d" % at.day).replace(b":%d" % HOUR, b":%d" % at.hour)
            .replace(b":%d" % WEEKDAY, b":%d" % at.isoweekday()))


def replay(bootstrap: str, topic: str, docs: list[bytes], start: dt.datetime, args: argparse.Namespace) -> int:
    """Produce the event minutes one per `60 / compression` wall seconds; returns the records produced."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_048_576})
    per_minute = int(args.live_rate * 60)
    step = 60 / args.compression
    began = time.monotonic()
    count = 0
    for minute in range(args.hours * 60):
        base = start + dt.timedelta(minutes=minute)
        for i in range(per_minute):
            at = base + dt.timedelta(microseconds=i * 60_000_000 // per_minute)
            value = stamped(docs[count % len(docs)], at)
            produce_when_room(producer, topic, value=value, partition=count % PARTITIONS)
            count += 1
        producer.poll(0)
        behind = began + (minute + 1) * step - time.monotonic()
        if behind > 0:
            time.sleep(behind)
    producer.flush(120)
    print(f"replayed {count:,} records in {time.monotonic() - began:.0f} s "
          f"(planned {args.hours * 60 * step:.0f} s)", flush=True)
    return count


def write_lake(bootstrap: str, topic: str, workdir: Path, lake: Path, start: dt.datetime, docs: list[bytes],
               args: argparse.Namespace) -> dict[str, Any]:
    """The real parquet-writer, running while the traffic is replayed; SIGTERM once it consumed everything."""
    port = free_port()
    env = env_for(bootstrap, topic, workdir, ZEEK_PIPELINE_OUTPUT__PARQUET__BASE_PATH=str(lake),
                  ZEEK_PIPELINE_WRITER__HTTP_PORT=str(port), ZEEK_PIPELINE_STATUS__INTERVAL_SECONDS="3600",
                  ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS=str(60 / args.compression))
    with (workdir / "writer.out").open("wb") as log:
        process = subprocess.Popen([str(ZEEK), "parquet-writer", "--config", str(CONFIG)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=workdir)
        try:
            while not status(port):
                time.sleep(0.2)
            total = replay(bootstrap, topic, docs, start, args)
            while (status(port) or {}).get("totals", {}).get("consumed", 0) < total:
                assert process.poll() is None, (workdir / "writer.out").read_text()[-3000:]
                time.sleep(0.2)
            peak = peak_rss_mb(process.pid)
            cpu = cpu_seconds(process.pid)
            process.send_signal(signal.SIGTERM)
            process.wait(120)
        finally:
            if process.poll() is None:
                process.kill()
    return {"records": total, "exit_code": process.returncode, "writer_peak_rss_mb": peak,
            "writer_cpu_us_per_record": round((cpu or 0) * 1e6 / total, 2)}


def lake_files(lake: Path) -> list[Path]:
    return [p for p in lake.rglob("*.parquet") if not any(part.startswith("_") for part in p.relative_to(lake).parts)]


def shape(lake: Path, hours: int) -> dict[str, Any]:
    files = lake_files(lake)
    sizes = [f.stat().st_size for f in files]
    per_hour = Counter(f.parent for f in files)
    return {"files": len(files), "bytes": sum(sizes), "files_per_hour": round(len(files) / hours),
            "files_per_day": round(len(files) / hours * 24),
            "bytes_per_file_mean": round(statistics.mean(sizes)) if sizes else 0,
            "bytes_per_file_median": round(statistics.median(sizes)) if sizes else 0,
            "largest_file_bytes": max(sizes, default=0),
            "files_per_log_type_hour_max": max(per_hour.values(), default=0)}


def queries(lake: Path, start: dt.datetime, rounds: int) -> dict[str, Any]:
    """Rows per log type over the whole lake, and conn rows in one hour of event time (DuckDB, cold connection)."""
    import duckdb

    begin = start + dt.timedelta(minutes=30)
    sql = {
        "count_by_log_type": (f"SELECT split_part(filename[{len(str(lake)) + 2}:], '/', 1) AS log_type, count(*) "
                              f"FROM read_parquet('{lake}/*/*/*/*/*/*.parquet', filename=true, union_by_name=true) "
                              "WHERE NOT contains(filename, '/_') GROUP BY 1 ORDER BY 1"),
        "conn_one_hour": (f"SELECT count(*), sum(src_bytes) FROM read_parquet('{lake}/conn/*/*/*/*/*.parquet') "
                          f"WHERE event_time >= TIMESTAMPTZ '{begin.isoformat()}' "
                          f"AND event_time < TIMESTAMPTZ '{(begin + dt.timedelta(hours=1)).isoformat()}'"),
    }
    out: dict[str, Any] = {}
    for name, query in sql.items():
        best, answer = float("inf"), None
        for _ in range(rounds):
            con = duckdb.connect()
            began = time.perf_counter()
            answer = con.execute(query).fetchall()
            best = min(best, time.perf_counter() - began)
            con.close()
        out[name] = {"seconds": round(best, 3), "answer": [list(map(str, row)) for row in answer or []]}
    return out


def compact(lake: Path, workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEEK_PIPELINE_")}
    env["ZEEK_PIPELINE_COMPACTION__MIN_QUIET_SECONDS"] = "0"
    began = time.monotonic()
    process = subprocess.Popen([str(ZEEK), "compact", "--output", str(lake), "--config", str(CONFIG),
                                "--grace-seconds", "0"], env=env, stdout=subprocess.PIPE,
                               stderr=(workdir / "compact.err").open("wb"), cwd=workdir)
    peak = cpu = 0.0
    while process.poll() is None:
        peak = max(peak, peak_rss_mb(process.pid) or 0.0)
        cpu = cpu_seconds(process.pid) or cpu
        time.sleep(0.05)
    seconds = time.monotonic() - began
    out = process.stdout.read().decode() if process.stdout else ""
    assert process.returncode == 0, (workdir / "compact.err").read_text()[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    return {"summary": summary, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
            "peak_rss_mb": round(peak, 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live-rate", type=float, default=500, help="events/s of event time (default 500)")
    parser.add_argument("--hours", type=int, default=1, help="whole event hours replayed (default 1)")
    parser.add_argument("--compression", type=float, default=30,
                        help="event seconds per wall second (default 30: an event hour in 2 minutes)")
    parser.add_argument("--query-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    lake = workdir / "lake"
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - dt.timedelta(days=2)
    docs, mix = documents(workdir)
    sizes = Counter[str]()
    for doc in docs:
        begin = doc.index(b'"log_type":"') + 12
        sizes[doc[begin:doc.index(b'"', begin)].decode()] += len(doc)
    estimate = files_per_hour(mix, {lt: sizes[lt] / mix[lt] for lt in mix}, args.live_rate)
    records = templates(docs)
    broker = KafkaBroker(workdir=workdir / "kafka")
    try:
        broker.start()
        topic = create_topic(broker.bootstrap, f"zeek-normalized-lake-{uuid.uuid4().hex[:6]}", PARTITIONS)
        create_topic(broker.bootstrap, "zeek-pipeline-status", 1, {"cleanup.policy": "compact"})
        create_topic(broker.bootstrap, "zeek-dlq", 1)
        written = write_lake(broker.bootstrap, topic, workdir, lake, start, records, args)
        before = {**shape(lake, args.hours), "queries": queries(lake, start, args.query_rounds)}
        compaction = compact(lake, workdir)
        after = {**shape(lake, args.hours), "queries": queries(lake, start, args.query_rounds)}
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for name in before["queries"]:
        assert before["queries"][name]["answer"] == after["queries"][name]["answer"], (name, before, after)
    result = {"live_rate": args.live_rate, "hours": args.hours, "compression": args.compression,
              "partitions": PARTITIONS, "log_types": len(mix), "written": written,
              "files_per_hour_estimate_default_flush": estimate,
              "before": before, "compaction": compaction, "after": after,
              "load_average": [round(x, 2) for x in os.getloadavg()], "when": time.strftime("%F %T")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lake.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{written['records']:,} records, {args.hours} event hours at {args.live_rate:,.0f} ev/s, "
          f"{len(mix)} log types, {PARTITIONS} partitions (estimate for live traffic: {estimate:,} files/hour)")
    print(f"{'':10}{'files/h':>9}{'files/day':>11}{'mean B/file':>13}{'median':>10}"
          f"{'count by type s':>17}{'conn 1 h s':>12}")
    for name, row in (("before", before), ("after", after)):
        print(f"{name:10}{row['files_per_hour']:>9,}{row['files_per_day']:>11,}{row['bytes_per_file_mean']:>13,}"
              f"{row['bytes_per_file_median']:>10,}{row['queries']['count_by_log_type']['seconds']:>17}"
              f"{row['queries']['conn_one_hour']['seconds']:>12}")
    print(f"compaction: {compaction['seconds']} s, {compaction['cpu_seconds']} CPU s, peak RSS "
          f"{compaction['peak_rss_mb']} MB; {json.dumps(compaction['summary'])}")
    return 0 if written["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
