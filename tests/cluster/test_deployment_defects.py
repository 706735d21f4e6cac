"""Deployment defects that only real pods show (issue: "Run it as users do"), each reproduced as a user would hit
it and checked from outside:

- a pipeline named `zeek-pipeline` (`helm install zeek-pipeline … pipeline.enabled=true`): Kubernetes injects
  service-link variables such as ZEEK_PIPELINE_HEALTH_PORT=tcp://… into later pods; they must still start;
- a rolling update (new image tag and a changed config value) with replicas = partitions completes;
- a field removed from the ZeekPipeline is removed from its children (limits; storage RWX → RWO);
- writer replicas > 1 on a ReadWriteOnce claim are refused with a message that says what to do;
- two operator replicas from the chart: both run, one holds the lease.
"""

from __future__ import annotations

import json

from tests.cluster.support import (
    SMALL,
    apply,
    isolated,
    pipeline_manifest,
    pod_names,
    release,
    rollout,
    small,
    wait_deployments,
)
from tests.infra.cluster.cluster import Cluster
from tests.infra.waiting import ok, wait_for


def deployment(kubectl, namespace: str, name: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return json.loads(ok(kubectl("-n", namespace, "get", "deployment", name, "-o", "json")).stdout)  # type: ignore[no-any-return]


def test_a_pipeline_named_zeek_pipeline_starts_despite_service_links(
    cluster: Cluster, helm, kubectl, project_image  # type: ignore[no-untyped-def]
) -> None:
    namespace = "zeek-links"
    topics = isolated("links")
    values = json.dumps({"enabled": True, "normalizer": {"resources": SMALL}, "writer": {"resources": SMALL},
                         "kafka": {"bootstrapServers": ["redpanda.redpanda.svc.cluster.local:9092"],
                                                    "topics": topics["kafka__topics"],
                                                    "consumerGroups": topics["kafka__consumerGroups"],
                                                    "createTopics": {"enabled": True, "partitions": 2}}})
    with release(helm, kubectl, "zeek-pipeline", namespace, project_image, "--set-json", f"pipeline={values}"):
        started_without_service_links(kubectl, namespace)


def started_without_service_links(kubectl, namespace: str) -> None:  # type: ignore[no-untyped-def]
    wait_deployments(kubectl, namespace, "zeek-pipeline")
    # a pod started after the Service zeek-pipeline-health exists: the variables a service link would add are
    # not there (enableServiceLinks: false), and the services started anyway (checked by the rollouts above)
    ok(kubectl("-n", namespace, "rollout", "restart", "deployment/zeek-pipeline-normalizer-enricher"))
    rollout(kubectl, namespace, "zeek-pipeline-normalizer-enricher")
    pod = pod_names(kubectl, namespace, "zeek-pipeline-normalizer-enricher")[0]
    env = ok(kubectl("-n", namespace, "exec", pod, "--", "env")).stdout
    assert "ZEEK_PIPELINE_HEALTH_PORT" not in env and "ZEEK_PIPELINE_HEALTH_SERVICE_HOST" not in env


def test_rolling_update_with_replicas_equal_to_partitions_completes(
    cluster: Cluster, helm, kubectl, project_image  # type: ignore[no-untyped-def]
) -> None:
    namespace = "zeek-roll"
    with release(helm, kubectl, "zr", namespace, project_image):
        roll(cluster, kubectl, project_image, namespace)


def roll(cluster: Cluster, kubectl, project_image, namespace: str) -> None:  # type: ignore[no-untyped-def]
    changes = small(**isolated("roll"))
    changes.update({"kafka__createTopics": {"enabled": True, "partitions": 2, "replicationFactor": 1},
                    "normalizer__replicas": 2, "normalizer__autoscaling": {"enabled": False}})
    apply(kubectl, namespace, pipeline_manifest(project_image, name="roll", **changes))
    wait_deployments(kubectl, namespace, "roll")

    # a new image tag (the same image under a second name) and a changed config value
    repository, tag = project_image
    cluster.images["project-b"] = f"{repository}:{tag}-b"
    import subprocess

    from tests.infra.cluster.cluster import IMAGES_SCRIPT

    ok(subprocess.run(["bash", str(IMAGES_SCRIPT), "tag", ":".join(project_image), cluster.images["project-b"]],
                      capture_output=True, text=True, check=False))
    cluster.import_image(cluster.images["project-b"])
    changes["normalizer__batchSize"] = 4000
    apply(kubectl, namespace, pipeline_manifest((repository, f"{tag}-b"), name="roll", **changes))
    for service in ("normalizer-enricher", "parquet-writer", "health"):
        wait_for(f"roll-{service} on the new image", lambda s=service: deployment(kubectl, namespace, f"roll-{s}")[
            "spec"]["template"]["spec"]["containers"][0]["image"].endswith("-b"), timeout=120, interval=2)
        rollout(kubectl, namespace, f"roll-{service}", timeout=300)


def test_removed_fields_leave_the_children_and_rwo_writer_replicas_are_refused(
    cluster: Cluster, helm, kubectl, project_image  # type: ignore[no-untyped-def]
) -> None:
    namespace = "zeek-fields"
    with release(helm, kubectl, "zd", namespace, project_image):
        remove_fields(kubectl, project_image, namespace)


def remove_fields(kubectl, project_image, namespace: str) -> None:  # type: ignore[no-untyped-def]
    changes = small(**isolated("fields"))
    changes["writer__storage"] = {"type": "pvc", "pvc": {"size": "1Gi", "accessModes": ["ReadWriteMany"],
                                                        "keepOnDelete": False}}
    manifest = pipeline_manifest(project_image, name="fields", **changes)
    apply(kubectl, namespace, manifest)
    wait_for("the writer deployment", lambda: kubectl("-n", namespace, "get", "deployment",
                                                      "fields-parquet-writer").returncode == 0, timeout=120)
    assert deployment(kubectl, namespace, "fields-normalizer-enricher")["spec"]["template"]["spec"][
        "containers"][0]["resources"].get("limits")

    # remove the limits, switch the claim to ReadWriteOnce (the writer's strategy becomes Recreate)
    del manifest["spec"]["normalizer"]["resources"]["limits"]
    manifest["spec"]["writer"]["storage"]["pvc"]["accessModes"] = ["ReadWriteOnce"]
    ok(kubectl("-n", namespace, "delete", "pvc", "fields-parquet", "--wait=false"))
    apply(kubectl, namespace, manifest)

    def reconciled() -> bool:
        normalizer = deployment(kubectl, namespace, "fields-normalizer-enricher")["spec"]
        writer = deployment(kubectl, namespace, "fields-parquet-writer")["spec"]
        return ("limits" not in normalizer["template"]["spec"]["containers"][0]["resources"]
                and writer["strategy"]["type"] == "Recreate" and "rollingUpdate" not in writer["strategy"])

    wait_for("the children without the removed fields", reconciled, timeout=120, interval=2)
    status = json.loads(ok(kubectl("-n", namespace, "get", "zp", "fields", "-o", "json")).stdout)["status"]
    degraded = [c for c in status.get("conditions", []) if c["type"] == "Degraded"]
    assert not degraded or degraded[0]["status"] == "False", degraded

    # writer replicas > 1 on a ReadWriteOnce claim: refused by the API server, saying what to do
    manifest["spec"]["writer"]["replicas"] = 2
    import yaml

    refused = kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert refused.returncode != 0 and "ReadWriteMany" in refused.stderr, refused.stderr


def test_two_operator_replicas_from_the_chart_one_leader(
    cluster: Cluster, helm, kubectl, project_image  # type: ignore[no-untyped-def]
) -> None:
    namespace = "zeek-ha"
    with release(helm, kubectl, "zh", namespace, project_image, "--set", "operator.replicas=2"):
        one_leader(kubectl, namespace)


def one_leader(kubectl, namespace: str) -> None:  # type: ignore[no-untyped-def]
    operator = "zh-zeek-pipeline-operator"
    rollout(kubectl, namespace, operator)
    pods = pod_names(kubectl, namespace, operator)
    assert len(pods) == 2
    holder = wait_for("a lease holder", lambda: json.loads(ok(kubectl(
        "-n", namespace, "get", "lease", "-o", "json")).stdout)["items"], timeout=120, interval=2)
    holders = {lease["spec"].get("holderIdentity") for lease in holder}
    assert len(holders) == 1 and any(pod in str(holders) for pod in pods), (holders, pods)
    logs = {pod: kubectl("-n", namespace, "logs", pod).stdout for pod in pods}
    leaders = [pod for pod, text in logs.items() if "acquired the lease" in text]
    assert len(leaders) == 1, {pod: text[-2000:] for pod, text in logs.items()}
