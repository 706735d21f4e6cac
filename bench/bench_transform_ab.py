"""CPU µs per record of the Transformer at another git revision and at the working tree, in one process.

On a shared machine wall-clock rates swing with the neighbours' load and even CPU time per record inflates
with it (the broker and other benches share the two cores and their caches), so two figures taken minutes
apart say little. Here both Transformers run on the same records in one process, their rounds interleaved,
and the ratio of their best rounds is the figure to trust. The mix is bench_transform.py's (every record
of the shared JSON logs, flat and tagged, shuffled).

    python bench/bench_transform_ab.py [--baseline REV] [--rounds N]

The baseline's `services/` is exported with `git archive` into a temporary directory (nothing in the
checkout changes). Writes bench/results/transform_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def export(revision: str, into: Path) -> str:
    """`services/` at `revision` into `into`; returns the full commit id."""
    commit = subprocess.run(["git", "rev-parse", revision], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = into / "services.tar"
    with archive.open("wb") as handle:
        subprocess.run(["git", "archive", commit, "services"], cwd=ROOT, check=True, stdout=handle)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return commit


def load_transformer(services: Path) -> Any:
    """A Transformer imported from `services`; the package is dropped from sys.modules afterwards so the next
    import finds another copy (the object keeps its own modules alive)."""
    sys.path.insert(0, str(services))
    try:
        from zeek_pipeline.core.transform import Transformer

        return Transformer.from_config_dir(ROOT / "config")
    finally:
        sys.path.remove(str(services))
        for name in [m for m in sys.modules if m == "zeek_pipeline" or m.startswith("zeek_pipeline.")]:
            del sys.modules[name]


def cpu_us_per_record(transformer: Any, bodies: list[bytes]) -> float:
    transform = transformer.transform
    started = time.process_time()
    for body in bodies:
        transform(body, ingest_time_ms=1)
    return (time.process_time() - started) / len(bodies) * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each counts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="transform-ab-") as tmp:
        commit = export(args.baseline, Path(tmp))
        baseline = load_transformer(Path(tmp) / "services")
        current = load_transformer(ROOT / "services")
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_transform import load_mix

    flat, tagged = load_mix()
    bodies = flat + tagged
    random.Random(1).shuffle(bodies)
    cpu_us_per_record(baseline, bodies)  # warm both: caches, plans
    cpu_us_per_record(current, bodies)
    base_runs: list[float] = []
    new_runs: list[float] = []
    for _ in range(args.rounds):
        base_runs.append(cpu_us_per_record(baseline, bodies))
        new_runs.append(cpu_us_per_record(current, bodies))
    result: dict[str, Any] = {
        "baseline": commit, "records": len(bodies), "load_average": os.getloadavg(),
        "baseline_us_per_record": round(min(base_runs), 3), "working_tree_us_per_record": round(min(new_runs), 3),
        "ratio": round(min(new_runs) / min(base_runs), 3),
        "rounds": {"baseline": [round(x, 3) for x in base_runs], "working_tree": [round(x, 3) for x in new_runs]},
    }
    print(f"{len(bodies):,} records, load average {result['load_average'][0]:.1f}: baseline {commit[:10]} "
          f"{result['baseline_us_per_record']} µs, working tree {result['working_tree_us_per_record']} µs of "
          f"CPU per record (ratio {result['ratio']})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transform_ab.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
