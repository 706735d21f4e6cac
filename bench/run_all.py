"""`make bench`: run every bench/bench_*.py as its own process and collect their JSON results.

Each benchmark prints its own table and writes bench/results/<name>.json; this runner then prints the figures
that size a deployment side by side (CPU per record of each service, RSS under a backlog, the lake before and
after compaction) and writes them all to bench/results/summary.json.
Benchmarks measure; they never assert on timings (tests do not time anything).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"


def machine() -> dict[str, object]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "when": time.strftime("%F %T")}


def _us(events_per_cpu_second: float | None) -> str:
    return f"{1e6 / events_per_cpu_second:.1f}" if events_per_cpu_second else "-"


def side_by_side(results: dict[str, Any]) -> list[str]:
    """One table of the figures issue 14 asks for, from whichever results this run (or an earlier one) left."""
    lines = ["", "=== side by side ==="]
    normalizer = results.get("normalizer", {}).get("exactly_once", {}).get("service")
    if normalizer:
        lines.append(f"normalizer-enricher: {_us(normalizer['events_per_cpu_second'])} us CPU/record, "
                     f"{normalizer['events_per_second']:,} ev/s, peak RSS {normalizer['peak_rss_mb']:.0f} MB "
                     f"(exactly-once, backlog of {results['normalizer'].get('records', 0):,})")
    writer = results.get("writer", {})
    if writer.get("writer"):
        row = writer["writer"]
        lines.append(f"parquet-writer:      {_us(row['events_per_cpu_second'])} us CPU/record, "
                     f"{row['events_per_second']:,} ev/s, peak RSS {row['peak_rss_mb']:.0f} MB "
                     f"(backlog of {writer.get('records', 0):,} records, "
                     f"{writer.get('records', 0) * writer.get('average_document_bytes', 0) / 2**20:,.0f} MiB)")
    lake = results.get("lake")
    if lake:
        lines.append(f"lake: {lake['hours']} event hour(s) of the real mix at {lake['live_rate']:,.0f} ev/s, "
                     f"{lake['partitions']} partitions, default flush settings")
        lines.append(f"  {'':8}{'files/hour':>11}{'files/day':>11}{'mean bytes/file':>17}"
                     f"{'count by log type':>19}{'conn, one hour':>16}")
        for name in ("before", "after"):
            row = lake[name]
            lines.append(f"  {name:8}{row['files_per_hour']:>11,}{row['files_per_day']:>11,}"
                         f"{row['bytes_per_file_mean']:>17,}{row['queries']['count_by_log_type']['seconds']:>18}s"
                         f"{row['queries']['conn_one_hour']['seconds']:>15}s")
        compaction = lake["compaction"]
        merged_mb = compaction["summary"].get("bytes_before", 0) / 1e6
        lines.append(f"  compaction: {compaction['seconds']} s, {compaction['cpu_seconds']} CPU s, peak RSS "
                     f"{compaction['peak_rss_mb']:.0f} MB for {merged_mb:.0f} MB of files")
    return lines


def main(argv: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    wanted = set(argv)
    scripts = sorted(p for p in BENCH_DIR.glob("bench_*.py") if not wanted or p.stem.removeprefix("bench_") in wanted)
    failures = 0
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=BENCH_DIR.parent)
        print(f"--- {script.stem}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        failures += code != 0
    summary: dict[str, Any] = {"machine": machine(), "results": {}}
    for result in sorted(RESULTS.glob("*.json")):
        if result.name != "summary.json":
            summary["results"][result.stem] = json.loads(result.read_text())
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(side_by_side(summary["results"])))
    print(f"\nmachine: {summary['machine']}\nresults: {RESULTS / 'summary.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
