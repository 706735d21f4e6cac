"""Where the real Zeek logs are: the shared corpus beside the project when present, else the shipped sample."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_ZEEK = Path(os.environ.get("ZEEK_PIPELINE_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data" / "zeek"))
SAMPLE_ZEEK = PROJECT_ROOT / "tests" / "data" / "zeek-sample"


def shared_available() -> bool:
    return (SHARED_ZEEK / "wrccdc-2018").is_dir()


def json_logs() -> list[Path]:
    """Every real NDJSON log file: the whole shared corpus, or the shipped sample without it."""
    if shared_available():
        return sorted((SHARED_ZEEK / "wrccdc-2018").glob("*.json.gz")) + sorted(
            (SHARED_ZEEK / "rita-lab-2018-json").glob("*.json.gz"))
    return sorted(SAMPLE_ZEEK.glob("*.json.gz"))


def tsv_logs() -> list[Path]:
    """Real Zeek TSV logs (only in the shared corpus: GPL-3.0, used by path, never copied)."""
    return sorted((SHARED_ZEEK / "rita-missing-host").glob("*.log.gz")) if shared_available() else []


def read_lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line:
                yield line
