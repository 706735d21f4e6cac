#!/usr/bin/env python3
"""Build tests/data/zeek-sample/ from the WRCCDC 2018 Zeek logs (CC BY-SA 4.0): the project's own small
copy of real data, used by tests and `make demo` when ../shared is absent.

For each of the 32 log types: the first N records (default 300) unchanged, flat form as json-streaming-logs
wrote them (`<type>.json.gz`), and the same records in the zeek-kafka tagged form (`tagged/<type>.json.gz`:
{"<type>": {...}}, `_path`/`_write_ts` dropped, ISO times as epoch floats), made with core/forms.py.
Output is deterministic (gzip mtime 0). Usage:

    .venv/bin/python scripts/make_zeek_sample.py [--source ../shared/data/zeek/wrccdc-2018] [--records 300]
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import orjson

from zeek_pipeline.core.forms import to_tagged

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "zeek" / "wrccdc-2018"
TARGET = ROOT / "tests" / "data" / "zeek-sample"


def _write_gzip(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as out:
        for line in lines:
            out.write(line + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--target", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    files = sorted(args.source.glob("*.json.gz"))
    if not files:
        sys.stderr.write(f"no *.json.gz under {args.source}\n")
        return 1
    for file in files:
        log_type = file.name.removesuffix(".json.gz")
        flat: list[bytes] = []
        with gzip.open(file, "rb") as handle:
            for line in handle:
                line = line.rstrip(b"\r\n")
                if line:
                    flat.append(line)
                if len(flat) >= args.records:
                    break
        tagged = [orjson.dumps(to_tagged(orjson.loads(line))) for line in flat]
        _write_gzip(args.target / f"{log_type}.json.gz", flat)
        _write_gzip(args.target / "tagged" / f"{log_type}.json.gz", tagged)
    total = sum(path.stat().st_size for path in args.target.rglob("*.json.gz"))
    sys.stdout.write(f"{len(files)} log types, {total / 1e6:.2f} MB gzip in {args.target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
