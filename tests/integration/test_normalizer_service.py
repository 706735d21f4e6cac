"""The normalizer-enricher as a real subprocess against the real broker, on every shared real Zeek log."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.infra import topics
from tests.infra.zeek_data import json_logs, read_lines, tsv_logs
from tests.integration.test_normalizer_support import (
    CONFIG,
    ZEEK,
    Pipeline,
    assert_exactly_once,
    coordinate,
    open_transaction_partitions,
    running,
)

pytestmark = pytest.mark.integration

MAX_MESSAGE_BYTES = 256 * 1024  # the huge record stays under the test producer's 1 MB limit


def normalize_offline(paths: list[Path], workdir: Path) -> list[bytes]:
    """What `zeek-pipeline normalize` gives for each file, in file order."""
    documents: list[bytes] = []
    for index, path in enumerate(paths):
        out = workdir / f"normalized-{index}.ndjson"
        result = subprocess.run([str(ZEEK), "normalize", "--config", str(CONFIG), "--input", str(path),
                                 "--output", str(out)], capture_output=True, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stderr == b"", f"{path}: rejects {result.stderr[:500]!r}"
        documents.extend(out.read_bytes().splitlines())
    return documents


def without_ingest_time(document: bytes) -> dict[str, object]:
    data = orjson.loads(document)
    data["normalized"].pop("ingest_time")
    return data  # type: ignore[no-any-return]


def malformed_records() -> dict[str, bytes]:
    """reason -> a record that must be dead-lettered, derived from real records where one is needed."""
    dns = next(read_lines(next(p for p in json_logs() if p.name.startswith("dns"))))
    record = orjson.loads(dns)
    huge = dict(record, query="a" * (MAX_MESSAGE_BYTES + 1000))
    bad_ts = dict(record, ts="yesterday")
    return {
        "invalid_json": dns[:-7],
        "invalid_utf8": dns.replace(b'"dns"', b'"dns\xff"', 1),
        "not_an_object": b"[" + dns + b"]",
        "several_tags": orjson.dumps({"dns": record, "conn": record}),
        "too_large": orjson.dumps(huge),
        "invalid_time": orjson.dumps(bad_ts),
        "empty": b"",
    }


def test_every_real_log_type_comes_out_once_equal_to_offline_normalize(kafka_bootstrap: str, tmp_path: Path) -> None:
    files = json_logs() + tsv_logs()
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=1, name="all").create()
    with running(pipe):
        pipe.publish(files)
        real_count = pipe.input_total()
        bad = malformed_records()
        topics.produce(kafka_bootstrap, pipe.input, list(bad.values()), partition=0)
        service = pipe.start(ZEEK_PIPELINE_NORMALIZER__MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES))
        expected_docs = normalize_offline(files, tmp_path)
        assert len(expected_docs) == real_count
        pipe.wait_all_committed(timeout=180, alive=service)
        status = service.status()
        assert service.terminate() == 0, service.tail()

    outputs, letters = assert_exactly_once(pipe)
    # What the dashboard shows per log type: every record counted once, in its type, after its commit.
    flows: dict[str, dict[str, int]] = status["log_types"]  # type: ignore[assignment]
    out_by_type = Counter(str(orjson.loads(r.value or b"{}")["log_type"]) for r in outputs)
    assert {t: row.get("out", 0) for t, row in flows.items() if row.get("out")} == dict(out_by_type)
    assert sum(row.get("in", 0) for row in flows.values()) == real_count + len(bad)
    assert sum(row.get("rejected", 0) for row in flows.values()) == len(bad)
    assert flows["dns"].get("rejected") == 1  # invalid_time: the type was read before the time was refused
    recent: list[dict[str, str]] = status["recent_rejects"]  # type: ignore[assignment]
    previews = {r["reason"]: r["preview"] for r in recent}
    assert "\\xff" in previews["invalid_utf8"] and previews["empty"] == ""
    assert all(len(text) <= 170 and text.isprintable() for text in previews.values())
    assert len(outputs) == real_count and len(letters) == len(bad)
    by_offset = {coordinate(record)[2]: record for record in outputs}
    log_types = set()
    for offset, expected in enumerate(expected_docs):
        record = by_offset[offset]
        got = without_ingest_time(record.value or b"")
        assert got == without_ingest_time(expected), f"input offset {offset} differs"
        log_types.add(got["log_type"])
        assert record.headers["log_type"] == str(got["log_type"]).encode()
        flow_id = got["normalized"].get("flow_id")  # type: ignore[attr-defined]
        if isinstance(flow_id, str):
            assert record.key == flow_id.encode()
    assert len(log_types) >= 35  # every type of the shared corpus (32 WRCCDC + conn, http, files)

    first_bad = real_count
    for index, (reason, original) in enumerate(bad.items()):
        [letter] = [r for r in letters if coordinate(r)[2] == first_bad + index]
        assert letter.headers["error.reason"] == reason.encode()
        assert letter.headers["error.detail"]
        assert letter.headers["source.topic"] == pipe.input.encode()
        assert int(letter.headers["source.timestamp"]) > 0
        assert (letter.value or b"") == original  # the original bytes, the huge one included
    assert open_transaction_partitions(kafka_bootstrap, pipe.output, pipe.dlq) == []
