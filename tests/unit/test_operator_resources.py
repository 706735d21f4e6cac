"""Pure builders: the rendered config, the Deployments, Services, ConfigMap, and the status conditions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_operator_spec import MINIMAL, with_
from zeek_operator import render, resources
from zeek_operator.render import config_hash, render_files
from zeek_operator.spec import SpecError, parse_spec
from zeek_pipeline.settings import load_settings

NAME = "lab"


def build(raw: dict[str, Any] = MINIMAL) -> tuple[Any, dict[str, str], str, list[dict[str, Any]]]:
    spec = parse_spec(raw)
    files = render_files(spec)
    digest = config_hash(files)
    return spec, files, digest, resources.build_children(NAME, spec, files, digest)


def by_kind(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in children if c["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def env_names(deployment: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("valueFrom") for item in container(deployment)["env"]}


def load_rendered(files: dict[str, str], tmp_path: Path, environ: dict[str, str] | None = None) -> Any:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return load_settings(tmp_path / "config.json", environ=environ or {})


def test_minimal_spec_builds_every_child() -> None:
    _, files, _, children = build()
    assert sorted((c["kind"], c["metadata"]["name"]) for c in children) == [
        ("ConfigMap", "lab-config"),
        ("CronJob", "lab-compactor"),
        ("Deployment", "lab-health"),
        ("Deployment", "lab-normalizer-enricher"),
        ("Deployment", "lab-parquet-writer"),
        ("PersistentVolumeClaim", "lab-parquet"),
        ("Service", "lab-health"),
        ("Service", "lab-metrics"),
        ("ServiceAccount", "lab"),
    ]
    assert set(files) == {"config.json", "normalization.json", "schema.json"}


def test_rendered_config_is_accepted_by_the_services_settings(tmp_path: Path) -> None:
    _, files, _, _ = build()
    settings = load_rendered(files, tmp_path)
    assert settings.kafka.brokers == ["redpanda.redpanda.svc.cluster.local:9092"]
    assert settings.output.parquet.base_path == render.PARQUET_DIR
    assert settings.log.path is None  # stdout only: the root filesystem is read-only
    assert (settings.normalizer.http_port, settings.writer.http_port, settings.health.port) == (8081, 8082, 8080)
    # the defaults come from the project's config/ files, byte for byte
    assert files["normalization.json"] == (Path(render.defaults_dir()) / "normalization.json").read_text()


def test_writer_threads_and_batch_size_reach_the_writer_settings(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "set").mkdir()
    assert load_rendered(build()[1], tmp_path / "default").writer.flush_threads == 2
    spec = with_("writer", {"flushThreads": 4, "batchSize": 2000})
    settings = load_rendered(build(spec)[1], tmp_path / "set")
    assert (settings.writer.flush_threads, settings.writer.batch_size) == (4, 2000)


def test_secrets_reach_the_pods_as_env_and_never_the_configmap(tmp_path: Path) -> None:
    raw = with_("kafka.security", {"protocol": "SASL_SSL", "sasl": {"secretRef": {"name": "kafka-user"}},
                                   "tls": {"secretRef": {"name": "kafka-ca"}}})
    raw = with_("writer.storage", {"type": "s3", "s3": {"bucket": "lake", "endpoint": "http://minio:9000",
                                                        "credentialsSecret": {"name": "s3-keys"}}}, raw)
    _, files, _, children = build(raw)
    deployments = by_kind(children, "Deployment")
    writer_env = env_names(deployments["lab-parquet-writer"])
    assert writer_env["ZEEK_PIPELINE_KAFKA__SECURITY__SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "kafka-user", "key": "password"}}
    assert writer_env["ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY"] == {
        "secretKeyRef": {"name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY" not in env_names(deployments["lab-normalizer-enricher"])
    assert writer_env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The env the pod would get, applied by the services' own loader, completes the configuration.
    settings = load_rendered(files, tmp_path, {
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_USERNAME": "zeek",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": "s3cr3t-pw",
        "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ACCESS_KEY": "AKIA",
        "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY": "wJalr",
    })
    assert settings.kafka.security.sasl_password.get_secret_value() == "s3cr3t-pw"
    assert settings.kafka.security.ssl_ca_location == f"{render.TLS_DIR}/ca.crt"
    assert settings.output.parquet.base_path == "s3://lake/zeek"
    assert (settings.output.parquet.s3.endpoint, settings.output.parquet.s3.scheme) == ("minio:9000", "http")
    assert "s3cr3t" not in json.dumps(files) and "password" not in files["config.json"]
    tls = [v for v in deployments["lab-health"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-tls"]
    assert tls[0]["secret"]["secretName"] == "kafka-ca"
    assert "PersistentVolumeClaim" not in {c["kind"] for c in children}


def test_deployment_runs_the_subcommand_non_root_read_only_with_probes() -> None:
    _, _, digest, children = build()
    for component, port in render.PORTS.items():
        deployment = by_kind(children, "Deployment")[f"lab-{component}"]
        c = container(deployment)
        assert c["image"] == f"ghcr.io/zeek-pipeline/zeek-pipeline:{resources._image_tag()}"
        assert c["command"] == ["zeek-pipeline"]
        assert c["args"] == [component, "--config", "/etc/zeek-pipeline/config.json"]
        assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["enableServiceLinks"] is False  # no ZEEK_PIPELINE_HEALTH_PORT=tcp://... for <name>-health
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
        assert deployment["spec"]["template"]["metadata"]["annotations"] == {resources.CONFIG_HASH_ANNOTATION: digest}
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items()
    writer = by_kind(children, "Deployment")["lab-parquet-writer"]
    assert writer["spec"]["strategy"] == {"type": "Recreate"}  # a ReadWriteOnce volume
    normalizer = by_kind(children, "Deployment")["lab-normalizer-enricher"]
    # never a surge consumer beyond the partition count: one pod down, then its replacement
    assert normalizer["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    health = by_kind(children, "Deployment")["lab-health"]
    assert health["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert {"name": "parquet", "persistentVolumeClaim": {"claimName": "lab-parquet"}} in \
        writer["spec"]["template"]["spec"]["volumes"]


def test_flush_change_changes_the_config_hash_but_replicas_do_not() -> None:
    _, _, base, _ = build()
    _, _, flushed, _ = build(with_("writer.flush", {"intervalSeconds": 30}))
    _, _, scaled, children = build(with_("normalizer.replicas", 3))
    assert flushed != base
    assert scaled == base
    assert by_kind(children, "Deployment")["lab-normalizer-enricher"]["spec"]["replicas"] == 3


def test_image_tag_and_pull_policy_follow_the_spec() -> None:
    _, _, _, children = build(with_("image", {"repository": "reg.local/zp", "tag": "1.2.3", "pullPolicy": "Always",
                                              "pullSecrets": ["regcred"]}))
    deployment = by_kind(children, "Deployment")["lab-normalizer-enricher"]
    assert container(deployment)["image"] == "reg.local/zp:1.2.3"
    assert container(deployment)["imagePullPolicy"] == "Always"
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_health_disabled_drops_its_deployment_and_service() -> None:
    spec, _, _, children = build(with_("health.enabled", False))
    names = {(c["kind"], c["metadata"]["name"]) for c in children}
    assert ("Deployment", "lab-health") not in names and ("Service", "lab-health") not in names
    assert resources.obsolete_children(NAME, spec)[:2] == [("Deployment", "lab-health"), ("Service", "lab-health")]


def test_services_select_the_right_pods() -> None:
    _, _, _, children = build(with_("health", {"serviceType": "NodePort", "port": 80}))
    services = by_kind(children, "Service")
    health = services["lab-health"]["spec"]
    assert health["type"] == "NodePort"
    assert health["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert health["selector"]["app.kubernetes.io/component"] == "health"
    metrics = services["lab-metrics"]["spec"]
    assert metrics["clusterIP"] == "None" and "app.kubernetes.io/component" not in metrics["selector"]


def test_inline_rules_override_and_bad_rules_name_the_field() -> None:
    rules = {"dns": {"promote": {"ts": "event_time", "query": "dns_query"}, "static": {"event_type": "dns"}}}
    _, files, _, _ = build(with_("normalization", {"rules": rules}))
    assert json.loads(files["normalization.json"]) == rules
    with pytest.raises(SpecError) as caught:
        build(with_("normalization", {"rules": {"dns": {"promote": {"ts": "ingest_time"}}}}))
    assert caught.value.field == "spec.normalization.rules"
    assert caught.value.reason == "InvalidNormalization"
    assert "ingest_time" in str(caught.value)


def test_bad_local_network_is_reported_on_the_enrich_field() -> None:
    with pytest.raises(SpecError) as caught:
        build(with_("enrich", {"localNetworks": ["10.0.0.0/33"]}))
    assert caught.value.field == "spec.enrich.localNetworks"


# ----------------------------------------------------------------------------------------------- status


def deployment_state(desired: int, ready: int, updated: int | None = None, generation: int = 1,
                     observed: int = 1, conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    updated = desired if updated is None else updated
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "replicas": desired, "readyReplicas": ready,
                       "updatedReplicas": updated, "availableReplicas": ready, "conditions": conditions or []}}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def status_for(deployments: dict[str, Any], problem: tuple[str, str] | None = None,
               old: dict[str, Any] | None = None, now: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return resources.compute_status(name=NAME, namespace="ns", generation=2, spec=parse_spec(MINIMAL),
                                    deployments=deployments, old_status=old, problem=problem, now=now)


def test_status_without_running_pods_is_progressing_and_not_ready() -> None:
    status = status_for({c: deployment_state(1, 0, updated=0) for c in render.COMPONENTS})
    assert conditions(status) == {"Ready": ("False", "ComponentsNotReady"), "Progressing": ("True", "RollingOut"),
                                  "Degraded": ("False", "AsExpected")}
    assert status["normalizers"] == "0/1" and status["writers"] == "0/1"
    assert status["healthUrl"] == "http://lab-health.ns.svc:8080/"
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_status_with_all_pods_ready_is_ready() -> None:
    status = status_for({c: deployment_state(1, 1) for c in render.COMPONENTS})
    assert conditions(status) == {"Ready": ("True", "AllComponentsReady"), "Progressing": ("False", "RolloutComplete"),
                                  "Degraded": ("False", "AsExpected")}


def test_status_reports_missing_children_and_failing_deployments() -> None:
    failing = deployment_state(1, 0, conditions=[{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                                  "message": "quota exceeded"}])
    status = status_for({"normalizer-enricher": failing, "parquet-writer": None, "health": deployment_state(1, 1)})
    assert conditions(status)["Degraded"] == ("True", "DeploymentFailing")
    assert conditions(status)["Progressing"] == ("True", "Creating")
    assert "quota exceeded" in next(c["message"] for c in status["conditions"] if c["type"] == "Degraded")


def test_spec_problem_is_degraded_and_not_ready() -> None:
    status = status_for({c: deployment_state(1, 1) for c in render.COMPONENTS},
                        problem=("MissingSecret", "spec.kafka.security.sasl.secretRef: Secret 'x' not found"))
    assert conditions(status)["Degraded"] == ("True", "MissingSecret")
    assert conditions(status)["Ready"] == ("False", "MissingSecret")


def test_last_transition_time_only_moves_when_the_status_flips() -> None:
    rolling = {c: deployment_state(1, 0, updated=0) for c in render.COMPONENTS}
    first = status_for(rolling, now="2026-01-01T00:00:00Z")
    again = status_for(rolling, old=first, now="2026-01-01T00:05:00Z")
    assert [c["lastTransitionTime"] for c in again["conditions"]] == ["2026-01-01T00:00:00Z"] * 3
    ready = status_for({c: deployment_state(1, 1) for c in render.COMPONENTS}, old=again, now="2026-01-01T00:09:00Z")
    stamps = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert stamps == {"Ready": "2026-01-01T00:09:00Z", "Progressing": "2026-01-01T00:09:00Z",
                      "Degraded": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("password", ["123456", "true", "null", "p@ss word"])
def test_any_secret_value_from_env_reaches_the_settings_as_text(password: str, tmp_path: Path) -> None:
    raw = with_("kafka.security", {"protocol": "SASL_PLAINTEXT", "sasl": {"secretRef": {"name": "kafka-user"}}})
    _, files, _, _ = build(raw)
    settings = load_rendered(files, tmp_path, {"ZEEK_PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": password})
    assert settings.kafka.security.sasl_password.get_secret_value() == password
