"""`zeek-pipeline write-parquet`: normalize's output → the service's layout, without Kafka."""

from __future__ import annotations

import gzip
import json
import subprocess
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pyarrow.dataset as ds
import pytest

from tests.infra.zeek_data import PROJECT_ROOT
from tests.unit.test_writer_support import CONFIG, documents, interleave

ZEEK = PROJECT_ROOT / ".venv" / "bin" / "zeek-pipeline"
TYPES = {"dns": 3000, "ssl": 1500, "weird": 700, "notice": 207, "x509": 348}


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return interleave(*(documents(log_type, n) for log_type, n in TYPES.items()))


def write_parquet(out: Path, data: bytes, *args: str) -> tuple[int, dict[str, object], list[dict[str, object]]]:
    proc = subprocess.run([str(ZEEK), "write-parquet", "--output", str(out), "--config", str(CONFIG), *args],
                          input=data, capture_output=True, check=False, timeout=120)
    err_lines = [json.loads(line) for line in proc.stderr.decode().splitlines() if line.startswith("{")]
    summary = next(e for e in err_lines if "output" in e)
    return proc.returncode, summary, [e for e in err_lines if "line" in e]


def test_writes_every_log_type_into_hive_folders_with_line_lineage(tmp_path: Path, lines: list[bytes]) -> None:
    code, summary, rejects = write_parquet(tmp_path, b"\n".join(lines) + b"\n")
    assert (code, rejects, summary["rows"]) == (0, [], len(lines))
    counts: dict[str, int] = {}
    for log_type, expected in TYPES.items():
        table = ds.dataset(tmp_path / log_type, format="parquet", partitioning="hive").to_table()
        assert table.num_rows == expected, log_type
        assert table.column("_kafka_partition").null_count == table.num_rows
        line_numbers = table.column("_kafka_offset").to_pylist()
        assert all(orjson.loads(lines[n - 1])["log_type"] == log_type for n in line_numbers[:50])
        counts[log_type] = table.num_rows
    assert sum(counts.values()) == len(lines)
    names = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert all(n.startswith("events_") and n.endswith(".parquet") for n in names), names


def test_writing_the_same_input_again_replaces_its_files(tmp_path: Path, lines: list[bytes]) -> None:
    data = b"\n".join(lines[:2000])
    write_parquet(tmp_path, data)
    first = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    write_parquet(tmp_path, data)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == first
    assert duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/**/*.parquet', union_by_name=true)"
                      ).fetchall() == [(2000,)]


def test_different_inputs_never_overwrite_each_other(tmp_path: Path, lines: list[bytes]) -> None:
    write_parquet(tmp_path, b"\n".join(lines[:1000]))
    write_parquet(tmp_path, b"\n".join(lines[1000:2000]))  # same line numbers, other documents
    assert duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/**/*.parquet', union_by_name=true)"
                      ).fetchall() == [(2000,)]


def test_lines_that_cannot_be_typed_are_reported_and_the_rest_written(tmp_path: Path, lines: list[bytes]) -> None:
    bad = orjson.loads(lines[5])
    assert bad["log_type"] == "dns"
    bad["raw"]["trans_id"] = "twelve"
    data = [lines[0], b"{not json", lines[1], b"", orjson.dumps(bad), lines[2], b"\xff\xfe"]
    code, summary, rejects = write_parquet(tmp_path, b"\n".join(data))
    assert code == 0 and summary["rows"] == 3
    assert Counter(r["error"] for r in rejects) == Counter({"invalid_json": 2, "untypable_value": 1})
    by_line = {r["line"]: r for r in rejects}
    assert by_line[2]["text"] == "{not json" and "base64" in by_line[7]


def test_reads_gzip_and_a_file_argument(tmp_path: Path, lines: list[bytes]) -> None:
    source = tmp_path / "docs.json.gz"
    source.write_bytes(gzip.compress(b"\n".join(lines[:500])))
    code, summary, _ = write_parquet(tmp_path / "out", b"", "--input", str(source))
    assert (code, summary["rows"]) == (0, 500)


def test_a_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([str(ZEEK), "write-parquet", "--output", str(tmp_path), "--config", str(tmp_path / "no")],
                          capture_output=True, check=False, timeout=60)
    assert proc.returncode == 2 and b"not found" in proc.stderr
