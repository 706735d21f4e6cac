"""Fault injection on the real writer: SIGKILL at random moments while 100k+ real records flow (local disk
and S3), a disk that fills up mid-stream, and two instances sharing one group."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.infra import s3_fixtures
from tests.infra.s3 import S3Server
from tests.integration.test_normalizer_support import Service
from tests.integration.test_writer_support import (
    Feeder,
    Lake,
    OnOffProxy,
    assert_exactly_once,
    last_data_offsets,
    produce_transactional,
    running,
    topic_coordinates,
)
from tests.unit.test_writer_support import documents, interleave

pytestmark = [pytest.mark.integration, pytest.mark.slow]

s3_server = s3_fixtures.s3_server

# Small, frequent flushes keep the flusher busy, so that kills land inside the commit protocol too.
BUSY = {"ZEEK_PIPELINE_WRITE__FLUSH_EVENT_COUNT": "250", "ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS": "0.5",
        "ZEEK_PIPELINE_WRITE__FLUSH_BUFFER_MB": "0"}


def real_stream(total: int) -> list[bytes]:
    """`total` real normalized records, log types mixed as on a real sensor (dns, ssl, weird, analyzer...)."""
    docs = interleave(documents("dns"), documents("ssl"), documents("weird"), documents("analyzer"),
                      documents("rdp"), documents("syslog"), documents("known_services"))
    assert len(docs) >= total
    return docs[:total]


def readyz(service: Service) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/readyz", timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def kill_at_random_moments(lake: Lake, feeder: Feeder, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    progressed = mid_commit = rounds = 0
    # At least `kills` kills, and more (up to 3x) until two of them came after progress: on a starved machine
    # a writer killed 1-4 s after its start may not have committed yet, which would leave the test toothless.
    while rounds < kills or (progressed < 2 and rounds < 3 * kills):
        round_no, rounds = rounds, rounds + 1
        before = sum(lake.resume_offsets().values())
        writer = lake.start(f"writer-{round_no}", **BUSY)
        if round_no % 3 == 0:
            time.sleep(rng.uniform(0.5, 4.0))  # at a random moment, start-up and recovery included
        else:
            writer.wait_assigned(lake.partitions, timeout=60)
            deadline = time.monotonic() + rng.uniform(1.0, 4.0)
            while time.monotonic() < deadline and not (round_no % 3 == 2 and lake.staged_files()):
                time.sleep(0.002)  # every third kill lands while a flush has files in staging, if it can
        assert writer.process.poll() is None, writer.tail()
        writer.kill()  # SIGKILL
        mid_commit += lake.staged_files() > 0
        lake.assert_reader_view_clean()  # whatever a reader lists now is final and complete
        progressed += sum(lake.resume_offsets().values()) > before
    feeder.finish()
    assert progressed >= 2, f"seed {seed}: the writer hardly ever wrote anything before it was killed"
    logs = (lake.workdir / "log" / "parquet-writer.log").read_text(errors="replace")
    sys.stderr.write(f"seed {seed}: {rounds} kills, {progressed} after progress, {mid_commit} with files in "
                     f"staging; recovery rolled forward {logs.count('rolling forward')} and back "
                     f"{logs.count('rolling back')} files\n")


def finish_and_check(lake: Lake, total: int) -> None:
    last = last_data_offsets(lake.bootstrap, lake.topic, total)
    writer = lake.start("writer-final", **BUSY)
    writer.wait_assigned(lake.partitions, timeout=60)  # it recovered every partition (and handles SIGTERM now)
    lake.wait_written(last, timeout=150, alive=writer)
    assert writer.terminate() == 0, writer.tail()
    assert_exactly_once(lake, topic_coordinates(lake.bootstrap, lake.topic, total))
    assert lake.assert_reader_view_clean() > 0


def test_sigkill_at_random_moments_writes_each_record_exactly_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    total = 110_000
    seed = random.randrange(1 << 30)
    lake = Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake")).create()
    with running(lake):
        feeder = Feeder(kafka_bootstrap, lake.topic, real_stream(total), lake.partitions, pause=0.5)
        feeder.start()
        kill_at_random_moments(lake, feeder, kills=6, seed=seed)
        finish_and_check(lake, total)


@pytest.mark.s3
def test_sigkill_at_random_moments_on_s3_writes_each_record_exactly_once(kafka_bootstrap: str, tmp_path: Path,
                                                                        s3_server: S3Server) -> None:
    total = 100_000
    seed = random.randrange(1 << 30)
    lake = s3_lake(kafka_bootstrap, tmp_path, s3_server)
    with running(lake):
        feeder = Feeder(kafka_bootstrap, lake.topic, real_stream(total), lake.partitions, pause=0.5)
        feeder.start()
        kill_at_random_moments(lake, feeder, kills=6, seed=seed)
        finish_and_check(lake, total)


def s3_lake(kafka_bootstrap: str, tmp_path: Path, s3_server: S3Server, endpoint: str | None = None) -> Lake:
    bucket = s3_server.create_bucket(f"lake-{uuid.uuid4().hex[:12]}")
    s3_env = {"ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ENDPOINT": endpoint or s3_server.endpoint,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__REGION": s3_server.region,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ACCESS_KEY": s3_server.access_key,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY": s3_server.secret_key,
              "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SCHEME": "http"}
    return Lake(kafka_bootstrap, tmp_path, f"s3://{bucket}/zeek", s3_env=s3_env,
                filesystem=s3_server.filesystem()).create()


@pytest.mark.s3
def test_an_unreachable_s3_pauses_the_writer_and_it_resumes_when_s3_is_back(kafka_bootstrap: str, tmp_path: Path,
                                                                           s3_server: S3Server) -> None:
    total = 30_000
    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    proxy = OnOffProxy(host, int(port))
    lake = s3_lake(kafka_bootstrap, tmp_path, s3_server, endpoint=f"http://127.0.0.1:{proxy.port}")
    try:
        with running(lake):
            writer = lake.start(**BUSY)
            writer.wait_assigned(lake.partitions)
            proxy.off()  # S3 goes away while records arrive
            produce_transactional(kafka_bootstrap, lake.topic, real_stream(total), partitions=lake.partitions)
            wait_until(lambda: readyz(writer)[0] == 503 and "output unavailable" in readyz(writer)[1], 120,
                       writer, "not-ready with 'output unavailable'")
            status = writer.status()
            assert status["state"] == "degraded" and status["extra"]["paused"] is True
            consumed = status["totals"]["consumed"]
            time.sleep(3)
            assert writer.status()["totals"]["consumed"] == consumed  # paused: takes nothing more
            assert writer.process.poll() is None
            proxy.on()
            wait_until(lambda: readyz(writer)[0] == 200, 120, writer, "ready again")
            lake.wait_written(last_data_offsets(kafka_bootstrap, lake.topic, total), timeout=120, alive=writer)
            assert writer.terminate() == 0, writer.tail()
        assert_exactly_once(lake, topic_coordinates(kafka_bootstrap, lake.topic, total))
    finally:
        proxy.off()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root/CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def wait_until(predicate, timeout: float, service: Service, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.process.poll() is None, service.tail()
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout}s\n{service.tail()}")


def test_a_full_disk_pauses_the_writer_and_it_resumes_when_space_returns(kafka_bootstrap: str,
                                                                         tmp_path: Path) -> None:
    before, during = 40_000, 20_000
    docs = real_stream(before + during)
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        lake = Lake(kafka_bootstrap, tmp_path, str(disk / "lake")).create()
        with running(lake):
            produce_transactional(kafka_bootstrap, lake.topic, docs[:before], partitions=lake.partitions)
            writer = lake.start(ZEEK_PIPELINE_OUTPUT__PARQUET__COMPRESSION="none", **BUSY)
            wait_until(lambda: readyz(writer)[0] == 503 and "disk full" in readyz(writer)[1], 90, writer,
                       "not-ready with 'disk full'")
            status = writer.status()
            assert status["state"] == "degraded" and status["extra"]["paused"] is True
            assert status["extra"]["pending_flushes"] >= 1
            consumed, held = status["totals"]["consumed"], status["extra"]["buffered_records"]
            produce_transactional(kafka_bootstrap, lake.topic, docs[before:], partitions=lake.partitions)
            time.sleep(4)  # records keep arriving; a paused writer takes none of them and drops nothing
            later = writer.status()
            assert later["totals"]["consumed"] == consumed and later["extra"]["buffered_records"] == held
            assert readyz(writer)[0] == 503
            lake.assert_reader_view_clean()  # no partial file became visible when the disk ran out

            subprocess.run(["mount", "-o", "remount,size=512m", str(disk)], check=True)  # space returns
            wait_until(lambda: readyz(writer)[0] == 200, 90, writer, "ready again")
            last = last_data_offsets(kafka_bootstrap, lake.topic, before + during)
            lake.wait_written(last, timeout=120, alive=writer)
            assert writer.status()["state"] == "ok"
            assert writer.terminate() == 0, writer.tail()
        assert_exactly_once(lake, topic_coordinates(kafka_bootstrap, lake.topic, before + during))


def test_two_instances_in_one_group_share_partitions_without_collisions(kafka_bootstrap: str,
                                                                        tmp_path: Path) -> None:
    total = 60_000
    lake = Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"), partitions=4).create()
    with running(lake):
        feeder = Feeder(kafka_bootstrap, lake.topic, real_stream(total), lake.partitions, batch=2000, pause=0.6)
        feeder.start()
        first = lake.start("writer-a", **BUSY)
        first.wait_assigned(4)
        time.sleep(2)  # the first instance is writing when the second joins: a cooperative hand-over
        second = lake.start("writer-b", **BUSY)
        wait_until(lambda: len(first.assigned()) == 2 and len(second.assigned()) == 2, 90, second,
                   "partitions split 2 + 2")
        assert first.assigned().isdisjoint(second.assigned())
        feeder.finish()
        last = last_data_offsets(kafka_bootstrap, lake.topic, total)
        lake.wait_written(last, timeout=150, alive=second)
        authors = {p: lake.commit_record(p)["instance"] for p in range(4)}  # type: ignore[index]
        assert set(authors.values()) == {"writer-a", "writer-b"}
        assert {p for p, who in authors.items() if who == "writer-b"} == second.assigned()
        assert first.terminate() == 0 and second.terminate() == 0
    assert_exactly_once(lake, topic_coordinates(kafka_bootstrap, lake.topic, total))
    files = [p for p in lake.all_paths() if p.endswith(".parquet")]
    assert len(files) == len(set(files))
    for path in files:  # a file holds one partition's records, the one its name says
        partition = int(path.rsplit("_p", 1)[1].split("-", 1)[0])
        column = pq.read_table(Path(lake.base) / path, columns=["_kafka_partition"]).column(0)
        assert set(column.to_pylist()) == {partition}, path
