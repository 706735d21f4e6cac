"""Every query and lake command that the README, docs/*.md and the demo's summary print, run as printed.

The lake is written by the writer's code from the shipped sample of real Zeek logs, through the README's
own offline path (`zeek-pipeline normalize | zeek-pipeline write-parquet`), into `output/parquet` of a
scratch directory, the path the printed queries name. Each query runs in DuckDB from that directory;
results are checked against counts read independently with pyarrow.dataset. No broker is needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK, SHARED_ZEEK, read_lines, shared_available

pytestmark = pytest.mark.integration

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
CLI = re.compile(r'duckdb -c "([^"]+)"')
BLOCK = re.compile(r"^( *)```(sql|python)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
BACKFILL = re.compile(r"`(zeek-pipeline normalize --input \S+ \| zeek-pipeline write-parquet --output \S+)`")
INTEGER_KEYS = {"year", "month", "day", "hour"}


def shell_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def workdir(tmp: Path) -> Path:
    """A directory laid out like the project for the commands: config/ beside where output lands."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config").symlink_to(PROJECT_ROOT / "config")
    return tmp


def rows_per_type(base: Path) -> dict[str, int]:
    """Read back independently of the code under test: pyarrow.dataset per log type folder."""
    return {folder.name: ds.dataset(folder, format="parquet", partitioning="hive").count_rows()
            for folder in sorted(base.iterdir()) if folder.is_dir() and not folder.name.startswith(("_", "."))}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample written to output/parquet by the writer, through the documented offline commands."""
    root = workdir(tmp_path_factory.mktemp("demo-lake"))
    inputs = sorted(SAMPLE_ZEEK.glob("*.json.gz"))
    command = ("cat " + " ".join(str(p) for p in inputs)
               + " | zeek-pipeline normalize | zeek-pipeline write-parquet --output output/parquet")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=root, env=shell_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = sum(1 for path in inputs for _ in read_lines(path))
    rows = rows_per_type(root / "output" / "parquet")
    assert sum(rows.values()) == expected == 5657, (rows, expected)  # the sample has no rejects
    return root


def documented() -> list[tuple[str, str, str]]:
    """(where, kind, text) of every DuckDB command, SQL block and lake-reading Python block in the docs."""
    found = []
    for path in DOCS:
        text = path.read_text()
        name = str(path.relative_to(PROJECT_ROOT))
        found += [(name, "sql", query) for query in CLI.findall(text)]
        for _indent, kind, body in BLOCK.findall(text):
            body = textwrap.dedent(body)
            if kind == "sql" or "output/parquet" in body:
                found.append((name, kind, body))
    return found


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", PROJECT_ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(sql: str) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    relation = duckdb.connect().sql(sql)
    return relation.fetchall(), {name: str(kind) for name, kind in zip(relation.columns, relation.types, strict=True)}


def check_keys(types: dict[str, str]) -> None:
    for key in INTEGER_KEYS & set(types):
        assert types[key] == "INTEGER", types


def test_the_queries_the_demo_prints_work_and_count_what_pyarrow_counts(lake: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(lake)
    base = lake / "output" / "parquet"
    lines = demo_module().summary_lines(base, 5657, 0)
    queries = [CLI.search(line) for line in lines]
    printed = [m.group(1) for m in queries if m]
    assert len(printed) == 2
    expected = rows_per_type(base)

    per_type, types = run(printed[0])
    assert {log_type: records for log_type, records, *_ in per_type} == expected
    assert types == {"log_type": "VARCHAR", "records": "BIGINT", "first_event": "TIMESTAMP WITH TIME ZONE",
                     "last_event": "TIMESTAMP WITH TIME ZONE"}
    by_hour, types = run(printed[1])
    check_keys(types)
    assert sum(row[-1] for row in by_hour) == expected["dns"] and set(types) >= INTEGER_KEYS

    # The summary's table: every log type with its rows, and the span DuckDB sees.
    spans = {log_type: (first, last) for log_type, _, first, last in per_type}
    table = {line.split()[0]: line for line in lines if line.startswith("  ") and "duckdb" not in line}
    for log_type, rows in expected.items():
        assert table[log_type].split()[1:3] == [str(rows), "1"]
        first, last = spans[log_type]
        shown = "-" if first is None else f"{first:%Y-%m-%d %H:%M:%S} .. {last:%Y-%m-%d %H:%M:%S}"
        assert table[log_type].endswith(shown)


def test_every_query_in_the_readme_and_docs_runs_against_the_lake(lake: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(lake)
    expected = rows_per_type(lake / "output" / "parquet")
    found = documented()
    assert len([f for f in found if f[1] == "sql"]) >= 4 and any(f[1] == "python" for f in found), found
    for where, kind, text in found:
        if kind == "python":
            namespace: dict[str, Any] = {}
            exec(compile(text, where, "exec"), namespace)  # noqa: S102 - the documented snippet, as printed
            dataset = namespace["dns"]
            assert dataset.count_rows() == expected["dns"]
            assert [dataset.schema.field(k).type for k in ("year", "month", "day", "hour")] == [
                pa.int16(), pa.int8(), pa.int8(), pa.int8()]
            assert namespace["march"].num_rows == expected["dns"]  # the sample is from March 2018
            continue
        rows, types = run(text)
        check_keys(types)
        flat = " ".join(text.lower().split())
        if flat.startswith("select count(*) from read_parquet('output/parquet/dns/"):
            assert rows == [(expected["dns"],)], where
        elif "event_type as log_type" in flat:
            assert {row[0]: row[1] for row in rows} == expected, where
        elif "list_contains(answers" in flat:
            assert rows and types["answers"] == "VARCHAR[]" and types["dst_port"] == "USMALLINT", where
        else:
            assert rows, f"{where}: no rows from {text}"


def test_the_readme_backfill_command_writes_a_readable_lake(tmp_path: Path) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    commands = BACKFILL.findall(readme)
    assert commands, "the README's backfill command was not found"
    root = workdir(tmp_path / "backfill")
    real_tsv = SHARED_ZEEK / "rita-missing-host" / "conn.log.gz"
    source = real_tsv if shared_available() and real_tsv.exists() else SAMPLE_ZEEK / "dns.json.gz"
    for command in commands:
        name = re.search(r"--input (\S+)", command)
        out = re.search(r"--output (\S+)", command)
        assert name and out
        shutil.copy(source, root / name.group(1))
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=root, env=shell_env(),
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = sum(1 for line in read_lines(source) if not line.startswith(b"#"))
        reports = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        rejected = sum(1 for report in reports if "error" in report)  # normalize's rejects, one per line
        table = ds.dataset(root / out.group(1), format="parquet", partitioning="hive").to_table()
        assert table.num_rows + rejected == lines and table.num_rows > 0
        assert {"rows": table.num_rows, "rejected": 0}.items() <= reports[-1].items()  # write-parquet's summary
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("month").type == pa.int32()
