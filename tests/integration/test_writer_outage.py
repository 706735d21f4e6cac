"""A broker outage seen by the real writer: its state goes degraded once and stays so until the broker is
back (no flapping), its log gets a bounded number of warnings, and every record lands exactly once."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests.infra.kafka import KafkaBroker
from tests.integration.test_writer_faults import BUSY, real_stream
from tests.integration.test_writer_support import (
    Lake,
    assert_exactly_once,
    last_data_offsets,
    produce_transactional,
    running,
    topic_coordinates,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 20
MAX_WARNINGS = 30  # was ~500 for 20 s: a warning per refused connection


def state_changes(text: str) -> list[str]:
    """`state ok` / `state degraded` lines, in order (the runtime logs one per change)."""
    return re.findall(r"\| state (ok|degraded|stopping) \|", text)


def warnings(text: str) -> list[str]:
    """Warning and error lines: the service's own, librdkafka's through logging, and librdkafka's when it
    writes to stderr itself (`%3|...`)."""
    return [line for line in text.splitlines()
            if "| WARNING |" in line or "| ERROR |" in line or re.match(r"%[0-4]\|", line)]


def test_a_broker_outage_is_one_degraded_spell_with_bounded_warnings(tmp_path: Path) -> None:
    total = 20_000
    docs = real_stream(2 * total)
    with KafkaBroker(workdir=tmp_path / "kafka") as broker:  # its own broker: stopping it disturbs no other test
        lake = Lake(broker.bootstrap, tmp_path, str(tmp_path / "lake")).create()
        with running(lake):
            produce_transactional(broker.bootstrap, lake.topic, docs[:total], partitions=lake.partitions)
            writer = lake.start(**BUSY)
            writer.wait_assigned(lake.partitions)
            lake.wait_written(last_data_offsets(broker.bootstrap, lake.topic, total), alive=writer)
            before = writer.log.stat().st_size

            broker.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                assert writer.process.poll() is None, writer.tail()
                time.sleep(0.5)
            during = writer.log.read_bytes()[before:].decode(errors="replace")
            broker.start()

            produce_transactional(broker.bootstrap, lake.topic, docs[total:], partitions=lake.partitions)
            lake.wait_written(last_data_offsets(broker.bootstrap, lake.topic, 2 * total), timeout=150, alive=writer)
            deadline = time.monotonic() + 60
            while writer.status()["state"] != "ok":
                assert time.monotonic() < deadline, f"not ok again after the outage\n{writer.tail()}"
                time.sleep(0.5)
            after = writer.log.read_bytes()[before:].decode(errors="replace")
            assert writer.terminate() == 0, writer.tail()

        assert state_changes(during) == ["degraded"], state_changes(during)  # once, and never back while down
        assert state_changes(after)[:2] == ["degraded", "ok"], state_changes(after)
        found = warnings(during)
        assert len(found) <= MAX_WARNINGS, f"{len(found)} warnings in a {OUTAGE_SECONDS} s outage:\n" + "\n".join(
            found[:30])
        assert_exactly_once(lake, topic_coordinates(broker.bootstrap, lake.topic, 2 * total))
        table = lake.dataset().to_table(columns=["_kafka_offset", "event_time"])
        assert table.num_rows == 2 * total
        assert table.schema.field("_kafka_offset").type == pa.int64()
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
