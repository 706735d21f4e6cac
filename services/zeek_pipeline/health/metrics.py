"""Prometheus metrics of the health service: its own counters plus the verdict, instances and lag as gauges.

The pipeline figures are computed at scrape time from the current view (a custom collector), so an instance
or partition that disappears stops being exported instead of freezing at its last value.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zeek_pipeline.health.state import HealthState

VERDICT_VALUES = {"ok": 0, "degraded": 1, "down": 2}
HEALTH_STATES = ("ok", "degraded", "down", "stopped")


class PipelineCollector(Collector):
    def __init__(self, state: HealthState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        pipeline = self._state.pipeline()
        lag = self._state.lag()
        verdict = GaugeMetricFamily("zeek_health_pipeline_verdict", "Pipeline verdict: 0 ok, 1 degraded, 2 down")
        verdict.add_metric([], VERDICT_VALUES[pipeline.verdict.state])
        yield verdict
        reasons = GaugeMetricFamily("zeek_health_verdict_reasons", "Reasons behind the verdict", labels=["severity"])
        for severity in ("down", "degraded", "info"):
            reasons.add_metric([severity], sum(1 for r in pipeline.verdict.reasons if r.severity == severity))
        yield reasons
        kafka = GaugeMetricFamily("zeek_health_kafka_reachable", "1 when the AdminClient reached the brokers")
        kafka.add_metric([], 1 if pipeline.kafka.reachable else 0)
        yield kafka
        channel = pipeline.status_channel
        loaded = GaugeMetricFamily("zeek_health_status_topic_loaded", "1 once the status topic was read to its end")
        loaded.add_metric([], 1 if channel.loaded else 0)
        yield loaded
        read = CounterMetricFamily("zeek_health_status_records_read", "Status records read since start")
        read.add_metric([], channel.records_read)
        malformed = CounterMetricFamily("zeek_health_status_records_malformed",
                                        "Status records rejected as malformed since start")
        malformed.add_metric([], channel.malformed)
        yield from (read, malformed)
        problems = GaugeMetricFamily("zeek_health_status_problems", "Unusable status records currently listed")
        problems.add_metric([], len(channel.problems))
        yield problems

        labels = ["component", "instance"]
        state = GaugeMetricFamily("zeek_health_component_state", "1 for the instance's current state",
                                  labels=[*labels, "state"])
        up = GaugeMetricFamily("zeek_health_component_up", "1 when the instance is ok or degraded", labels=labels)
        age = GaugeMetricFamily("zeek_health_component_heartbeat_age_seconds", "Seconds since the last status record",
                                labels=labels)
        eps = GaugeMetricFamily("zeek_health_component_events_per_second", "Events/s over the instance's last minute",
                                labels=[*labels, "direction"])
        for c in pipeline.components:
            for name in HEALTH_STATES:
                state.add_metric([c.component, c.instance, name], 1 if c.state == name else 0)
            up.add_metric([c.component, c.instance], 1 if c.state in ("ok", "degraded") else 0)
            if c.heartbeat_age_seconds is not None:
                age.add_metric([c.component, c.instance], c.heartbeat_age_seconds)
            eps.add_metric([c.component, c.instance, "in"], c.rates.in_eps)
            eps.add_metric([c.component, c.instance, "out"], c.rates.out_eps)
        yield from (state, up, age, eps)

        partition_lag = GaugeMetricFamily("zeek_health_consumer_group_lag", "Records behind the high watermark",
                                          labels=["group", "topic", "partition"])
        topic_lag = GaugeMetricFamily("zeek_health_consumer_group_topic_lag", "Records behind, summed over partitions",
                                      labels=["group", "topic"])
        growing = GaugeMetricFamily("zeek_health_consumer_group_lag_growing_seconds",
                                    "How long the topic's lag has risen without a dip", labels=["group", "topic"])
        for group in lag.groups:
            for topic in group.topics:
                if topic.lag is not None:
                    topic_lag.add_metric([group.group, topic.topic], topic.lag)
                growing.add_metric([group.group, topic.topic], topic.growing_for_seconds)
                for p in topic.partitions:
                    if p.lag is not None:
                        partition_lag.add_metric([group.group, topic.topic, str(p.partition)], p.lag)
        yield from (partition_lag, topic_lag, growing)


class HealthMetrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, state: HealthState) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("zeek_health_http_requests", "HTTP requests served", ["route", "status"],
                                registry=self.registry)
        self.registry.register(PipelineCollector(state))
