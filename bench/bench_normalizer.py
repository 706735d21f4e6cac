"""normalizer-enricher vs a bare relay, on one broker and one backlog of the real Zeek mix.

A Kafka broker is started for the run; the shared real logs (every JSON and TSV file, published once with
`zeek-pipeline publish --repeat`) form a backlog on a 3-partition topic. Then, each in its own process,
each with a fresh consumer group and output topic, each draining the whole backlog:

- relay:   consume -> produce the same bytes, no transform, with the service's librdkafka settings, batch
           bounds (normalizer.batch_size / batch_timeout_ms) and, for exactly_once, one transaction per batch
           with the offsets in it (the same EOS loop, minus the transform and the headers);
- service: `zeek-pipeline normalizer-enricher`.

for processing_guarantee exactly_once and at_least_once, `--rounds` times each, interleaved; the best round
counts (a shared machine only ever slows a run down). events/s = records drained / seconds from the first
committed offset to the last (start-up and group join left out); events per CPU second = the same records /
the process's CPU time over that span (steadier under load); peak RSS is sampled from /proc every 0.1 s.
Prints a table and writes bench/results/normalizer.json. Goal: service/relay >= 0.5.

    python bench/bench_normalizer.py [--repeat K] [--batch-size N] [--rounds R]
    python bench/bench_normalizer.py relay     (internal: the relay process, configured by the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.infra.kafka import KafkaBroker  # noqa: E402
from tests.infra.topics import create_topic, end_offsets, unique_name  # noqa: E402
from tests.infra.zeek_data import json_logs, tsv_logs  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ZEEK = ROOT / ".venv" / "bin" / "zeek-pipeline"
CONFIG = ROOT / "config"
PARTITIONS = 3


# --- the relay (runs as `bench_normalizer.py relay`) ---------------------------------------------------
def relay() -> int:
    """consume -> produce the same bytes, with the service's client settings and batch bounds."""
    from confluent_kafka import Consumer, Producer

    from zeek_pipeline.kafka import config as kafka_config
    from zeek_pipeline.normalizer.transactions import transactional_id
    from zeek_pipeline.settings import load_settings

    settings = load_settings(CONFIG)
    n = settings.normalizer
    eos = n.processing_guarantee == "exactly_once"
    overrides: dict[str, Any] = {"partitioner": "murmur2_random", "delivery.report.only.error": True,
                                 "message.max.bytes": n.max_message_bytes + 65_536}
    if eos:
        overrides["transactional.id"] = transactional_id(settings.kafka.group_id, "relay")
        overrides["transaction.timeout.ms"] = n.transaction_timeout_ms
    producer = Producer(kafka_config.producer(settings, **overrides))
    consumer = Consumer(kafka_config.consumer(settings, settings.kafka.group_id))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    if eos:
        producer.init_transactions(30)
    consumer.subscribe([settings.kafka.topic])
    out = settings.output.kafka.topic
    batch_size, batch_seconds, poll_max = n.batch_size, n.batch_timeout_ms / 1000, settings.kafka.max_poll_records
    count, started, in_txn = 0, 0.0, False

    def commit() -> None:
        nonlocal count, in_txn
        positions = consumer.position(consumer.assignment())
        if eos:
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            in_txn = False
        else:
            producer.flush(30)
            consumer.commit(offsets=positions, asynchronous=False)
        count = 0

    while not stop:
        now = time.monotonic()
        if count and (count >= batch_size or now - started >= batch_seconds):
            commit()
            continue
        timeout = 0.5 if not count else max(0.0, min(0.5, started + batch_seconds - now))
        messages = consumer.consume(max(1, min(poll_max, batch_size - count)), timeout)
        for msg in messages:
            if msg.error():
                continue
            if eos and not in_txn:
                producer.begin_transaction()
                in_txn = True
            if count == 0:
                started = time.monotonic()
            while True:
                try:
                    producer.produce(out, msg.value(), msg.key())
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
        producer.poll(0)
    if count:
        commit()
    consumer.close()
    return 0


# --- the orchestration -----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()], "when": time.strftime("%F %T")}


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_one(kind: str, guarantee: str, bootstrap: str, source: str, total: int, workdir: Path,
            batch_size: int) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition

    group = unique_name(f"bench-{kind}")
    output = create_topic(bootstrap, unique_name(f"bench-{kind}-out"), PARTITIONS)
    dlq = create_topic(bootstrap, unique_name(f"bench-{kind}-dlq"), 1)
    status = create_topic(bootstrap, unique_name("bench-status"), 1, {"cleanup.policy": "compact"})
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEEK_PIPELINE_")}
    env.update({
        "ZEEK_PIPELINE_KAFKA__BROKERS": bootstrap, "ZEEK_PIPELINE_KAFKA__TOPIC": source,
        "ZEEK_PIPELINE_KAFKA__GROUP_ID": group, "ZEEK_PIPELINE_OUTPUT__KAFKA__TOPIC": output,
        "ZEEK_PIPELINE_OUTPUT__KAFKA__DLQ_TOPIC": dlq, "ZEEK_PIPELINE_STATUS__TOPIC": status,
        "ZEEK_PIPELINE_NORMALIZER__PROCESSING_GUARANTEE": guarantee,
        "ZEEK_PIPELINE_NORMALIZER__BATCH_SIZE": str(batch_size),
        "ZEEK_PIPELINE_NORMALIZER__HTTP_PORT": "0", "ZEEK_PIPELINE_LOG__PATH": str(workdir / "log"),
        "ZEEK_PIPELINE_INSTANCE_ID": f"bench-{kind}",
    })
    command = ([str(ZEEK), "normalizer-enricher", "--config", str(CONFIG)] if kind == "service"
               else [sys.executable, __file__, "relay"])
    log = (workdir / f"{kind}-{guarantee}.out").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    partitions = [TopicPartition(source, p) for p in range(PARTITIONS)]
    peak = 0
    first_at = first_count = done_at = None
    first_cpu = cpu = 0.0
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and process.poll() is None:
            peak = max(peak, rss(process.pid))
            committed = sum(max(0, tp.offset) for tp in watcher.committed(partitions, timeout=10))
            now = time.monotonic()
            if committed and first_at is None:
                first_at, first_count, first_cpu = now, committed, cpu_seconds(process.pid)
            if committed >= total:
                done_at, cpu = now, cpu_seconds(process.pid) - first_cpu
                break
            time.sleep(0.1)
    finally:
        watcher.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    if done_at is None or first_at is None or first_count is None:
        raise RuntimeError(f"{kind}/{guarantee} did not drain the backlog; see {log.name}")
    seconds = max(done_at - first_at, 1e-6)
    drained = total - first_count
    return {"events_per_second": round(drained / seconds), "seconds": round(seconds, 2),
            "events_per_cpu_second": round(drained / max(cpu, 1e-6)), "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": round(peak / 2**20, 1), "exit_code": process.returncode}


def transform_alone(paths: list[Path]) -> dict[str, Any]:
    """The Transformer by itself on the same records (flat JSON, TSV as published), per CPU second: how much
    of the service's CPU per record is the transform and how much is Kafka."""
    import orjson
    from tests.infra.zeek_data import read_lines

    from zeek_pipeline.core.transform import Transformer
    from zeek_pipeline.core.tsv import TsvReader, TsvRecord

    bodies: list[bytes] = []
    for path in paths:
        lines = list(read_lines(path))
        if lines and lines[0].startswith(b"#separator"):
            reader = TsvReader(default_log_type=path.name.split(".")[0])
            for number, line in enumerate(lines, 1):
                item = reader.feed(number, line)
                if isinstance(item, TsvRecord):
                    bodies.append(orjson.dumps({"_path": item.log_type, **item.record}))
        else:
            bodies.extend(lines)
    transform = Transformer.from_config_dir(CONFIG).transform
    started = time.process_time()
    for body in bodies:
        transform(body, topic="zeek-raw")
    cpu = time.process_time() - started
    return {"records": len(bodies), "events_per_cpu_second": round(len(bodies) / cpu)}


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest round (others on a shared machine only ever slow a run down), with every round kept."""
    top = dict(max(runs, key=lambda run: run["events_per_second"]))
    top["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    top["events_per_cpu_second"] = max(run["events_per_cpu_second"] for run in runs)
    top["rounds"] = [run["events_per_second"] for run in runs]
    return top


def main(argv: list[str]) -> int:
    if argv[:1] == ["relay"]:
        return relay()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="times the real mix is published (208k each)")
    parser.add_argument("--batch-size", type=int, default=5000, help="normalizer.batch_size for both")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the best one counts")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-normalizer-"))
    results: dict[str, Any] = {"machine": machine(), "batch_size": args.batch_size, "partitions": PARTITIONS,
                               "rounds": args.rounds}
    try:
        with KafkaBroker(workdir=workdir / "kafka") as broker:
            source = create_topic(broker.bootstrap, "bench-raw", PARTITIONS)
            subprocess.run([str(ZEEK), "publish", "--topic", source, "--brokers", broker.bootstrap, "--repeat",
                            str(args.repeat), *map(str, json_logs() + tsv_logs())], check=True,
                           stdout=subprocess.DEVNULL, cwd=ROOT)
            total = sum(end_offsets(broker.bootstrap, source).values())
            results["records"] = total
            print(f"backlog: {total:,} real Zeek records on {PARTITIONS} partitions", flush=True)
            results["transform_alone"] = transform_alone(json_logs() + tsv_logs())
            print(f"transform alone: {results['transform_alone']['events_per_cpu_second']:,} ev per CPU s",
                  flush=True)
            for guarantee in ("exactly_once", "at_least_once"):
                runs: dict[str, list[dict[str, Any]]] = {"relay": [], "service": []}
                for _ in range(args.rounds):  # interleaved, so machine load hits both alike
                    for kind in ("relay", "service"):
                        run = run_one(kind, guarantee, broker.bootstrap, source, total, workdir, args.batch_size)
                        runs[kind].append(run)
                        print(f"{guarantee:>14} {kind:>8}: {run['events_per_second']:>9,} ev/s in "
                              f"{run['seconds']:.1f}s, {run['events_per_cpu_second']:>9,} ev per CPU s, "
                              f"peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
                row: dict[str, Any] = {kind: best(kind_runs) for kind, kind_runs in runs.items()}
                row["ratio"] = round(row["service"]["events_per_second"] / row["relay"]["events_per_second"], 2)
                row["cpu_ratio"] = round(row["service"]["events_per_cpu_second"]
                                         / row["relay"]["events_per_cpu_second"], 2)
                print(f"{guarantee:>14}    ratio (best rounds): {row['ratio']:.2f} (goal >= 0.5); "
                      f"per CPU second: {row['cpu_ratio']:.2f}", flush=True)
                results[guarantee] = row
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "normalizer.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
          f"results: {RESULTS / 'normalizer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
