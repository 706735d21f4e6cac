"""Lag-based autoscaling on the real cluster: a backlog that one throttled normalizer cannot absorb makes the
operator scale its Deployment up, the new pods join the consumer group and take partitions (they consume),
and once the lag has drained it scales back down."""

from __future__ import annotations

import json

from confluent_kafka.admin import AdminClient
from tests.cluster.support import (
    apply,
    isolated,
    pipeline_manifest,
    pod_names,
    publish,
    release,
    small,
    wait_deployments,
)
from tests.infra.cluster.cluster import Cluster
from tests.infra.waiting import ok, wait_for
from tests.infra.zeek_data import json_logs

NAMESPACE = "zeek-scale"


def replicas(kubectl, deployment: str) -> int:  # type: ignore[no-untyped-def]
    spec = json.loads(ok(kubectl("-n", NAMESPACE, "get", "deployment", deployment, "-o", "json")).stdout)["spec"]
    return int(spec["replicas"])


def group_members(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return len([m for m in description.members if m.assignment.topic_partitions])


def test_lag_scales_the_normalizer_up_and_back_down(
    cluster: Cluster, helm, kubectl, project_image, host_bootstrap: str  # type: ignore[no-untyped-def]
) -> None:
    with release(helm, kubectl, "zs", NAMESPACE, project_image, "--set-json",
                 'operator.extraEnv=[{"name":"ZEEK_OPERATOR_TICK_SECONDS","value":"5"}]'):
        scale_up_and_down(kubectl, project_image, host_bootstrap)


def scale_up_and_down(kubectl, project_image, host_bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    changes = small(**isolated("scale"))
    changes.update({
        "normalizer__replicas": 1,
        # a throttled normalizer (0.1 CPU) cannot keep up with the backlog: its lag grows
        "normalizer__resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                  "limits": {"cpu": "100m", "memory": "512Mi"}},
        "normalizer__autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3,
                                    "targetLagPerReplica": 20000, "cooldownSeconds": 20},
    })
    apply(kubectl, NAMESPACE, pipeline_manifest(project_image, name="scale", **changes))
    wait_deployments(kubectl, NAMESPACE, "scale")
    assert replicas(kubectl, "scale-normalizer-enricher") == 1

    publish(host_bootstrap, "scale-raw", json_logs(), "--repeat", "2")
    wait_for("the normalizer scaled up", lambda: replicas(kubectl, "scale-normalizer-enricher") >= 2,
             timeout=180, interval=2)
    # the new pods run and take partitions of the raw topic: more than one member consumes
    wait_for("two consuming members", lambda: len(pod_names(kubectl, NAMESPACE, "scale-normalizer-enricher")) >= 2
             and group_members(host_bootstrap, "scale-normalizer") >= 2, timeout=240, interval=3)
    events = ok(kubectl("-n", NAMESPACE, "get", "events", "--field-selector", "involvedObject.name=scale",
                        "-o", "json")).stdout
    assert "ScaledUp" in events
    # lag drains → back to one replica (after the cooldown)
    wait_for("the normalizer scaled back down", lambda: replicas(kubectl, "scale-normalizer-enricher") == 1,
             timeout=600, interval=5)
    assert "ScaledDown" in ok(kubectl("-n", NAMESPACE, "get", "events", "--field-selector",
                                      "involvedObject.name=scale", "-o", "json")).stdout


