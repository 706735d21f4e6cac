"""The real broker fixture: round-trips real Zeek records, and never outlives a failing test session."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from tests.infra import topics
from tests.infra.zeek_data import PROJECT_ROOT, json_logs, read_lines

pytestmark = pytest.mark.integration


def real_zeek_lines(count: int) -> list[bytes]:
    """`count` real records, round-robin over every log type so the mix is realistic."""
    streams = [read_lines(path) for path in json_logs()]
    lines: list[bytes] = []
    for line in itertools.chain.from_iterable(itertools.zip_longest(*streams)):
        if line is not None:
            lines.append(line)
            if len(lines) == count:
                break
    return lines


def test_ten_thousand_real_records_round_trip_byte_equal(kafka_bootstrap: str) -> None:
    lines = real_zeek_lines(10_000)
    assert len(lines) == 10_000
    topic = topics.create_topic(kafka_bootstrap, topics.unique_name("roundtrip"), partitions=4)
    keys = [str(i).encode() for i in range(len(lines))]

    topics.produce(kafka_bootstrap, topic, lines, keys=keys)
    records = topics.consume_all(kafka_bootstrap, topic, expected=len(lines))

    assert len(records) == len(lines)
    by_key = {r.key: r.value for r in records}
    assert [by_key[k] for k in keys] == lines
    # The keys hash across all four partitions.
    assert set(Counter(r.partition for r in records)) == {0, 1, 2, 3}
    assert topics.end_offsets(kafka_bootstrap, topic) == dict(Counter(r.partition for r in records))


def test_committed_offsets_are_read_back(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    topic = topics.create_topic(kafka_bootstrap, topics.unique_name("commits"), partitions=2)
    topics.produce(kafka_bootstrap, topic, [b"a", b"b", b"c"], partition=1)
    group = topics.unique_name("group")
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
    consumer.close()

    assert topics.committed_offsets(kafka_bootstrap, group, topic) == {0: -1001, 1: 2}


def _kafka_pids(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout
    return [int(pid) for pid in out.split()]


@pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP")), reason="uses the project's own broker fixture")
def test_broker_fixture_survives_a_failing_test_and_leaves_no_process(tmp_path: Path) -> None:
    """Run a tiny pytest session whose test fails (and one that dies by exception) on the real fixture."""
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent("""
        from tests.infra import topics

        def test_fails_after_using_the_broker(kafka_bootstrap):
            topics.create_topic(kafka_bootstrap, "inner-topic")
            assert False, "deliberate failure"

        def test_runs_after_the_failure(kafka_bootstrap):
            assert topics.create_topic(kafka_bootstrap, "inner-topic-2") == "inner-topic-2"
    """))
    (tmp_path / "conftest.py").write_text("from tests.conftest import kafka_bootstrap, kafka_broker  # noqa: F401\n")
    basetemp = tmp_path / "inner-tmp"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(inner), "-p", "no:cacheprovider", "-q", "--basetemp", str(basetemp),
         "--rootdir", str(PROJECT_ROOT), "-c", str(PROJECT_ROOT / "pyproject.toml")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "deliberate failure" in result.stdout
    assert _kafka_pids(str(basetemp)) == [], "a broker process outlived its test session"
