"""Each flush condition triggers alone (size, time, count); 0 disables it. The real writer on the real broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.infra import topics
from tests.integration.test_writer_support import Lake, last_data_offsets, produce_transactional, running
from tests.unit.test_writer_support import documents

pytestmark = pytest.mark.integration


def only(size_mb: float = 0, seconds: float = 0, count: int = 0) -> dict[str, str]:
    return {"ZEEK_PIPELINE_WRITE__FLUSH_BUFFER_MB": str(size_mb),
            "ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS": str(seconds),
            "ZEEK_PIPELINE_WRITE__FLUSH_EVENT_COUNT": str(count)}


def flush_reasons(status: dict[str, Any]) -> dict[str, int]:
    return dict(status["extra"]["flush_reasons"])


def flushes(lake: Lake) -> list[dict[str, Any]]:
    """The commit records of partition 0 that commit a flush, oldest first (few enough that none was pruned);
    takeover records (written when the writer takes the partition over, `flushed` null) are left out."""
    directory = Path(lake.base) / "_zeek_commits" / lake.topic / "p0"
    records = [orjson.loads(path.read_bytes()) for path in sorted(directory.glob("*.json"))]
    return [record for record in records if record["flushed"] is not None]


def rows(flush: dict[str, Any]) -> int:
    return sum(f["rows"] for f in flush["files"]) + flush["dead_lettered"]


def wait_for(condition, timeout: float, service, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.process.poll() is None, service.tail()
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout}s\n{service.tail()}")


@pytest.fixture
def lake(kafka_bootstrap: str, tmp_path: Path) -> Lake:
    return Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"), partitions=1).create()


def test_count_alone_flushes_every_n_records_and_nothing_else(lake: Lake) -> None:
    docs = documents("dns", 3500)
    with running(lake):
        writer = lake.start(**only(count=1000))
        writer.wait_assigned(1)
        produce_transactional(lake.bootstrap, lake.topic, docs, batch=500)
        wait_for(lambda: flush_reasons(writer.status()).get("count") == 3, 60, writer, "3 count flushes")
        time.sleep(3)  # size and time are off: the last 500 records stay buffered
        status = writer.status()
        assert flush_reasons(status) == {"count": 3}
        assert status["extra"]["buffered_records"] == 500
        assert [rows(f) for f in flushes(lake)] == [1000, 1000, 1000]
        assert writer.terminate() == 0  # a clean stop writes the rest
    last = last_data_offsets(lake.bootstrap, lake.topic, len(docs))
    assert lake.resume_offsets()[0] == last[0] + 1
    assert len(lake.coordinates()) == 3500


def test_time_alone_flushes_a_buffer_once_its_oldest_record_is_that_old(lake: Lake) -> None:
    docs = documents("ssl", 300)
    with running(lake):
        writer = lake.start(**only(seconds=2))
        writer.wait_assigned(1)
        produced = time.monotonic()
        produce_transactional(lake.bootstrap, lake.topic, docs, batch=300)
        wait_for(lambda: flush_reasons(writer.status()).get("time") == 1, 30, writer, "a time flush")
        assert time.monotonic() - produced >= 2.0
        status = writer.status()
        assert flush_reasons(status) == {"time": 1} and status["extra"]["buffered_records"] == 0
        assert [rows(f) for f in flushes(lake)] == [300]
        assert writer.terminate() == 0
    assert len(lake.coordinates()) == 300


def test_size_alone_flushes_when_the_buffer_reaches_the_size(lake: Lake) -> None:
    docs = documents("dns", 2000)
    limit = 0.25 * 1024 * 1024
    with running(lake):
        writer = lake.start(**only(size_mb=0.25))
        writer.wait_assigned(1)
        produce_transactional(lake.bootstrap, lake.topic, docs, batch=2000)
        expected = int(sum(len(d) for d in docs) // limit)
        wait_for(lambda: flush_reasons(writer.status()).get("size", 0) >= expected - 1, 60, writer, "size flushes")
        time.sleep(3)
        status = writer.status()
        assert set(flush_reasons(status)) == {"size"}
        assert 0 < status["extra"]["buffered_records"] < 300  # the tail below the size stays buffered
        sizes = {r.offset: len(r.value or b"") for r in topics.consume_all(lake.bootstrap, lake.topic, len(docs))}
        for flush in flushes(lake):
            _log_type, first, last = flush["flushed"]
            flushed = sum(size for offset, size in sizes.items() if first <= offset <= last)
            assert limit <= flushed < limit + max(sizes.values())
        assert writer.terminate() == 0
    assert len(lake.coordinates()) == 2000
