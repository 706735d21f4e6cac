"""A real Prometheus (built from the Go module proxy) scraping the real services while Zeek data flows.

The normalizer-enricher, parquet-writer and health service run as processes against the session's Kafka
broker (tests/integration/test_health_pipeline.py's `running_pipeline`); Prometheus scrapes all three every
second and evaluates the chart's rules, rendered with short durations through chart values (the lag must
grow for 15 s: a writer that keeps up flushes and commits every 2 s, so its lag dips long before that). Stopping the
writer (SIGSTOP: the data keeps flowing in, nothing consumes it) makes the consumer lag grow until
ZeekPipelineConsumerLagGrowing fires; resuming it (SIGCONT) lets the writer catch up and the alert resolve.
"""

from __future__ import annotations

import contextlib
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.infra.prometheus import (
    PrometheusServer,
    dashboard_metric_names,
    exposed_metric_names,
    prometheus_binaries,
    rule_groups,
    rule_metric_names,
    write_rule_file,
)
from tests.integration.test_health_kafka import free_port, wait_until
from tests.integration.test_health_pipeline import Pipeline, flowing, running_pipeline

pytestmark = pytest.mark.integration

LAG_ALERT = "ZeekPipelineConsumerLagGrowing"
SHORT_RULES = (
    "metrics.prometheusRule.alerts.consumerLagGrowing.growingSeconds=15",
    "metrics.prometheusRule.alerts.consumerLagGrowing.minLag=0",
    "metrics.prometheusRule.alerts.consumerLagGrowing.for=2s",
    "metrics.prometheusRule.alerts.targetDown.for=5s",
)


def targets(pipeline: Pipeline) -> dict[str, str]:
    return {
        "normalizer-enricher": f"127.0.0.1:{pipeline.env['ZEEK_PIPELINE_NORMALIZER__HTTP_PORT']}",
        "parquet-writer": f"127.0.0.1:{pipeline.env['ZEEK_PIPELINE_WRITER__HTTP_PORT']}",
        "health": pipeline.health.url.removeprefix("http://"),
    }


@contextlib.contextmanager
def prometheus(pipeline: Pipeline, tmp_path: Path) -> Iterator[PrometheusServer]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    rules = write_rule_file(directory / "rules.yaml", rule_groups(*SHORT_RULES))
    server = PrometheusServer(prometheus_binaries().prometheus, directory, free_port(), targets(pipeline), [rules])
    try:
        yield server.start()
    finally:
        server.stop()


def alerts(server: PrometheusServer, name: str, state: str) -> list[dict[str, Any]]:
    return [a for a in server.alerts() if a["labels"]["alertname"] == name and a["state"] == state]


def firing_series(server: PrometheusServer, name: str) -> list[dict[str, Any]]:
    """The ALERTS series Prometheus itself writes for a firing alert."""
    result: list[dict[str, Any]] = server.api(
        f'query?query=ALERTS%7Balertname%3D%22{name}%22%2Calertstate%3D%22firing%22%7D')["result"]
    return result


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return str(response.read().decode())


def all_targets_up(server: PrometheusServer) -> bool:
    active = server.api("targets?state=active")["activeTargets"]
    return len(active) == 3 and all(t["health"] == "up" for t in active)


def test_lag_alert_fires_while_the_writer_is_stopped_and_resolves_when_it_resumes(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with running_pipeline(kafka_bootstrap, tmp_path) as pipeline, prometheus(pipeline, tmp_path) as server:
        wait_until(lambda: flowing(pipeline), 120, "both services ok with events flowing in and out")
        wait_until(lambda: all_targets_up(server), 60, "Prometheus to scrape the three services")
        writer_group = pipeline.env["ZEEK_PIPELINE_WRITER__GROUP_ID"]
        assert not alerts(server, LAG_ALERT, "firing"), "the lag alert fired while the writer kept up"

        writer = pipeline.procs["parquet-writer"]
        writer.send_signal(signal.SIGSTOP)
        try:
            fired = wait_until(lambda: alerts(server, LAG_ALERT, "firing"), 120,
                               "the lag alert to fire for the stopped writer")
            assert {a["labels"]["group"] for a in fired} == {writer_group}
            assert {a["labels"]["topic"] for a in fired} == {pipeline.env["ZEEK_PIPELINE_OUTPUT__KAFKA__TOPIC"]}
            assert fired[0]["annotations"]["runbook_url"].endswith("docs/alerts.md#zeekpipelineconsumerlaggrowing")
            wait_until(lambda: firing_series(server, LAG_ALERT), 30, "ALERTS to hold the firing lag alert")
            down = wait_until(lambda: alerts(server, "ZeekPipelineTargetDown", "firing"), 60,
                              "the stopped writer's target to be reported down")
            assert "parquet-writer" in {a["labels"]["app_kubernetes_io_component"] for a in down}
        finally:
            writer.send_signal(signal.SIGCONT)

        wait_until(lambda: not alerts(server, LAG_ALERT, "firing") and not alerts(server, LAG_ALERT, "pending"),
                   180, "the lag alert to resolve once the writer catches up")
        assert writer.poll() is None, pipeline.log_tail("parquet-writer")


def test_every_metric_the_rules_and_dashboard_use_is_exported(kafka_bootstrap: str, tmp_path: Path) -> None:
    with running_pipeline(kafka_bootstrap, tmp_path, rate=400) as pipeline:
        # one record that is not JSON, so the per-reason reject counter exists as it would in production
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(pipeline.env["ZEEK_PIPELINE_KAFKA__TOPIC"], b"\x00 not a zeek record")
        assert producer.flush(30) == 0
        del producer  # closed now, not at interpreter exit after the broker is gone
        wait_until(lambda: flowing(pipeline), 120, "both services ok with events flowing in and out")

        def exposed() -> set[str] | None:
            names = set().union(*(exposed_metric_names(scrape(a)) for a in targets(pipeline).values()))
            return names if "zeek_pipeline_rejects_by_reason_total" in names else None

        names = wait_until(exposed, 60, "the reject to show in the normalizer's /metrics")
        used = rule_metric_names(rule_groups()) | dashboard_metric_names()
        assert len(used) >= 15
        assert not used - names, f"used by the rules or the dashboard but not exported: {sorted(used - names)}"
