"""`make bench`: run every bench/bench_*.py as its own process and collect their JSON results.

Each benchmark prints its own table and writes bench/results/<name>.json; this runner prints one summary.
Benchmarks measure; they never assert on timings (tests do not time anything).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

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
    summary = {"machine": machine(), "results": {}}
    for result in sorted(RESULTS.glob("*.json")):
        if result.name != "summary.json":
            summary["results"][result.stem] = json.loads(result.read_text())
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nmachine: {summary['machine']}\nresults: {RESULTS / 'summary.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
