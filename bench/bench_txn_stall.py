"""How long read_committed readers of zeek-normalized stall after a normalizer-enricher is killed mid-transaction
and replaced by an instance with a different name (a Kubernetes pod replaced by a new pod).

The open transaction of the killed instance holds the last stable offset (LSO) of every output partition it
wrote to: nothing after it, from any producer, is visible to read_committed readers until that transaction
ends. Before the ownership fence (docs/normalizer-exactly-once.md) nothing ended it but the broker's
transaction timeout (transaction.timeout.ms, 60 s by default, checked every 10 s); now the new owner fences
the dead one's transactional.id on assignment.

One round: records flow at a steady rate into a 3-partition input; instance A (`normalizer-a`) works until
an output partition has an open transaction, then gets SIGKILL; instance B (`normalizer-b`) starts at once.
The figure is the time from the kill until a read_committed reader of the output sees the first output of an
input record published after the kill, and until it has seen one on every input partition. It includes the
group's session timeout (the dead member must leave the group before B gets its partitions), so it is given
for the default session (30 s) and for a fast one (6 s).

    python bench/bench_txn_stall.py [--rounds R] [--session-timeout-ms MS ...]

Prints a table and writes bench/results/txn_stall[_<label>].json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from tests.infra.kafka import KafkaBroker  # noqa: E402
from tests.infra.topics import end_offsets, unique_name  # noqa: E402
from tests.infra.zeek_data import json_logs  # noqa: E402
from tests.integration.test_normalizer_support import Pipeline, open_transaction_partitions  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WAIT_LIMIT = 240.0  # a stall longer than this is reported as such


def wait_open_transaction(pipe: Pipeline, limit: float = 60.0) -> None:
    """Until some output partition has an open (uncommitted) transaction: the moment to kill."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if open_transaction_partitions(pipe.bootstrap, pipe.output):
            return
        time.sleep(0.02)
    raise RuntimeError("no open transaction seen")


def stall_after_kill(pipe: Pipeline, env: dict[str, str]) -> dict[str, Any]:
    first = pipe.start("normalizer-a", **env)
    while pipe.committed_total() < 5000:
        if first.process.poll() is not None:
            raise RuntimeError(first.tail())
        time.sleep(0.2)
    wait_open_transaction(pipe)
    input_ends = end_offsets(pipe.bootstrap, pipe.input)
    output_ends = end_offsets(pipe.bootstrap, pipe.output)
    killed = time.monotonic()
    first.kill()
    pipe.start("normalizer-b", **env)
    reader = Consumer({"bootstrap.servers": pipe.bootstrap, "group.id": unique_name("stall-reader"),
                       "isolation.level": "read_committed", "enable.auto.commit": False})
    reader.assign([TopicPartition(pipe.output, p, offset) for p, offset in output_ends.items()])
    seen: dict[int, float] = {}
    try:
        while len(seen) < len(input_ends) and time.monotonic() - killed < WAIT_LIMIT:
            for msg in reader.consume(1000, 0.2):
                if msg.error() is not None:
                    continue
                raw = msg.headers() or []
                headers = dict(raw.items() if isinstance(raw, dict) else raw)
                partition, offset = int(headers["source.partition"] or 0), int(headers["source.offset"] or 0)
                if offset >= input_ends[partition] and partition not in seen:
                    seen[partition] = time.monotonic() - killed
    finally:
        reader.close()
    return {"first_visible_s": round(min(seen.values()), 1) if seen else None,
            "all_partitions_visible_s": round(max(seen.values()), 1) if len(seen) == len(input_ends) else None,
            "limit_s": WAIT_LIMIT}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--session-timeout-ms", type=int, nargs="+", default=[30_000, 6_000])
    parser.add_argument("--label", default="", help="stored with the results, e.g. before/after")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-stall-") as tmp, \
            KafkaBroker(workdir=Path(tmp) / "kafka") as broker:
        for session in args.session_timeout_ms:
            group = json.dumps({"session.timeout.ms": session, "heartbeat.interval.ms": min(3000, session // 3)})
            for round_ in range(args.rounds):
                workdir = Path(tmp) / f"s{session}-r{round_}"
                workdir.mkdir()
                pipe = Pipeline(broker.bootstrap, workdir, input_partitions=3, name="stall").create()
                try:
                    pipe.publish(json_logs(), "--rate", "1000", "--count", "400000", "--repeat", "0",
                                 background=True)
                    result = stall_after_kill(pipe, {"ZEEK_PIPELINE_KAFKA__LIBRDKAFKA": group})
                finally:
                    pipe.stop_all()
                row = {"session_timeout_ms": session, "round": round_, **result}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\n{'session timeout':>16} | {'first visible':>13} | {'all partitions':>14}")
    for row in rows:
        print(f"{row['session_timeout_ms']:>14}ms | {row['first_visible_s']!s:>12}s | "
              f"{row['all_partitions_visible_s']!s:>13}s")
    RESULTS.mkdir(exist_ok=True)
    name = f"txn_stall_{args.label}.json" if args.label else "txn_stall.json"
    (RESULTS / name).write_text(json.dumps({
        "label": args.label, "python": platform.python_version(), "when": time.strftime("%F %T"),
        "transaction_timeout_ms": 60_000, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
