"""Committed offsets are read without AdminClient.list_consumer_group_offsets, by the health service and the
operator's autoscaler alike: that call can crash librdkafka on NOT_COORDINATOR (librdkafka#5040)."""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

import pytest
from confluent_kafka.admin import AdminClient

from tests.infra.topics import create_topic, produce, set_group_offsets
from zeek_operator.autoscale import LagReader
from zeek_pipeline.health.lag import GroupSpec, LagMonitor

pytestmark = pytest.mark.integration


@pytest.fixture
def no_list_consumer_group_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tripwire on the dangerous call: any use fails the test (the broker itself stays real)."""
    def forbidden(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise AssertionError("AdminClient.list_consumer_group_offsets called (librdkafka#5040)")

    monkeypatch.setattr(AdminClient, "list_consumer_group_offsets", forbidden)


@pytest.mark.usefixtures("no_list_consumer_group_offsets")
def test_operator_and_health_read_the_same_lag_without_the_crashing_admin_call(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, f"offsets-{uuid.uuid4().hex[:8]}", partitions=2)
    for partition in range(2):
        produce(kafka_bootstrap, topic, [b"x"] * 40, partition=partition)
    group = f"g-{uuid.uuid4().hex[:8]}"
    set_group_offsets(kafka_bootstrap, group, topic, {0: 10, 1: 40})

    reader = LagReader({"bootstrap.servers": kafka_bootstrap})
    try:
        lag = reader.read(group, topic)
    finally:
        reader.close()
    assert (lag.lag, lag.per_partition) == (30, {0: 30, 1: 0})

    monitor = LagMonitor({"bootstrap.servers": kafka_bootstrap}, [GroupSpec(group, topic, "normalizer-enricher")])
    try:
        snapshot = monitor.refresh()
    finally:
        monitor.close()
    (view,) = snapshot.lag.groups[0].topics
    assert view.lag == lag.lag
    assert {row.partition: row.committed for row in view.partitions} == {0: 10, 1: 40}
