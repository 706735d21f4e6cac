"""`zeek-pipeline compact` as a real process, killed with SIGKILL at each step of its protocol (a failpoint
makes it kill itself there) and at random moments, on local disk and on the real S3 server, over a lake the
real parquet-writer wrote from real records. After every kill no row is missing; after the next run every
row is there exactly once, with the same column types, in fewer files."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.infra import s3_fixtures
from tests.infra.s3 import S3Server
from tests.infra.service_process import CONFIG, ZEEK, clean_env
from tests.infra.waiting import wait_for
from tests.integration.test_writer_support import (
    Coordinate,
    Lake,
    last_data_offsets,
    produce_transactional,
    running,
    topic_coordinates,
)
from tests.unit.test_writer_support import documents, interleave
from zeek_pipeline.compaction.failpoints import ENVIRONMENT, STEPS

pytestmark = [pytest.mark.integration]

s3_server = s3_fixtures.s3_server

TOTAL = 12_000
# Small flushes: the writer leaves many small files per hour, as it does at its default settings over a day.
SMALL_FLUSHES = {"ZEEK_PIPELINE_WRITE__FLUSH_EVENT_COUNT": "150", "ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS": "0.5",
                 "ZEEK_PIPELINE_WRITE__FLUSH_BUFFER_MB": "0"}


@dataclass
class Written:
    """A lake the real writer wrote, and the (partition, offset) of every record it holds."""

    lake: Lake
    expected: set[Coordinate]


def write_lake(lake: Lake) -> Written:
    values = interleave(documents("dns"), documents("ssl"), documents("weird"), documents("http"))[:TOTAL]
    assert len(values) == TOTAL
    with running(lake.create()):
        produce_transactional(lake.bootstrap, lake.topic, values, partitions=lake.partitions)
        last = last_data_offsets(lake.bootstrap, lake.topic, TOTAL)
        writer = lake.start("writer-0", **SMALL_FLUSHES)
        writer.wait_assigned(lake.partitions, timeout=60)
        lake.wait_written(last, timeout=150, alive=writer)
        assert writer.terminate() == 0, writer.tail()
    return Written(lake, topic_coordinates(lake.bootstrap, lake.topic, TOTAL))


@pytest.fixture(scope="module")
def on_disk(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Written:
    workdir = tmp_path_factory.mktemp("compact-disk")
    return write_lake(Lake(kafka_bootstrap, workdir, str(workdir / "lake")))


@pytest.fixture(scope="module")
def on_s3(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Written:
    workdir = tmp_path_factory.mktemp("compact-s3")
    bucket = s3_server.create_bucket(f"compact-{uuid.uuid4().hex[:12]}")
    s3_env = {"ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ENDPOINT": s3_server.endpoint,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__REGION": s3_server.region,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ACCESS_KEY": s3_server.access_key,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY": s3_server.secret_key,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SCHEME": "http"}
    return write_lake(Lake(kafka_bootstrap, workdir, f"s3://{bucket}/zeek", s3_env=s3_env,
                           filesystem=s3_server.filesystem()))


@pytest.fixture(params=["disk", pytest.param("s3", marks=pytest.mark.s3)])
def written(request: pytest.FixtureRequest) -> Written:
    return request.getfixturevalue("on_disk" if request.param == "disk" else "on_s3")  # type: ignore[no-any-return]


def copy_of(written: Written, workdir: Path) -> Lake:
    """A fresh copy of the written lake (every test compacts its own)."""
    source = written.lake
    name = f"copy-{uuid.uuid4().hex[:8]}"
    if source.filesystem is None:
        shutil.copytree(source.base, workdir / name)
        return Lake(source.bootstrap, workdir, str(workdir / name))
    root = source.base.removeprefix("s3://")
    target = f"{root.split('/')[0]}/{name}"
    for info in source.filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.File:
            source.filesystem.copy_file(info.path, f"{target}/{info.path.removeprefix(root + '/')}")
    return Lake(source.bootstrap, workdir, f"s3://{target}", s3_env=source.s3_env, filesystem=source.filesystem)


def compact(lake: Lake, failpoint: str | None = None) -> subprocess.Popen[bytes]:
    kill_at = {ENVIRONMENT: failpoint} if failpoint else {}
    env = clean_env({**lake.s3_env, "ZEEK_PIPELINE_COMPACTION__LEASE_SECONDS": "1",
                     "ZEEK_PIPELINE_LOG__PATH": str(lake.workdir / "log"), **kill_at})
    return subprocess.Popen([str(ZEEK), "compact", "--output", lake.base, "--config", str(CONFIG),
                             "--min-quiet-seconds", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(process: subprocess.Popen[bytes]) -> dict[str, object]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"exit {process.returncode}\n{err.decode()[-3000:]}"
    summary: dict[str, object] = orjson.loads(out.splitlines()[-1])
    return summary


def until_settled(lake: Lake) -> dict[str, object]:
    """Runs again until no hour is held by a dead run's claim (its lease is 1 s here)."""
    def run() -> dict[str, object] | None:
        summary = finished(compact(lake))
        return summary if summary["hours_skipped_busy"] == 0 else None
    result: dict[str, object] = wait_for("a run that finds no live claim", run, timeout=120, interval=0.5)
    return result


def published(lake: Lake) -> list[str]:
    return [p for p in lake.all_paths() if p.endswith(".parquet") and not p.startswith("_")]


def column_types(lake: Lake) -> set[tuple[str, str]]:
    """(log type, schema without metadata) of every visible file, read with pyarrow."""
    fs, root = lake._fs_and_root()
    return {(p.split("/")[0], pq.read_schema(f"{root}/{p}", filesystem=fs).remove_metadata().to_string())
            for p in published(lake)}


def duckdb_rows(lake: Lake) -> int:
    if lake.filesystem is None:
        return int(duckdb.sql(f"select count(*) from read_parquet('{lake.base}/**/*.parquet', "
                              "union_by_name=true)").fetchall()[0][0])
    # DuckDB over the S3 objects, read through pyarrow (no httpfs extension here)
    return int(duckdb.from_arrow(lake.dataset()).aggregate("count(*)").fetchall()[0][0])


def assert_nothing_missing(lake: Lake, expected: set[Coordinate]) -> None:
    seen = set(lake.coordinates())
    assert expected <= seen, f"{len(expected - seen)} rows not visible, e.g. {sorted(expected - seen)[:5]}"


def assert_exactly_once_and_compacted(lake: Lake, written: Written, types: set[tuple[str, str]]) -> None:
    counts = Counter(lake.coordinates())
    twice = [c for c, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} rows twice, e.g. {twice[:5]}"
    assert set(counts) == written.expected
    assert duckdb_rows(lake) == len(written.expected)
    assert column_types(lake) == types
    assert len(published(lake)) < len(published(written.lake)) // 3, published(lake)
    leftovers = [p for p in lake.all_paths() if p.startswith("_zeek_compaction/") and p.endswith(".tmp")]
    assert not leftovers, leftovers


def test_compact_merges_the_writers_lake(written: Written, tmp_path: Path) -> None:
    lake = copy_of(written, tmp_path)
    types = column_types(lake)
    before = len(published(lake))
    first = finished(compact(lake))
    assert first["hours_compacted"] and first["errors"] == [] and first["rows"]
    assert int(first["files_before"]) - int(first["files_after"]) == before - len(published(lake))  # type: ignore[call-overload]
    assert finished(compact(lake))["hours_compacted"] == 0  # a second run finds nothing left to merge
    assert_exactly_once_and_compacted(lake, written, types)
    assert before > 30


@pytest.mark.parametrize("step", sorted(STEPS))
def test_sigkill_at_each_step_loses_and_repeats_nothing(written: Written, tmp_path: Path, step: str) -> None:
    lake = copy_of(written, tmp_path)
    types = column_types(lake)
    killed = compact(lake, failpoint=step)
    killed.communicate(timeout=300)
    assert killed.returncode == -9, f"the failpoint {step} was not reached (exit {killed.returncode})"
    assert_nothing_missing(lake, written.expected)
    until_settled(lake)
    assert_exactly_once_and_compacted(lake, written, types)


def test_sigkill_at_random_moments(written: Written, tmp_path: Path) -> None:
    lake = copy_of(written, tmp_path)
    types = column_types(lake)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    kills = 0
    for _ in range(5):
        process = compact(lake)
        time.sleep(rng.uniform(0.2, 2.5))  # a random moment, start-up included
        if process.poll() is None:
            process.kill()
            kills += 1
        process.communicate(timeout=300)
        assert_nothing_missing(lake, written.expected)
    until_settled(lake)
    assert_exactly_once_and_compacted(lake, written, types)
    print(f"seed {seed}: {kills} kills")  # noqa: T201


def test_two_runs_at_once_merge_each_hour_once(written: Written, tmp_path: Path) -> None:
    """A CronJob run overlapping a manual one: each hour is claimed by one of them, the other skips it."""
    lake = copy_of(written, tmp_path)
    types = column_types(lake)
    first, second = compact(lake), compact(lake)
    summaries = [finished(first), finished(second)]
    assert sum(int(s["hours_compacted"]) for s in summaries) >= 1  # type: ignore[call-overload]
    until_settled(lake)
    assert_exactly_once_and_compacted(lake, written, types)
