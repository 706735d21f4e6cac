"""The health service watching the real pipeline: normalizer-enricher and parquet-writer as processes, real Zeek
logs flowing in through `zeek-pipeline publish`, and the writer killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.infra.service_process import launch, stop
from tests.infra.zeek_data import json_logs
from tests.integration.test_health_kafka import (
    CONFIG,
    HealthProcess,
    create_pipeline_topics,
    free_port,
    health_service,
    pipeline_env,
    wait_until,
)

pytestmark = pytest.mark.integration

INTERVAL = 1.0  # ZEEK_PIPELINE_STATUS__INTERVAL_SECONDS for every process: "down" after 3 s of silence


@dataclass
class Pipeline:
    env: dict[str, str]
    health: HealthProcess
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return self.logs[name].read_text(errors="replace")[-chars:]

    def components(self) -> dict[str, dict[str, Any]]:
        body = self.health.json("/api/v1/pipeline")
        return {c["component"]: c for c in body["components"]}


def _start(pipeline: Pipeline, tmp_path: Path, name: str, argv: list[str], extra: dict[str, str]) -> None:
    log = tmp_path / f"{name}.out"
    pipeline.procs[name] = launch(argv, {**os.environ, **pipeline.env, **extra}, log)
    pipeline.logs[name] = log


@contextlib.contextmanager
def running_pipeline(bootstrap: str, tmp_path: Path, *, rate: int = 800) -> Iterator[Pipeline]:
    """Both services, the health service and a publisher replaying the real Zeek corpus at `rate` records/s."""
    env = pipeline_env(bootstrap, tmp_path, interval=INTERVAL)
    env.update({
        "ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS": "2",
        "ZEEK_PIPELINE_NORMALIZER__HTTP_PORT": str(free_port()),
        "ZEEK_PIPELINE_WRITER__HTTP_PORT": str(free_port()),
    })
    create_pipeline_topics(bootstrap, env)
    with health_service(env, tmp_path) as health:
        pipeline = Pipeline(env, health)
        try:
            _start(pipeline, tmp_path, "normalizer-enricher", ["normalizer-enricher", "--config", str(CONFIG)],
                   {"ZEEK_PIPELINE_INSTANCE_ID": "n-0"})
            _start(pipeline, tmp_path, "parquet-writer", ["parquet-writer", "--config", str(CONFIG)],
                   {"ZEEK_PIPELINE_INSTANCE_ID": "w-0"})
            _start(pipeline, tmp_path, "publish",
                   ["publish", "--topic", env["ZEEK_PIPELINE_KAFKA__TOPIC"], "--config", str(CONFIG), "--brokers",
                    bootstrap, "--rate", str(rate), "--repeat", "0", "--count", "100000000",
                    *[str(p) for p in json_logs()]], {})
            yield pipeline
        finally:
            for name in ("publish", "normalizer-enricher", "parquet-writer"):
                if name in pipeline.procs:
                    stop(pipeline.procs[name], 40)


def flowing(pipeline: Pipeline) -> dict[str, dict[str, Any]] | None:
    """Both services ok, events/s in and out above zero for each, and a Parquet file written."""
    for name, proc in pipeline.procs.items():
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{pipeline.log_tail(name)}")
    components = pipeline.components()
    n, w = components.get("normalizer-enricher"), components.get("parquet-writer")
    if n is None or w is None or n["state"] != "ok" or w["state"] != "ok":
        return None
    if min(n["rates"]["in_eps"], n["rates"]["out_eps"], w["rates"]["in_eps"], w["rates"]["out_eps"]) <= 0:
        return None
    return components if w["totals"].get("files", 0) > 0 else None


@pytest.mark.slow
def test_real_services_show_throughput_and_a_killed_writer_is_down_within_three_intervals(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with running_pipeline(kafka_bootstrap, tmp_path) as pipeline:
        components = wait_until(lambda: flowing(pipeline), 120, "both services ok with events flowing in and out")
        normalizer, writer = components["normalizer-enricher"], components["parquet-writer"]
        assert normalizer["totals"]["consumed"] > 0 and normalizer["totals"]["produced"] > 0
        assert writer["totals"]["produced"] > 0 and writer["totals"]["bytes_written"] > 0
        assert {p["topic"] for p in normalizer["assigned"]} == {pipeline.env["ZEEK_PIPELINE_KAFKA__TOPIC"]}
        assert len(writer["assigned"]) == 3
        files = pipeline.health.json("/api/v1/files")["recent"]
        assert files and all(Path(f["path"]).name.endswith(".parquet") for f in files)
        assert all(f["rows"] > 0 for f in files)
        # The chart's history has samples with events flowing both ways.
        points = wait_until(lambda: [p for p in pipeline.health.json("/api/v1/pipeline")["throughput"]["points"]
                                     if p["in_eps"] > 0 and p["out_eps"] > 0], 20, "throughput samples")
        assert points
        lag = pipeline.health.json("/api/v1/lag")
        assert [g["role"] for g in lag["groups"]] == ["normalizer-enricher", "parquet-writer"]
        assert all(p["high_watermark"] > 0 for p in lag["groups"][0]["topics"][0]["partitions"])

        killed = pipeline.procs.pop("parquet-writer")
        killed.kill()  # SIGKILL: no "stopped" record, the heartbeat just stops
        killed_at = time.time()
        killed.wait(10)
        last_heartbeat = writer["heartbeat_at"]

        def writer_down() -> dict[str, Any] | None:
            body = pipeline.health.json("/api/v1/pipeline")
            view = next(c for c in body["components"] if c["component"] == "parquet-writer")
            return body if view["state"] == "down" else None

        body = wait_until(writer_down, 20, "the killed writer to be reported down", every=0.1)
        seen_at = time.time()
        view = next(c for c in body["components"] if c["component"] == "parquet-writer")
        # Down exactly when its last heartbeat is 3 intervals old: never earlier, and seen within 3 intervals
        # of the kill plus the moment the health service takes to answer.
        assert view["heartbeat_age_seconds"] >= 3 * INTERVAL  # shown rounded to 0.1 s
        assert seen_at - killed_at <= 3 * INTERVAL + 1.5, (seen_at - killed_at, killed_at - last_heartbeat)
        assert body["verdict"]["state"] == "degraded"
        degraded = [r["text"] for r in body["verdict"]["reasons"] if r["severity"] == "degraded"]
        assert any(re.fullmatch(r"parquet-writer no heartbeat for \d s", text) for text in degraded), degraded
        assert next(c for c in body["components"] if c["component"] == "normalizer-enricher")["state"] == "ok"
        assert "parquet-writer/w-0: no heartbeat for" in " ".join(body["unreachable"])
