"""The health service against the real broker: the status reader, the lag monitor, and the service as a process.

Status records are produced by the real ServiceRuntime publisher (what the services use); lag figures are
compared with what the broker reports through independent calls (Consumer.committed, watermarks).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.infra import topics
from tests.infra.kafka import KafkaBroker
from tests.infra.service_process import launch, stop
from tests.infra.zeek_data import PROJECT_ROOT, json_logs, read_lines
from zeek_pipeline.health.lag import GroupSpec, LagMonitor
from zeek_pipeline.health.status_reader import StatusReader
from zeek_pipeline.kafka import config as kafka_config
from zeek_pipeline.kafka.topics import STATUS_TOPIC_CONFIG
from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.runtime.status import StatusRecord
from zeek_pipeline.settings import Settings, load_settings

pytestmark = pytest.mark.integration

CONFIG = PROJECT_ROOT / "config" / "config.json"
T = TypeVar("T")


# --- helpers shared with tests/browser -------------------------------------------------------------
def wait_until(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.25) -> T:
    """Poll until `check` returns something truthy; fail naming what never happened and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pipeline_env(bootstrap: str, tmp_path: Path, *, interval: float = 1.0) -> dict[str, str]:
    """ZEEK_PIPELINE_* overrides giving one test its own topics, groups and status channel."""
    name = topics.unique_name("hp")
    return {
        "ZEEK_PIPELINE_KAFKA__BROKERS": bootstrap,
        "ZEEK_PIPELINE_KAFKA__TOPIC": f"{name}-raw",
        "ZEEK_PIPELINE_KAFKA__GROUP_ID": f"{name}-normalizer",
        "ZEEK_PIPELINE_OUTPUT__KAFKA__TOPIC": f"{name}-normalized",
        "ZEEK_PIPELINE_OUTPUT__KAFKA__DLQ_TOPIC": f"{name}-dlq",
        "ZEEK_PIPELINE_WRITER__GROUP_ID": f"{name}-writer",
        "ZEEK_PIPELINE_STATUS__TOPIC": f"{name}-status",
        "ZEEK_PIPELINE_STATUS__INTERVAL_SECONDS": str(interval),
        "ZEEK_PIPELINE_HEALTH__REFRESH_SECONDS": "1",
        "ZEEK_PIPELINE_OUTPUT__PARQUET__BASE_PATH": str(tmp_path / "parquet"),
        "ZEEK_PIPELINE_LOG__PATH": str(tmp_path / "log"),
    }


def create_pipeline_topics(bootstrap: str, env: dict[str, str], partitions: int = 3) -> None:
    topics.create_topic(bootstrap, env["ZEEK_PIPELINE_KAFKA__TOPIC"], partitions=partitions)
    topics.create_topic(bootstrap, env["ZEEK_PIPELINE_OUTPUT__KAFKA__TOPIC"], partitions=partitions)
    topics.create_topic(bootstrap, env["ZEEK_PIPELINE_OUTPUT__KAFKA__DLQ_TOPIC"], partitions=1)
    topics.create_topic(bootstrap, env["ZEEK_PIPELINE_STATUS__TOPIC"], partitions=1, config=STATUS_TOPIC_CONFIG)


def settings_from(env: dict[str, str], **overrides: str) -> Settings:
    return load_settings(CONFIG, environ={**env, **overrides})


@dataclass
class HealthProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def json(self, path: str) -> Any:
        response = self.get(path)
        response.raise_for_status()
        return response.json()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def health_service(env: dict[str, str], tmp_path: Path) -> Iterator[HealthProcess]:
    """`zeek-pipeline health` as a real process on a free port; stopped with SIGTERM (must exit 0)."""
    port = free_port()
    log = tmp_path / f"health-{port}.out"
    full_env = {**os.environ, **env, "ZEEK_PIPELINE_HEALTH__HOST": "127.0.0.1", "ZEEK_PIPELINE_HEALTH__PORT": str(port),
                "PYTHONFAULTHANDLER": "1"}
    proc = launch(["health", "--config", str(CONFIG)], full_env, log)
    service = HealthProcess(f"http://127.0.0.1:{port}", proc, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"health exited with {proc.returncode}:\n{service.log_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return service.get("/healthz").status_code == 200
        return False

    try:
        wait_until(up, 60, "the health service to answer /healthz")
        yield service
    finally:
        if not stop(proc, 20):
            raise AssertionError(f"health ignored SIGTERM:\n{service.log_text()[-3000:]}")


def status_channel(bootstrap: str, tmp_path: Path, partitions: int) -> tuple[str, Settings]:
    """A fresh compacted status topic and the settings that point the services and the reader at it."""
    env = pipeline_env(bootstrap, tmp_path)
    topic = env["ZEEK_PIPELINE_STATUS__TOPIC"]
    topics.create_topic(bootstrap, topic, partitions=partitions, config=STATUS_TOPIC_CONFIG)
    return topic, settings_from(env)


def runtime(settings: Settings, component: str, instance: str) -> ServiceRuntime:
    """A real ServiceRuntime (no probe port), publishing to the test's status topic."""
    rt = ServiceRuntime(component, settings.model_copy(update={"instance_id": instance}), None)
    rt.start()
    rt.set_state("ok")
    return rt


def real_zeek_lines(count: int) -> list[bytes]:
    lines: list[bytes] = []
    for path in json_logs():
        for line in read_lines(path):
            lines.append(line)
            if len(lines) == count:
                return lines
    return lines


# --- the status reader ------------------------------------------------------------------------------
def test_status_reader_rebuilds_the_latest_record_per_instance_from_the_topic(kafka_bootstrap: str,
                                                                              tmp_path: Path) -> None:
    status_topic, settings = status_channel(kafka_bootstrap, tmp_path, partitions=2)
    normalizer = runtime(settings, "normalizer-enricher", "n-0")
    writer = runtime(settings, "parquet-writer", "w-0")
    for _ in range(3):
        normalizer.metrics.add("consumed", 1000)
        normalizer.metrics.reject("invalid_json", "unexpected end of data", f"{settings.kafka.topic}[0]@7")
        normalizer.publish_status()
    writer.metrics.file_written("log_type=conn/date=2018-03-24/events-0-0.parquet", "conn", 3000, 81_920)
    writer.publish_status()
    writer.close()  # the last record says "stopped", then a tombstone removes the key
    hostile = [b"<script>alert(1)</script>", orjson.dumps({"component": "x", "state": "maybe"})]
    topics.produce(kafka_bootstrap, status_topic, hostile, keys=[b"evil/1", b"evil/2"])
    normalizer._status.close()  # noqa: SLF001 - flush the real publisher without sending "stopped"

    # What the topic holds, read independently: the latest record per key.
    latest: dict[str, bytes | None] = {}
    for message in topics.consume_all(kafka_bootstrap, status_topic, expected=10, isolation="read_uncommitted"):
        assert message.key is not None
        latest[message.key.decode()] = message.value
    assert latest.pop("parquet-writer/w-0") is None  # the clean exit's tombstone is the key's last message

    reader = StatusReader(kafka_config.common(settings), status_topic)
    reader.start()
    try:
        snap = wait_until(lambda: (s := reader.snapshot()).loaded and s, 30, "the reader to load the topic")
        assert set(snap.records) == {"normalizer-enricher/n-0"}  # the cleanly stopped writer is gone
        assert snap.records["normalizer-enricher/n-0"].record == StatusRecord.model_validate_json(
            latest["normalizer-enricher/n-0"] or b"")
        assert snap.records["normalizer-enricher/n-0"].record.totals["consumed"] == 3000
        assert {p.key for p in snap.problems} == {"evil/1", "evil/2"}
        assert snap.malformed == 2 and snap.reachable

        # A record produced later shows up without a restart.
        late = runtime(settings, "normalizer-enricher", "n-1")
        late.metrics.add("consumed", 5)
        late.publish_status()
        def late_seen() -> StatusRecord | None:
            item = reader.snapshot().records.get("normalizer-enricher/n-1")
            return item.record if item is not None and item.record.totals.get("consumed") == 5 else None

        assert wait_until(late_seen, 20, "the reader to see a new instance").state == "ok"
    finally:
        reader.stop()


def test_status_reader_on_a_missing_topic_is_loaded_empty_and_says_why(kafka_bootstrap: str) -> None:
    missing = topics.unique_name("no-such-status")
    reader = StatusReader({"bootstrap.servers": kafka_bootstrap}, missing)
    reader.start()
    try:
        snap = wait_until(lambda: (s := reader.snapshot()).loaded and s, 20, "the reader to give up loading")
        assert snap.records == {} and snap.reachable
        assert snap.error == f"status topic {missing} does not exist yet"
    finally:
        reader.stop()


# --- the lag monitor ----------------------------------------------------------------------------------
def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def test_lag_figures_equal_what_the_broker_reports_and_the_trend_follows(kafka_bootstrap: str,
                                                                         tmp_path: Path) -> None:
    env = pipeline_env(kafka_bootstrap, tmp_path)
    raw, normalized = env["ZEEK_PIPELINE_KAFKA__TOPIC"], env["ZEEK_PIPELINE_OUTPUT__KAFKA__TOPIC"]
    n_group, w_group = env["ZEEK_PIPELINE_KAFKA__GROUP_ID"], env["ZEEK_PIPELINE_WRITER__GROUP_ID"]
    topics.create_topic(kafka_bootstrap, raw, partitions=3)
    topics.create_topic(kafka_bootstrap, normalized, partitions=2)
    lines = real_zeek_lines(3000)
    topics.produce(kafka_bootstrap, raw, lines, keys=[str(i).encode() for i in range(len(lines))])
    topics.produce(kafka_bootstrap, normalized, lines[:500], partition=1)
    commit(kafka_bootstrap, n_group, {(raw, 0): 400, (raw, 1): 17})  # partition 2: nothing committed

    monitor = LagMonitor(kafka_config.common(settings_from(env)),
                         [GroupSpec(n_group, raw, "normalizer-enricher"), GroupSpec(w_group, normalized,
                                                                                   "parquet-writer")])
    snap = monitor.refresh()
    assert snap.kafka.reachable and snap.kafka.brokers == 1 and snap.lag.error is None

    high = topics.end_offsets(kafka_bootstrap, raw)
    committed = topics.committed_offsets(kafka_bootstrap, n_group, raw)
    normalizer_group, writer_group = snap.lag.groups
    [raw_view] = normalizer_group.topics
    assert raw_view.topic == raw
    assert {p.partition: p.high_watermark for p in raw_view.partitions} == high
    assert {p.partition: p.committed for p in raw_view.partitions} == {
        p: (o if o >= 0 else None) for p, o in committed.items()}
    assert {p.partition: p.lag for p in raw_view.partitions} == {0: high[0] - 400, 1: high[1] - 17, 2: high[2]}
    assert raw_view.lag == sum(high.values()) - 417
    [normalized_view] = writer_group.topics
    assert [(p.partition, p.committed, p.lag) for p in normalized_view.partitions] == [(0, None, 0), (1, None, 500)]
    assert writer_group.error is None

    # More records arrive and nobody consumes: the lag grows, per partition and for the topic.
    time.sleep(0.05)
    topics.produce(kafka_bootstrap, raw, lines[:300], partition=2)
    again = monitor.refresh()
    [raw_again] = again.lag.groups[0].topics
    assert raw_again.trend == "growing" and raw_again.lag == raw_view.lag + 300
    assert [p.trend for p in raw_again.partitions] == ["steady", "steady", "growing"]
    assert raw_again.growing_for_seconds > 0
    # The consumer catches up: shrinking.
    commit(kafka_bootstrap, n_group, {(raw, p): o for p, o in topics.end_offsets(kafka_bootstrap, raw).items()})
    caught_up = monitor.refresh().lag.groups[0].topics[0]
    assert (caught_up.lag, caught_up.trend, caught_up.growing_for_seconds) == (0, "shrinking", 0.0)


def test_lag_monitor_reports_an_unreachable_broker_without_raising() -> None:
    dead = f"127.0.0.1:{free_port()}"
    monitor = LagMonitor({"bootstrap.servers": dead}, [GroupSpec("g", "t", "normalizer-enricher")], timeout=1.0)
    snap = monitor.refresh()
    assert not snap.kafka.reachable and not snap.lag.reachable
    assert snap.kafka.error is not None and snap.kafka.error.startswith("Kafka unreachable: ")


# --- the service as a process -----------------------------------------------------------------------
def test_health_service_shows_live_instances_and_reports_a_silent_one_down_within_three_intervals(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    env = pipeline_env(kafka_bootstrap, tmp_path, interval=1.0)
    create_pipeline_topics(kafka_bootstrap, env)
    settings = settings_from(env)
    normalizer = runtime(settings, "normalizer-enricher", "n-0")
    writer = runtime(settings, "parquet-writer", "w-0")
    lines = real_zeek_lines(1000)
    topics.produce(kafka_bootstrap, env["ZEEK_PIPELINE_KAFKA__TOPIC"], lines)
    commit(kafka_bootstrap, env["ZEEK_PIPELINE_KAFKA__GROUP_ID"], {(env["ZEEK_PIPELINE_KAFKA__TOPIC"], 0): 1})
    try:
        with health_service(env, tmp_path) as health:
            def both_ok() -> dict[str, Any] | None:
                for rt in (normalizer, writer):
                    rt.metrics.add("consumed", 10)
                    rt.publish_status()
                body = health.json("/api/v1/pipeline")
                states = {c["key"]: c["state"] for c in body["components"]}
                ok = states == {"normalizer-enricher/n-0": "ok", "parquet-writer/w-0": "ok"}
                return body if ok and body["kafka"]["reachable"] and body["verdict"]["state"] == "ok" else None

            body = wait_until(both_ok, 30, "both instances ok and an ok verdict")
            assert health.json("/readyz")["status"] == "ok"
            assert health.get("/").status_code == 200

            # Lag as the service shows it equals what the broker says.
            lag = wait_until(lambda: (v := health.json("/api/v1/lag"))["groups"][0]["topics"] and v, 10, "lag")
            high = topics.end_offsets(kafka_bootstrap, env["ZEEK_PIPELINE_KAFKA__TOPIC"])
            shown = {p["partition"]: (p["high_watermark"], p["committed"]) for p in lag["groups"][0]["topics"][0]
                     ["partitions"]}
            assert shown == {p: (h, 1 if p == 0 else None) for p, h in high.items()}

            # The writer goes silent (as after SIGKILL: no "stopped" record); the normalizer keeps publishing.
            silent_since = time.monotonic()

            def writer_down() -> dict[str, Any] | None:
                normalizer.publish_status()
                body = health.json("/api/v1/pipeline")
                writer_view = next(c for c in body["components"] if c["component"] == "parquet-writer")
                return body if writer_view["state"] == "down" else None

            body = wait_until(writer_down, 15, "the writer to be reported down")
            took = time.monotonic() - silent_since
            # 3 intervals of silence plus at most one status publish interval and one refresh of slack.
            assert took <= 3 * 1.0 + 2.5, took
            assert body["verdict"]["state"] == "degraded"
            [reason] = [r["text"] for r in body["verdict"]["reasons"] if r["severity"] != "info"]
            assert re.fullmatch(r"parquet-writer no heartbeat for \d s", reason), reason
            metrics = health.get("/metrics").text
            assert 'zeek_health_component_up{component="parquet-writer",instance="w-0"} 0.0' in metrics
            assert "zeek_health_pipeline_verdict 1.0" in metrics
        assert health.proc.returncode == 0, health.log_text()[-2000:]
        assert "health service starting" in health.log_text()
    finally:
        normalizer.close()


@pytest.mark.slow
def test_page_keeps_working_and_says_kafka_is_unreachable_while_the_broker_is_down(
        kafka_broker: KafkaBroker | None, kafka_bootstrap: str, tmp_path: Path) -> None:
    if kafka_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker this test cannot stop")
    env = pipeline_env(kafka_bootstrap, tmp_path, interval=1.0)
    create_pipeline_topics(kafka_bootstrap, env)
    settings = settings_from(env)
    normalizer = runtime(settings, "normalizer-enricher", "n-0")
    writer = runtime(settings, "parquet-writer", "w-0")

    def publish() -> None:
        for rt in (normalizer, writer):
            rt.publish_status()

    try:
        with health_service(env, tmp_path) as health:
            def ok_and_checked() -> bool:
                publish()
                body = health.json("/api/v1/pipeline")
                return body["verdict"]["state"] == "ok" and body["kafka"]["reachable"] is True

            wait_until(ok_and_checked, 30, "an ok verdict with Kafka checked before the outage")
            kafka_broker.stop()
            try:
                body = wait_until(lambda: (b := health.json("/api/v1/pipeline"))["kafka"]["reachable"] is False and b,
                                  30, "the service to notice the broker is gone")
                assert body["verdict"]["state"] == "down"
                assert body["unreachable"][0].startswith(f"Kafka ({kafka_bootstrap}): Kafka unreachable: ")
                assert body["verdict"]["reasons"][0]["subject"] == "kafka"
                page = health.get("/")
                assert page.status_code == 200 and "Unreachable" in page.text and "Kafka (" in page.text
                assert health.get("/readyz").status_code == 200  # stays routable to show the outage
                assert all(health.get(path).status_code == 200 for path in (
                    "/api/v1/components", "/api/v1/lag", "/api/v1/rejects", "/api/v1/files", "/metrics"))
            finally:
                kafka_broker.start()
            wait_until(lambda: (publish(), health.json("/api/v1/pipeline")["verdict"]["state"] == "ok")[1], 60,
                       "the verdict to recover once the broker is back")
    finally:
        normalizer.close()
        writer.close()
