"""The writer as a service: dead letters with reasons, probes, metrics, status records, health line, exit codes."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from tests.infra import topics
from tests.integration.test_writer_support import (
    Lake,
    assert_exactly_once,
    last_data_offsets,
    produce_transactional,
    running,
    topic_coordinates,
)
from tests.unit.test_writer_support import documents, interleave

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_untypable_records_go_to_the_dlq_with_reasons_and_the_rest_is_written(kafka_bootstrap: str,
                                                                             tmp_path: Path) -> None:
    good = interleave(documents("dns", 3000), documents("ssl", 1500), documents("weird", 500))
    bad_count = orjson.loads(good[0])
    bad_count["raw"]["trans_id"] = "not a count"
    bad = {
        "untypable_value": orjson.dumps(bad_count),
        "invalid_document": good[3][:-20],  # routed by its prefix, then refused by the typed reader
        "invalid_json": b"{not json at all",
        "invalid_log_type": b'{"source":"zeek","log_type":"../../etc","raw":{}}',
        "empty": b"",
    }
    stream = good[:1000] + list(bad.values()) + good[1000:]
    lake = Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"), partitions=1).create()
    with running(lake):
        produce_transactional(kafka_bootstrap, lake.topic, stream)
        writer = lake.start(ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS="1")
        lake.wait_written(last_data_offsets(kafka_bootstrap, lake.topic, len(stream)), alive=writer)
        deadline = time.monotonic() + 10
        while writer.status()["totals"]["rejected"] < len(bad) and time.monotonic() < deadline:
            time.sleep(0.2)  # the status follows the commit log by a loop iteration
        status = writer.status()
        assert status["totals"]["rejected"] == len(bad)
        assert status["reject_reasons"] == dict.fromkeys(bad, 1)
        assert writer.terminate() == 0, writer.tail()

    letters = topics.consume_all(kafka_bootstrap, lake.dlq, expected=len(bad), timeout=30)
    assert sorted(r.headers["error.reason"].decode() for r in letters) == sorted(bad)
    by_reason = {r.headers["error.reason"].decode(): r for r in letters}
    for reason, original in bad.items():
        letter = by_reason[reason]
        assert (letter.value or b"") == original  # the original bytes, untouched
        assert letter.headers["source.topic"] == lake.topic.encode()
        assert letter.headers["error.detail"] and letter.headers["error.component"] == b"parquet-writer"
    assert by_reason["untypable_value"].headers["log_type"] == b"dns"
    dead = {(0, int(r.headers["source.offset"])) for r in letters}
    assert_exactly_once(lake, topic_coordinates(kafka_bootstrap, lake.topic, len(stream)), dead)


def test_probes_metrics_status_records_and_health_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    lake = Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake"), partitions=2).create()
    with running(lake):
        writer = lake.start(ZEEK_PIPELINE_WRITE__FLUSH_EVENT_COUNT="500",
                            ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS="2")
        writer.wait_assigned(2)
        assert get(writer.port, "/healthz")[0] == 200
        assert get(writer.port, "/readyz") == (200, b"ready\n")
        produce_transactional(kafka_bootstrap, lake.topic, documents("dns", 2000), partitions=2)
        lake.wait_written(last_data_offsets(kafka_bootstrap, lake.topic, 2000), alive=writer)
        time.sleep(1)
        code, metrics = get(writer.port, "/metrics")
        text = metrics.decode()
        assert code == 200
        for name in ("zeek_pipeline_consumed_total", "zeek_pipeline_flushes_total", "zeek_pipeline_files_total",
                     "zeek_pipeline_bytes_written_total", "zeek_pipeline_buffer_usage_ratio"):
            assert f'{name}{{component="parquet-writer"}}' in text, name
        assert 'zeek_pipeline_consumed_total{component="parquet-writer"} 2000.0' in text
        status = writer.status()
        assert status["component"] == "parquet-writer" and status["state"] == "ok"
        assert status["recent_files"] and status["recent_files"][0]["path"].endswith(".parquet")
        assert status["buffer_pct"] is not None
        assert writer.terminate() == 0

    published = topics.consume_all(kafka_bootstrap, lake.status, timeout=20)
    messages = [r for r in published if r.key == b"parquet-writer/writer-0"]
    mine = [orjson.loads(r.value) for r in messages if r.value is not None]
    assert mine and mine[-1]["state"] == "stopped" and mine[-1]["totals"]["files"] >= 4
    assert messages[-1].value is None  # a clean exit ends with a tombstone for the instance's key
    log = (tmp_path / "log" / "parquet-writer.log").read_text()
    health = [line for line in log.splitlines() if "| health |" in line]
    assert health and "buffer=" in health[-1] and "flushes=" in health[-1] and "files=" in health[-1]
    files = list(Path(lake.base).rglob("*.parquet"))
    meta = pq.read_metadata(files[0]).metadata
    assert meta[b"zeek_pipeline.log_type"] == b"dns" and meta[b"zeek_pipeline.kafka_topic"] == lake.topic.encode()


def test_a_config_error_exits_2_naming_the_problem(kafka_bootstrap: str, tmp_path: Path) -> None:
    lake = Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake")).create()
    writer = lake.start(ZEEK_PIPELINE_WRITE__FLUSH_EVENT_COUNT="-5")
    assert writer.process.wait(60) == 2
    assert "flush_event_count" in writer.log.read_text()
