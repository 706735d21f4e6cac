"""/readyz of the Kafka services: "this instance can do its work", not "it owns partitions"."""

from __future__ import annotations

from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.settings import Settings


def runtime() -> ServiceRuntime:
    return ServiceRuntime("normalizer-enricher", Settings(), None)


def test_a_started_instance_without_partitions_is_ready() -> None:
    """More replicas than partitions (a rollout's new pod, an autoscaled group at the cap) must not block."""
    service = runtime()
    service.set_state("ok")
    assert service.assigned == set()
    assert service.readiness() == (True, "ready")


def test_an_instance_with_partitions_is_ready() -> None:
    service = runtime()
    service.set_state("ok")
    service.set_assignment([("zeek-raw", 0)])
    assert service.readiness() == (True, "ready")


def test_starting_stopping_unreachable_or_paused_is_not_ready() -> None:
    service = runtime()
    assert service.readiness() == (False, "starting")
    service.set_state("ok")
    service.broker_reachable = False
    assert service.readiness() == (False, "broker unreachable")
    service.broker_reachable = True
    service.set_state("degraded", "disk full: /data")
    assert service.readiness() == (False, "disk full: /data")
    service.set_state("ok")
    service.request_stop("signal SIGTERM")
    assert service.readiness() == (False, "stopping")
