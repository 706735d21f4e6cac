"""spec.compaction on the real control plane: the operator owns a CronJob, and the controller-manager's
cronjob controller really makes Jobs from it that carry the compactor's command, env and volumes.

There is no node, so the Jobs' pods stay Pending and `zeek-pipeline compact` never runs here; what runs is
tested in the compaction tests. The operator runs with the least-privilege Role of operator/rbac/, so
these tests also show that Role is enough for CronJobs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_operator_lifecycle import (
    Kubectl,
    OperatorProcess,
    apply,
    get,
    pipeline,
    running_operator,
    throwaway_namespace,
    unique,
)
from tests.infra.waiting import ok, wait_for

EVERY_MINUTE = "* * * * *"
# The cronjob controller starts a Job at the next minute boundary; on a loaded machine it may take a while more.
SCHEDULE_WAIT = 150.0


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from throwaway_namespace(kubectl, "zp-compact")


@pytest.fixture(scope="module")
def operator(kube: Any, kubectl: Kubectl, namespace: str, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[OperatorProcess]:
    yield from running_operator(kube, kubectl, namespace, tmp_path_factory.mktemp("compaction"))


def s3_secret(name: str) -> dict[str, Any]:
    data = {"AWS_ACCESS_KEY_ID": "lake", "AWS_SECRET_ACCESS_KEY": "lake-secret"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def cronjob(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    return get(kubectl, "cronjob", f"{name}-compactor", namespace)


def jobs_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    result = ok(kubectl("get", "jobs", "-n", namespace, "-o", "json"))
    return [job for job in json.loads(result.stdout)["items"]
            if any(ref.get("kind") == "CronJob" and ref.get("name") == f"{name}-compactor"
                   for ref in job["metadata"].get("ownerReferences") or [])]


def job_container(job: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return found


def test_operator_creates_updates_and_removes_the_compaction_cronjob(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, kafka_bootstrap: str
) -> None:
    name = unique("cj")
    base = {"kafka": {"bootstrapServers": [kafka_bootstrap]}, "compaction": {"schedule": EVERY_MINUTE}}
    apply(kubectl, pipeline(name, base), namespace=namespace)
    first = wait_for("the CronJob", lambda: cronjob(kubectl, namespace, name))
    zp = get(kubectl, "zeekpipeline", name, namespace)
    assert zp is not None
    assert first["metadata"]["ownerReferences"][0]["uid"] == zp["metadata"]["uid"]
    assert first["spec"]["concurrencyPolicy"] == "Forbid"
    args = first["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["compact", "--output", "/var/lib/zeek-pipeline/parquet", "--config", "/etc/zeek-pipeline",
                    "--grace-seconds", "3600", "--target-mb", "128"]

    # The controller-manager makes a Job from it: the pod template the kubelet would run.
    job = wait_for("the cronjob controller to start a Job", lambda: next(iter(jobs_of(kubectl, namespace, name)),
                                                                         None), timeout=SCHEDULE_WAIT)
    container = job_container(job)
    assert container["command"] == ["zeek-pipeline"] and container["args"] == args
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["parquet"]["persistentVolumeClaim"]["claimName"] == f"{name}-parquet"
    assert volumes["config"]["configMap"]["name"] == f"{name}-config"
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["parquet"] == \
        "/var/lib/zeek-pipeline/parquet"
    assert job["spec"]["template"]["spec"]["affinity"]["podAffinity"]  # beside the writer (ReadWriteOnce)
    wait_for("the last schedule time in the pipeline's status", lambda: (
        ((get(kubectl, "zeekpipeline", name, namespace) or {}).get("status") or {}).get("compaction") or {}
    ).get("lastScheduleTime"), timeout=60)
    # The controller's status writes (a Job started) are not mistaken for a hand edit
    assert f"CronJob {name}-compactor was changed by someone else" not in operator.log()

    # A spec change reaches the CronJob.
    changed = {**base, "compaction": {"schedule": "*/5 * * * *", "targetMB": 256, "suspend": True}}
    apply(kubectl, pipeline(name, changed), namespace=namespace)
    updated = wait_for("the CronJob to follow the spec", lambda: (
        (c := cronjob(kubectl, namespace, name)) and c["spec"]["schedule"] == "*/5 * * * *" and c))
    assert updated["spec"]["suspend"] is True
    assert updated["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == \
        ["--target-mb", "256"]

    # Deleted by hand: put back.
    ok(kubectl("delete", "cronjob", f"{name}-compactor", "-n", namespace))
    wait_for("the deleted CronJob to come back", lambda: (
        (c := cronjob(kubectl, namespace, name)) and c["metadata"]["uid"] != updated["metadata"]["uid"]))

    # Disabled: the CronJob goes, and the garbage collector takes its Jobs.
    apply(kubectl, pipeline(name, {**base, "compaction": {"enabled": False}}), namespace=namespace)
    wait_for("the CronJob to be deleted", lambda: cronjob(kubectl, namespace, name) is None)
    wait_for("its Jobs to be collected", lambda: not jobs_of(kubectl, namespace, name), timeout=90)
    wait_for("status.compaction to be cleared", lambda: "compaction" not in (
        (get(kubectl, "zeekpipeline", name, namespace) or {}).get("status") or {"compaction": True}))

    # Enabled again, then the pipeline deleted: the CronJob is garbage-collected with it.
    apply(kubectl, pipeline(name, base), namespace=namespace)
    wait_for("the CronJob again", lambda: cronjob(kubectl, namespace, name))
    ok(kubectl("delete", "zeekpipeline", name, "-n", namespace, "--wait=true", "--timeout=60s"))
    wait_for("the CronJob to go with the pipeline", lambda: cronjob(kubectl, namespace, name) is None, timeout=90)


def test_jobs_on_s3_carry_the_writers_credentials_and_no_volume(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, kafka_bootstrap: str
) -> None:
    name = unique("cjs3")
    apply(kubectl, s3_secret(f"{name}-keys"), namespace=namespace)
    spec = {"kafka": {"bootstrapServers": [kafka_bootstrap]},
            "writer": {"storage": {"type": "s3", "s3": {"bucket": "zeek-lake", "prefix": "lab",
                                                        "endpoint": "http://127.0.0.1:8333",
                                                        "credentialsSecret": {"name": f"{name}-keys"}}}},
            "compaction": {"schedule": EVERY_MINUTE}}
    apply(kubectl, pipeline(name, spec), namespace=namespace)
    writer = wait_for("the writer", lambda: get(kubectl, "deployment", f"{name}-parquet-writer", namespace))
    # `kubectl create job --from=cronjob/...` makes a Job from the jobTemplate as it is now
    wait_for("the CronJob", lambda: cronjob(kubectl, namespace, name))
    ok(kubectl("create", "job", f"{name}-manual", f"--from=cronjob/{name}-compactor", "-n", namespace))
    manual = get(kubectl, "job", f"{name}-manual", namespace)
    scheduled = wait_for("the cronjob controller to start a Job", lambda: next(
        (j for j in jobs_of(kubectl, namespace, name) if j["metadata"]["name"] != f"{name}-manual"), None),
        timeout=SCHEDULE_WAIT)
    writer_env = {e["name"]: e.get("valueFrom") for e in writer["spec"]["template"]["spec"]["containers"][0]["env"]}
    for job in (manual, scheduled):
        assert job is not None
        container = job_container(job)
        assert container["args"][:3] == ["compact", "--output", "s3://zeek-lake/lab"]
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        for key in ("ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ACCESS_KEY", "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY"):
            assert env[key] == writer_env[key]
            assert env[key]["secretKeyRef"]["name"] == f"{name}-keys"
        assert "parquet" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
        assert "affinity" not in job["spec"]["template"]["spec"]
    ok(kubectl("delete", "zeekpipeline", name, "-n", namespace, "--wait=true", "--timeout=60s"))
