"""spec.writer.iceberg on the real control plane: a pipeline with the Iceberg output on a PostgreSQL catalog (its
password in a Secret) and an S3 warehouse gets the catalog settings in its ConfigMap, the credentials only as
secretKeyRefs in the writer's environment, and a second CronJob `<name>-iceberg-maintenance` running
`compact --iceberg` beside the unchanged Hive compactor. The API server's CEL rules refuse an SQLite catalog
for more than one writer.

There is no node, so no pod runs; what `compact --iceberg` does is tested in the Iceberg maintenance tests.
The operator runs with the least-privilege Role of operator/rbac/.
"""

from __future__ import annotations

import base64
import json
import re
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

PASSWORD = "pg-pass-7c1e"  # the Secret's value: must appear in no object the operator writes
PREFIX = "ZEEK_PIPELINE_OUTPUT__ICEBERG__CATALOG__"
PG_URI = "postgresql+psycopg2://iceberg@postgres.db.svc:5432/iceberg"


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from throwaway_namespace(kubectl, "zp-iceberg")


@pytest.fixture(scope="module")
def operator(kube: Any, kubectl: Kubectl, namespace: str, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[OperatorProcess]:
    yield from running_operator(kube, kubectl, namespace, tmp_path_factory.mktemp("iceberg"))


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}


def first_container(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    found: dict[str, Any] = template["spec"]["containers"][0]
    return found


def test_iceberg_output_on_postgresql_and_s3_renders_env_configmap_and_cronjob(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, kafka_bootstrap: str
) -> None:
    name = unique("ice")
    apply(kubectl, secret(f"{name}-pg", {"password": PASSWORD}),
          secret(f"{name}-lake", {"AWS_ACCESS_KEY_ID": "lake", "AWS_SECRET_ACCESS_KEY": "lake-secret"}),
          namespace=namespace)
    spec = {"kafka": {"bootstrapServers": [kafka_bootstrap]},
            "writer": {"storage": {"type": "s3", "s3": {"bucket": "zeek-lake", "prefix": "lab",
                                                        "endpoint": "http://127.0.0.1:8333",
                                                        "credentialsSecret": {"name": f"{name}-lake"}}},
                       "replicas": 2,
                       "iceberg": {"enabled": True, "catalog": {
                           "uri": PG_URI, "passwordSecretRef": {"name": f"{name}-pg", "key": "password"}}}},
            "compaction": {"graceSeconds": 1800, "targetMB": 64}}
    apply(kubectl, pipeline(name, spec), namespace=namespace)

    maintenance = wait_for("the Iceberg maintenance CronJob",
                           lambda: get(kubectl, "cronjob", f"{name}-iceberg-maintenance", namespace))
    zp = get(kubectl, "zeekpipeline", name, namespace)
    assert zp is not None
    assert maintenance["metadata"]["ownerReferences"][0]["uid"] == zp["metadata"]["uid"]
    assert maintenance["metadata"]["labels"]["app.kubernetes.io/component"] == "iceberg-maintenance"
    job = first_container(maintenance)
    assert job["args"] == ["compact", "--iceberg", "--config", "/etc/zeek-pipeline",
                           "--grace-seconds", "1800", "--target-mb", "64"]
    catalog_refs = {f"{PREFIX}PASSWORD": (f"{name}-pg", "password"),
                    f"{PREFIX}S3__ACCESS_KEY": (f"{name}-lake", "AWS_ACCESS_KEY_ID"),
                    f"{PREFIX}S3__SECRET_KEY": (f"{name}-lake", "AWS_SECRET_ACCESS_KEY")}
    assert secret_refs(job) == catalog_refs

    # The Hive compactor is still there, with its own command and the Parquet keys only.
    compactor = get(kubectl, "cronjob", f"{name}-compactor", namespace)
    assert compactor is not None
    hive = first_container(compactor)
    assert hive["args"][:3] == ["compact", "--output", "s3://zeek-lake/lab"]
    assert not any(key.startswith(PREFIX) for key in secret_refs(hive))
    assert maintenance["spec"]["schedule"] == compactor["spec"]["schedule"]

    writer = wait_for("the writer", lambda: get(kubectl, "deployment", f"{name}-parquet-writer", namespace))
    refs = secret_refs(first_container(writer))
    assert {key: value for key, value in refs.items() if key.startswith(PREFIX)} == catalog_refs

    configmap = get(kubectl, "configmap", f"{name}-config", namespace)
    assert configmap is not None
    iceberg = json.loads(configmap["data"]["config.json"])["output"]["iceberg"]
    assert iceberg["enabled"] is True and iceberg["namespace"] == "zeek"
    assert iceberg["catalog"]["uri"] == PG_URI
    assert iceberg["catalog"]["warehouse"] == "s3://zeek-lake/lab-iceberg"
    for obj in (configmap, writer, maintenance, compactor):
        assert PASSWORD not in json.dumps(obj)
    assert not re.search(r'"(password|credential|token|access_key|secret_key)"', configmap["data"]["config.json"])

    wait_for("status.icebergMaintenance", lambda: (
        (get(kubectl, "zeekpipeline", name, namespace) or {}).get("status") or {}).get("icebergMaintenance"))

    # The Iceberg output off: the maintenance CronJob goes, the Hive one stays.
    spec["writer"]["iceberg"]["enabled"] = False
    apply(kubectl, pipeline(name, spec), namespace=namespace)
    wait_for("the maintenance CronJob to be deleted",
             lambda: get(kubectl, "cronjob", f"{name}-iceberg-maintenance", namespace) is None)
    assert get(kubectl, "cronjob", f"{name}-compactor", namespace) is not None
    configmap = wait_for("config.json without output.iceberg", lambda: (
        (c := get(kubectl, "configmap", f"{name}-config", namespace))
        and "iceberg" not in json.loads(c["data"]["config.json"])["output"] and c))
    assert configmap


@pytest.mark.parametrize("writer", [
    {"replicas": 2, "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}},
    {"storage": {"type": "s3", "s3": {"bucket": "zeek-lake"}}},
], ids=["two-writers-on-a-shared-volume", "s3-without-a-claim"])
def test_api_server_refuses_an_sqlite_catalog_beyond_one_writer_on_one_node(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, writer: dict[str, Any]
) -> None:
    spec = {"kafka": {"bootstrapServers": [kafka_bootstrap]}, "writer": {**writer, "iceberg": {"enabled": True}}}
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                     input=json.dumps(pipeline(unique("sqlite"), spec)))
    assert result.returncode != 0
    assert "an Iceberg sql catalog without uri is an SQLite file" in result.stderr, result.stderr
    with_postgres = {**spec, "writer": {**spec["writer"], "iceberg": {
        "enabled": True, "catalog": {"uri": PG_URI}}}}
    ok(kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
               input=json.dumps(pipeline(unique("pg"), with_postgres))))
