"""documents_to_table on the real mix: rows/s of three-layer JSON -> typed Arrow table (the writer's CPU work).

The shared real logs (JSON and TSV) go through the Transformer once; the resulting documents are grouped by
log type like the writer's buffers and converted in batches of several sizes, with pyarrow on 1 thread
(one core, as a writer instance per core would run) and on all cores. The per-document fallback (a batch
pyarrow cannot read in one go) is measured too. Prints a table, writes bench/results/arrow.json.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.infra.zeek_data import json_logs, read_lines, tsv_logs  # noqa: E402

from zeek_pipeline.core.arrow import convert_documents  # noqa: E402
from zeek_pipeline.core.schema import load_schema  # noqa: E402
from zeek_pipeline.core.transform import Accepted, Transformer  # noqa: E402
from zeek_pipeline.core.tsv import TsvReader, TsvRecord  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BATCH_SIZES = (1_000, 5_000, 20_000)
ROUNDS = 3


def load_mix(transformer: Transformer) -> dict[str, list[bytes]]:
    by_type: dict[str, list[bytes]] = defaultdict(list)
    for path in json_logs():
        for line in read_lines(path):
            result = transformer.transform(line)
            if isinstance(result, Accepted):
                by_type[result.log_type].append(result.value)
    for path in tsv_logs():
        reader = TsvReader()
        for number, line in enumerate(read_lines(path), 1):
            record = reader.feed(number, line)
            if isinstance(record, TsvRecord):
                result = transformer.transform_record(record.log_type, record.record)
                if isinstance(result, Accepted):
                    by_type[result.log_type].append(result.value)
    return dict(by_type)


def run(mix: dict[str, list[bytes]], batch: int, schema, rules) -> tuple[float, float, int, int]:  # type: ignore[no-untyped-def]
    """Best of ROUNDS: wall and CPU seconds to convert the whole mix, rows, batches off the fast path.

    CPU time is reported too because a shared machine's load inflates wall time."""
    best = best_cpu = float("inf")
    rows = slow = 0
    for _ in range(ROUNDS):
        rows = slow = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        for log_type, values in mix.items():
            for start in range(0, len(values), batch):
                chunk = values[start:start + batch]
                conversion = convert_documents(log_type, chunk, [0] * len(chunk), range(start, start + len(chunk)),
                                               schema=schema, rules=rules)
                rows += conversion.table.num_rows
                slow += not conversion.fast_path
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
    return best, best_cpu, rows, slow


def slow_path_rates(mix: dict[str, list[bytes]], schema, rules) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """rows per CPU second of a 20k dns batch that cannot be read in one go: one epoch-ts document among
    ISO ones (grouped path), one count sent as a string (per-document path)."""
    values = mix["dns"][:20_000]
    odd_forms = values[0].replace(b'"ts":"2018-03-24T17:15:20.865716Z"', b'"ts":1521911720.865716', 1)
    odd_type = re.sub(rb'"trans_id":(\d+)', rb'"trans_id":"\1"', values[0], count=1)
    rates: dict[str, float] = {}
    for odd in (odd_forms, odd_type):
        assert odd != values[0]
        batch = [*values, odd]
        started = time.process_time()
        conversion = convert_documents("dns", batch, [0] * len(batch), range(len(batch)), schema=schema, rules=rules)
        elapsed = time.process_time() - started
        assert not conversion.rejects and conversion.table.num_rows == len(batch)
        rates[conversion.path] = len(batch) / elapsed
    return rates


def main() -> int:
    transformer = Transformer.from_config_dir(ROOT / "config")
    schema = load_schema(ROOT / "config")
    rules = transformer.rules
    started = time.perf_counter()
    mix = load_mix(transformer)
    total_rows = sum(len(values) for values in mix.values())
    total_bytes = sum(len(value) for values in mix.values() for value in values)
    print(f"real mix: {total_rows:,} documents, {len(mix)} log types, {total_bytes / 1e6:.1f} MB of JSON "
          f"(loaded in {time.perf_counter() - started:.0f}s)")
    results: dict[str, object] = {"documents": total_rows, "log_types": len(mix), "json_mb": total_bytes / 1e6,
                                  "runs": []}
    runs: list[dict[str, object]] = []
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"{'threads':>7} {'batch':>7} {'rows/s':>10} {'MB/s':>7} {'rows/cpu-s':>11} {'not-fast batches':>17}")
    for threads in (1, pa.cpu_count()):
        pa.set_cpu_count(threads)
        for batch in BATCH_SIZES:
            seconds, cpu_seconds, rows, slow = run(mix, batch, schema, rules)
            assert rows == total_rows
            rate = rows / seconds
            print(f"{threads:>7} {batch:>7} {rate:>10,.0f} {total_bytes / seconds / 1e6:>7.0f} "
                  f"{rows / cpu_seconds:>11,.0f} {slow:>17}")
            runs.append({"threads": threads, "batch": batch, "rows_per_s": round(rate),
                         "rows_per_cpu_s": round(rows / cpu_seconds),
                         "mb_per_s": round(total_bytes / seconds / 1e6, 1), "not_fast_batches": slow})
    results["load_average"] = load
    pa.set_cpu_count(1)
    slow = slow_path_rates(mix, schema, rules)
    for path, rate in slow.items():
        print(f"{path} path, 20k dns batch (1 thread): {rate:,.0f} rows/cpu-s")
    results["runs"] = runs
    results["slow_path_rows_per_cpu_s"] = {path: round(rate) for path, rate in slow.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "arrow.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
