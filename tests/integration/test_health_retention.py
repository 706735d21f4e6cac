"""The status channel against the real broker: a clean exit tombstones the instance's key, and the health
service's reader forgets it and a dead pod's stale record, both while running and when it reloads the topic."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.infra import topics
from tests.integration.test_health_kafka import runtime, status_channel, wait_until
from zeek_pipeline.health.retention import Retention
from zeek_pipeline.health.status_reader import StatusReader, StatusSnapshot
from zeek_pipeline.kafka import config as kafka_config

pytestmark = pytest.mark.integration

RETENTION = Retention(forget_after_seconds=3600)


def test_a_clean_exit_and_a_long_dead_pod_leave_nothing_in_the_health_view(kafka_bootstrap: str,
                                                                            tmp_path: Path) -> None:
    # One partition: the marker below is read after everything produced before it.
    status_topic, settings = status_channel(kafka_bootstrap, tmp_path, partitions=1)
    live = runtime(settings, "parquet-writer", "w-live")
    leaving = runtime(settings, "normalizer-enricher", "n-leaving")
    dead = leaving.status_record().model_copy(update={"instance": "n-dead", "heartbeat_at": time.time() - 7200})
    topics.produce(kafka_bootstrap, status_topic, [orjson.dumps(dead.model_dump())], keys=[dead.key.encode()])

    reader = StatusReader(kafka_config.common(settings), status_topic, retention=RETENTION)
    reader.start()
    try:
        wait_until(lambda: "normalizer-enricher/n-leaving" in reader.snapshot().records, 30,
                   "the reader to see the instance that will leave")
        leaving.close()  # "stopped", then the tombstone
        live.metrics.add("consumed", 7)
        live.publish_status()  # the marker: once it is read, so is everything before it

        def marker_read() -> StatusSnapshot | None:
            snap = reader.snapshot()
            item = snap.records.get("parquet-writer/w-live")
            return snap if item is not None and item.record.totals.get("consumed") == 7 else None

        assert set(wait_until(marker_read, 30, "the marker record").records) == {"parquet-writer/w-live"}
    finally:
        reader.stop()
        live.close()

    # What the topic holds for the leaving instance ends with its tombstone.
    messages = [m for m in topics.consume_all(kafka_bootstrap, status_topic, isolation="read_uncommitted")
                if m.key == b"normalizer-enricher/n-leaving"]
    assert [orjson.loads(m.value)["state"] for m in messages[:-1] if m.value is not None][-1] == "stopped"
    assert messages[-1].value is None

    # A health replica started now rebuilds the same view from the topic: nothing of the two is kept.
    fresh = StatusReader(kafka_config.common(settings), status_topic, retention=RETENTION)
    fresh.start()
    try:
        snap = wait_until(lambda: (s := fresh.snapshot()).loaded and s, 30, "the fresh reader to load the topic")
        assert snap.records == {} and snap.malformed == 0  # w-live exited cleanly too
        assert snap.records_read == len(topics.consume_all(kafka_bootstrap, status_topic,
                                                           isolation="read_uncommitted"))
    finally:
        fresh.stop()
