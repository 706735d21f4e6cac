"""Lag-based autoscaling end to end: lag read from the real Kafka broker, decisions applied by the operator.

A raw topic is filled and a consumer group is given committed offsets at 0 without consuming, so the
lag is exactly what was produced. The operator (2 s timer) must scale the normalizer-enricher up, stop
at maxReplicas, then at the partition count, wait out the cooldown between changes, and scale down when
the lag is gone.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tests.e2e.test_operator_lifecycle import (
    Kubectl,
    OperatorProcess,
    apply,
    events,
    get,
    pipeline,
    running_operator,
    throwaway_namespace,
    unique,
)
from tests.infra.topics import create_topic, end_offsets, produce, set_group_offsets
from tests.infra.waiting import ok, wait_for
from zeek_operator.autoscale import LagError, LagReader

COOLDOWN = 6


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from throwaway_namespace(kubectl, "zp-scale")


@pytest.fixture(scope="module")
def operator(kube: Any, kubectl: Kubectl, namespace: str, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[OperatorProcess]:
    yield from running_operator(kube, kubectl, namespace, tmp_path_factory.mktemp("autoscale"))


def test_lag_reader_reads_committed_lag_from_the_broker(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, unique("lag"), partitions=3)
    for partition in range(3):
        produce(kafka_bootstrap, topic, [b"x"] * 100, partition=partition)
    group = unique("group")
    set_group_offsets(kafka_bootstrap, group, topic, {0: 0, 1: 50, 2: 100})
    reader = LagReader({"bootstrap.servers": kafka_bootstrap})
    lag = reader.read(group, topic)
    assert (lag.partitions, lag.lag, lag.per_partition) == (3, 150, {0: 100, 1: 50, 2: 0})
    # A group that never committed would start at the beginning: everything is lag.
    assert reader.read(unique("fresh"), topic).lag == 300
    with pytest.raises(LagError, match="missing|UNKNOWN"):
        reader.read(group, unique("no-such-topic"))


def scaling(kubectl: Kubectl, namespace: str, name: str, component: str) -> tuple[int, dict[str, Any]]:
    deployment = get(kubectl, "deployment", f"{name}-{component}", namespace)
    zp = get(kubectl, "zeekpipeline", name, namespace)
    entry = (((zp or {}).get("status") or {}).get("autoscaling") or {}).get(component) or {}
    return (deployment or {}).get("spec", {}).get("replicas", -1), entry


def stamp(entry: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(entry["lastScaleTime"].replace("Z", "+00:00")).timestamp()


def test_scales_on_lag_within_max_and_partitions_with_cooldown(
    kafka_bootstrap: str, kubectl: Kubectl, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    raw = create_topic(kafka_bootstrap, unique("raw"), partitions=4)
    normalized = create_topic(kafka_bootstrap, unique("normalized"), partitions=2)
    for partition in range(4):
        produce(kafka_bootstrap, raw, [b'{"conn": {}}'] * 1000, partition=partition)
    groups = {"normalizer": unique("norm"), "writer": unique("writer")}
    set_group_offsets(kafka_bootstrap, groups["normalizer"], raw, dict.fromkeys(range(4), 0))
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetLagPerReplica": 500,
                   "cooldownSeconds": COOLDOWN}
    spec = {
        "kafka": {"bootstrapServers": [kafka_bootstrap], "topics": {"raw": raw, "normalized": normalized},
                  "consumerGroups": groups},
        "normalizer": {"replicas": 1, "autoscaling": autoscaling},
        "writer": {"replicas": 1, "autoscaling": {**autoscaling, "maxReplicas": 8},
                   "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}},
    }
    name = unique("scale")
    apply(kubectl, pipeline(name, spec), namespace=namespace)
    reasons: list[str] = []

    def replicas_are(count: int) -> dict[str, Any] | None:
        replicas, entry = scaling(kubectl, namespace, name, "normalizer-enricher")
        if entry.get("reason"):
            reasons.append(entry["reason"])
        return entry if replicas == count and entry.get("desiredReplicas") == count else None

    # 4000 messages of lag / 500 per replica = 8 wanted, capped by maxReplicas 3.
    first = wait_for("scale up to maxReplicas", lambda: replicas_are(3), timeout=30)
    assert first["reason"].startswith("lag 4000, target 500/replica -> 8, capped by maxReplicas 3")
    assert (first["lag"], first["partitions"]) == (4000, 4)
    zp = get(kubectl, "zeekpipeline", name, namespace)
    assert zp is not None and zp["status"]["lag"] == {groups["normalizer"]: 4000, groups["writer"]: 0}
    assert zp["status"]["totalLag"] == 4000 and zp["status"]["lagError"] == ""
    assert ok(kubectl("get", "zp", name, "-n", namespace)).stdout.splitlines()[1].split()[4] == "4000"
    # No lag on the normalized topic: the writer stays at its minimum.
    writer_replicas, writer = scaling(kubectl, namespace, name, "parquet-writer")
    assert writer_replicas == 1 and writer["desiredReplicas"] == 1

    # A higher maxReplicas: now the 4 partitions cap it, after the cooldown since the last change.
    spec["normalizer"]["autoscaling"]["maxReplicas"] = 10
    apply(kubectl, pipeline(name, spec), namespace=namespace)
    second = wait_for("scale up to the partition count", lambda: replicas_are(4), timeout=30)
    assert "capped by 4 partitions" in second["reason"]
    assert stamp(second) - stamp(first) >= COOLDOWN
    assert any("cooling down" in reason and "would scale up to 4" in reason for reason in reasons), reasons

    # The group catches up (offsets committed at the end): lag 0 -> down to minReplicas after the cooldown.
    set_group_offsets(kafka_bootstrap, groups["normalizer"], raw, end_offsets(kafka_bootstrap, raw))
    third = wait_for("scale down to minReplicas", lambda: replicas_are(1), timeout=30)
    assert "scaling down from 4 to 1" in third["reason"]
    assert stamp(third) - stamp(second) >= COOLDOWN
    def scaled() -> list[str]:
        found = [e for e in events(kubectl, namespace, name) if e["reason"] in ("ScaledUp", "ScaledDown")]
        return [e["reason"] for e in sorted(found, key=lambda e: e["firstTimestamp"] or e["eventTime"])]

    wait_for("three scaling events", lambda: len(scaled()) >= 3)  # events are posted asynchronously
    assert scaled() == ["ScaledUp", "ScaledUp", "ScaledDown"]


def test_missing_topics_are_created_when_asked(
    kafka_bootstrap: str, kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    topics = {"raw": unique("raw"), "normalized": unique("norm"), "dlq": unique("dlq"), "status": unique("status")}
    spec = {"kafka": {"bootstrapServers": [kafka_bootstrap], "topics": topics,
                      "createTopics": {"enabled": True, "partitions": 3}}}
    name = unique("topics")
    apply(kubectl, pipeline(name, spec), namespace=namespace)
    zp = wait_for("topicsCreated in the status", lambda: (z := get(kubectl, "zeekpipeline", name, namespace))
                  and (z.get("status") or {}).get("topicsCreated") and z, timeout=30)
    assert sorted(zp["status"]["topicsCreated"]) == sorted(topics.values())
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    metadata = admin.list_topics(timeout=10).topics
    assert {t: len(metadata[t].partitions) for t in topics.values()} == {
        topics["raw"]: 3, topics["normalized"]: 3, topics["dlq"]: 3, topics["status"]: 1}
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, topics["status"])
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"
    wait_for("a TopicsCreated event", lambda: "TopicsCreated" in {
        e["reason"] for e in events(kubectl, namespace, name)})
    # From the next tick on the lag of the new (empty) topics is read.
    wait_for("lag of the created topics", lambda: ((get(kubectl, "zeekpipeline", name, namespace) or {})
                                                   .get("status") or {}).get("totalLag") == 0, timeout=30)


class SteadyInput:
    """Produces `rate` messages/s round-robin into a topic's partitions until stopped (a normalizer's output)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: int) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self._topic, self._partitions, self._rate = topic, partitions, rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sent, start = 0, time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self._rate)
            while sent < due:
                self._producer.produce(self._topic, b'{"conn": {}}', partition=sent % self._partitions)
                sent += 1
            self._producer.poll(0)
            time.sleep(0.02)
        self._producer.flush(10)

    def __enter__(self) -> SteadyInput:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_writer_scales_on_backlog_not_on_the_lag_its_flush_interval_explains(
    kafka_bootstrap: str, kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    """A writer that commits every flush interval keeps a lag of rate x interval: it must stay at minReplicas
    (it used to go to maxReplicas and stay there); once it stops committing (falls behind) it scales up."""
    raw = create_topic(kafka_bootstrap, unique("raw"), partitions=1)
    normalized = create_topic(kafka_bootstrap, unique("normalized"), partitions=4)
    groups = {"normalizer": unique("norm"), "writer": unique("writer")}
    interval, rate = 10, 100  # a keeping-up writer's lag reaches ~1000 = 2 x targetLagPerReplica
    spec = {
        "kafka": {"bootstrapServers": [kafka_bootstrap], "topics": {"raw": raw, "normalized": normalized},
                  "consumerGroups": groups},
        "writer": {"replicas": 1, "flush": {"intervalSeconds": interval},
                   "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetLagPerReplica": 500,
                                   "cooldownSeconds": 0},
                   "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}},
    }
    name = unique("wscale")
    set_group_offsets(kafka_bootstrap, groups["writer"], normalized, dict.fromkeys(range(4), 0))
    apply(kubectl, pipeline(name, spec), namespace=namespace)
    seen: list[dict[str, Any]] = []

    def writer_entry() -> tuple[int, dict[str, Any]]:
        replicas, entry = scaling(kubectl, namespace, name, "parquet-writer")
        if entry and (not seen or entry.get("sampleTime") != seen[-1].get("sampleTime")):
            seen.append(entry)
        return replicas, entry

    with SteadyInput(kafka_bootstrap, normalized, 4, rate):
        # Keeping up: commit everything every flush interval, as the writer does after each flush.
        deadline = time.monotonic() + 3 * interval + 5
        while time.monotonic() < deadline:
            set_group_offsets(kafka_bootstrap, groups["writer"], normalized, end_offsets(kafka_bootstrap, normalized))
            until = time.monotonic() + interval
            while time.monotonic() < until:
                replicas, entry = writer_entry()
                assert replicas in (1, -1) and entry.get("desiredReplicas", 1) == 1, entry
                time.sleep(0.5)
        measured = [e for e in seen if e.get("inputRate")]
        assert measured, seen
        assert max(e["lag"] for e in measured) >= 600, seen  # raw lag alone would have asked for 2+
        assert all(e["backlog"] == 0 for e in measured), seen
        assert all(abs(e["inputRate"] - rate) < rate * 0.5 for e in measured[1:]), seen

        # Falling behind: no more commits; the lag outgrows what the flush interval explains.
        def scaled_up() -> dict[str, Any] | None:
            replicas, entry = writer_entry()
            return entry if replicas == 3 and entry.get("desiredReplicas") == 3 else None

        up = wait_for("the writer to scale up on its backlog", scaled_up, timeout=90)
    assert up["reason"].startswith("backlog "), up
    assert up["backlog"] > 1000 and up["lag"] - up["backlog"] >= rate * interval * 0.5, up
