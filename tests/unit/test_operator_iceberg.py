"""spec.writer.iceberg: the writer's Iceberg output (catalog credentials from Secrets only) and the
`<name>-iceberg-maintenance` CronJob that runs `zeek-pipeline compact --iceberg` beside the Hive compactor."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_operator_compaction import S3, SASL_TLS, pod, writer
from tests.unit.test_operator_resources import NAME, build, by_kind, env_names, load_rendered
from tests.unit.test_operator_spec import MINIMAL, problems, with_
from tests.unit.test_operator_tls_secret import SecretsOnly
from zeek_operator import crd, resources
from zeek_operator.reconcile import read_secrets
from zeek_operator.render import CONFIG_DIR, PARQUET_DIR
from zeek_operator.spec import ICEBERG_SQLITE_MESSAGE, parse_spec

MAINTENANCE = f"{NAME}-iceberg-maintenance"
PREFIX = "ZEEK_PIPELINE_OUTPUT__ICEBERG__CATALOG__"
POSTGRES = {"enabled": True, "namespace": "zeek_prod",
            "catalog": {"type": "sql", "uri": "postgresql+psycopg2://iceberg@postgres.db.svc:5432/iceberg",
                        "passwordSecretRef": {"name": "iceberg-db", "key": "password"}}}
# PostgreSQL catalog, warehouse on the writer's S3 bucket (its endpoint and keys inherited)
PG_S3 = with_("writer.iceberg", POSTGRES, S3)
SQLITE = with_("writer.iceberg.enabled", True)
REST = with_("writer.iceberg", {"enabled": True, "catalog": {
    "type": "rest", "uri": "https://polaris.lake.svc:8181/api/catalog", "warehouse": "zeek",
    "credentialSecretRef": {"name": "polaris-client", "key": "credential"},
    "s3": {"endpoint": "http://minio.lake.svc:9000", "region": "eu-west-1",
           "credentialsSecret": {"name": "minio-keys", "accessKeyKey": "user", "secretKeyKey": "pass"}}}})


def maintenance(raw: dict[str, Any]) -> dict[str, Any]:
    return by_kind(build(raw)[3], "CronJob")[MAINTENANCE]


def cronjob(raw: dict[str, Any]) -> dict[str, Any]:
    return by_kind(build(raw)[3], "CronJob")[f"{NAME}-compactor"]


def config(raw: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(build(raw)[1]["config.json"])
    return found


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {item["name"]: (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
            for item in container["env"] if "secretKeyRef" in (item.get("valueFrom") or {})}


# ----------------------------------------------------------------------------------------------- secrets


def test_catalog_password_and_warehouse_keys_reach_the_writer_from_secrets() -> None:
    refs = secret_refs(writer(PG_S3)["spec"]["template"]["spec"]["containers"][0])
    assert {key: value for key, value in refs.items() if key.startswith(PREFIX)} == {
        f"{PREFIX}PASSWORD": ("iceberg-db", "password"),
        f"{PREFIX}S3__ACCESS_KEY": ("lake-keys", "AWS_ACCESS_KEY_ID"),  # the writer's bucket keys, inherited
        f"{PREFIX}S3__SECRET_KEY": ("lake-keys", "AWS_SECRET_ACCESS_KEY"),
    }
    refs = secret_refs(writer(REST)["spec"]["template"]["spec"]["containers"][0])
    assert {key: value for key, value in refs.items() if key.startswith(PREFIX)} == {
        f"{PREFIX}CREDENTIAL": ("polaris-client", "credential"),
        f"{PREFIX}S3__ACCESS_KEY": ("minio-keys", "user"), f"{PREFIX}S3__SECRET_KEY": ("minio-keys", "pass")}


def test_configmap_holds_the_catalog_but_no_secret(tmp_path: Path) -> None:
    files = build(PG_S3)[1]
    iceberg = json.loads(files["config.json"])["output"]["iceberg"]
    assert iceberg == {"enabled": True, "namespace": "zeek_prod", "catalog": {
        "type": "sql", "uri": "postgresql+psycopg2://iceberg@postgres.db.svc:5432/iceberg",
        "warehouse": "s3://zeek-lake/zeek/prod-iceberg",  # beside the lake, not under it
        "s3": {"endpoint": "seaweedfs.s3.svc:8333", "region": "us-east-1", "scheme": "http"}}}
    assert not re.search(r"password|credential|token|access_key|secret_key", json.dumps(iceberg))
    # the pod's view: config.json plus the Secret values in the environment the writer is given
    environ = {f"{PREFIX}PASSWORD": "s3cr3t-pw", f"{PREFIX}S3__ACCESS_KEY": "AK", f"{PREFIX}S3__SECRET_KEY": "SK"}
    settings = load_rendered(files, tmp_path, environ)
    catalog = settings.output.iceberg.catalog
    assert settings.output.iceberg.enabled and settings.output.iceberg.namespace == "zeek_prod"
    assert catalog.password.get_secret_value() == "s3cr3t-pw"
    assert (catalog.s3.access_key.get_secret_value(), catalog.s3.secret_key.get_secret_value()) == ("AK", "SK")
    from zeek_pipeline.iceberg.catalog import catalog_properties

    properties = catalog_properties(catalog, environ={})
    assert properties["uri"] == "postgresql+psycopg2://iceberg:s3cr3t-pw@postgres.db.svc:5432/iceberg"
    assert properties["warehouse"] == "s3://zeek-lake/zeek/prod-iceberg"
    assert properties["s3.endpoint"] == "http://seaweedfs.s3.svc:8333"


def test_iceberg_off_leaves_config_and_children_as_they_were() -> None:
    assert "iceberg" not in config(MINIMAL)["output"]
    assert "iceberg" not in config(with_("writer.iceberg", {**POSTGRES, "enabled": False}))["output"]
    assert list(by_kind(build(MINIMAL)[3], "CronJob")) == [f"{NAME}-compactor"]
    assert not any(key.startswith(PREFIX) for key in env_names(writer(PG_S3 | {"writer": {
        **PG_S3["writer"], "iceberg": {**POSTGRES, "enabled": False}}})))
    assert ("CronJob", MAINTENANCE) in resources.obsolete_children(NAME, parse_spec(MINIMAL))
    assert ("CronJob", MAINTENANCE) not in resources.obsolete_children(NAME, parse_spec(SQLITE))


def test_missing_catalog_secret_names_the_field() -> None:
    spec = parse_spec(with_("writer.iceberg", POSTGRES))
    kube: Any = SecretsOnly({})
    assert read_secrets(kube, "zeek", spec)[1] == (
        "MissingSecret", "spec.writer.iceberg.catalog.passwordSecretRef: Secret 'iceberg-db' not found in "
                         "namespace zeek")
    kube = SecretsOnly({"iceberg-db": {"pw": "x"}})
    assert read_secrets(kube, "zeek", spec)[1] == (
        "MissingSecret", "spec.writer.iceberg.catalog.passwordSecretRef: Secret 'iceberg-db' has no key(s) password")
    kube = SecretsOnly({"iceberg-db": {"password": "x"}})
    assert read_secrets(kube, "zeek", spec)[1] is None
    kube = SecretsOnly({"polaris-client": {"credential": "a:b"}})
    assert read_secrets(kube, "zeek", parse_spec(REST))[1] == (
        "MissingSecret", "spec.writer.iceberg.catalog.s3.credentialsSecret: Secret 'minio-keys' not found in "
                         "namespace zeek")


# ---------------------------------------------------------------------------------------------- cronjob


def test_maintenance_cronjob_runs_compact_iceberg_with_the_compaction_settings() -> None:
    raw = with_("compaction", {"schedule": "*/30 * * * *", "suspend": True, "graceSeconds": 7200, "targetMB": 256,
                               "activeDeadlineSeconds": 900}, PG_S3)
    job = maintenance(raw)
    container = pod(job)["containers"][0]
    assert container["name"] == "iceberg-maintenance"
    assert container["command"] == ["zeek-pipeline"]
    assert container["args"] == ["compact", "--iceberg", "--config", CONFIG_DIR,
                                 "--grace-seconds", "7200", "--target-mb", "256"]
    assert job["spec"]["schedule"] == "*/30 * * * *" and job["spec"]["suspend"] is True
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 900
    assert pod(job)["restartPolicy"] == "Never"
    for labels in (job["metadata"]["labels"], job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]):
        assert labels["app.kubernetes.io/component"] == "iceberg-maintenance"
    assert {v["name"] for v in pod(job)["volumes"]} == {"config", "tmp"}  # S3: no claim


def test_maintenance_gets_the_catalog_secrets_only() -> None:
    raw = with_("kafka.security", SASL_TLS["kafka"]["security"], PG_S3)
    container = pod(maintenance(raw))["containers"][0]
    assert secret_refs(container) == {
        f"{PREFIX}PASSWORD": ("iceberg-db", "password"),
        f"{PREFIX}S3__ACCESS_KEY": ("lake-keys", "AWS_ACCESS_KEY_ID"),
        f"{PREFIX}S3__SECRET_KEY": ("lake-keys", "AWS_SECRET_ACCESS_KEY")}  # no SASL, no Parquet keys
    assert "kafka-tls" not in {m["name"] for m in container["volumeMounts"]}


def test_hive_compactor_is_unchanged_by_the_iceberg_output() -> None:
    before, after = cronjob(S3), cronjob(PG_S3)
    assert before["metadata"]["annotations"] != after["metadata"]["annotations"]  # config.json changed

    def without_hash(job: dict[str, Any]) -> dict[str, Any]:
        job = copy.deepcopy(job)
        job["metadata"].pop("annotations")
        job["spec"]["jobTemplate"]["spec"]["template"]["metadata"].pop("annotations")
        return job

    assert without_hash(before) == without_hash(after)


def test_sqlite_catalog_lives_on_the_claim_and_maintenance_runs_beside_the_writer() -> None:
    iceberg = config(SQLITE)["output"]["iceberg"]
    assert iceberg["catalog"]["uri"] == f"sqlite:///{PARQUET_DIR}/_iceberg/catalog.db"
    assert iceberg["catalog"]["warehouse"] == f"{PARQUET_DIR}/_iceberg/warehouse"
    job_pod = pod(maintenance(SQLITE))
    assert job_pod["volumes"][-1] == {"name": "parquet", "persistentVolumeClaim": {"claimName": f"{NAME}-parquet"}}
    assert {"name": "parquet", "mountPath": PARQUET_DIR} in job_pod["containers"][0]["volumeMounts"]
    assert job_pod["affinity"] == pod(cronjob(SQLITE))["affinity"]  # the writer's node (ReadWriteOnce)
    assert secret_refs(job_pod["containers"][0]) == {}


def test_no_maintenance_without_compaction() -> None:
    raw = with_("compaction.enabled", False, PG_S3)
    assert by_kind(build(raw)[3], "CronJob") == {}
    assert ("CronJob", MAINTENANCE) in resources.obsolete_children(NAME, parse_spec(raw))
    rwop = with_("writer.storage.pvc.accessModes", ["ReadWriteOncePod"], SQLITE)  # only the writer may mount
    assert by_kind(build(rwop)[3], "CronJob") == {}
    assert "iceberg" in config(rwop)["output"]


def test_longest_pipeline_name_gives_a_valid_maintenance_cronjob_name() -> None:
    longest = "a" + "b" * (resources.MAX_NAME - 1)
    name = resources.cronjob_name(longest, "iceberg-maintenance")
    assert len(name) == resources.MAX_CRONJOB_NAME and name.endswith("-iceberg-maintenance")
    assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name)
    assert resources.cronjob_name(longest) != name


def test_status_reports_the_maintenance_runs() -> None:
    spec = parse_spec(PG_S3)
    live = {"status": {"lastScheduleTime": "2026-12-02T12:07:00Z", "lastSuccessfulTime": "2026-12-02T12:07:30Z"}}
    status = resources.compute_status(name=NAME, namespace="zeek", generation=1, spec=spec, deployments={},
                                      old_status=None, cronjob=None, iceberg_cronjob=live)
    assert status["icebergMaintenance"] == {"enabled": True, "schedule": "7 * * * *", "suspended": False,
                                            "active": 0, "lastScheduleTime": "2026-12-02T12:07:00Z",
                                            "lastSuccessfulTime": "2026-12-02T12:07:30Z"}
    assert "lastSuccessfulTime" not in status["compaction"]  # each CronJob its own runs
    off = resources.compute_status(name=NAME, namespace="zeek", generation=1, spec=parse_spec(S3),
                                   deployments={}, old_status=None, iceberg_cronjob=live)
    assert off["icebergMaintenance"] is None  # removed by the merge patch
    assert "icebergMaintenance" in crd.STATUS_SCHEMA["properties"]


def test_rendered_maintenance_runs_the_real_compact_iceberg_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CronJob's arguments and the rendered config.json (the claim's path mapped to a temporary lake) are
    accepted by `zeek-pipeline compact --iceberg`, which opens the SQLite catalog on the claim."""
    from zeek_pipeline import cli

    spec, files, _, _ = build(SQLITE)
    config_dir, lake = tmp_path / "config", tmp_path / "lake"
    config_dir.mkdir()
    lake.mkdir()
    for name, text in files.items():
        (config_dir / name).write_text(text.replace(PARQUET_DIR, str(lake)))
    args = [str(config_dir) if arg == CONFIG_DIR else arg for arg in resources.iceberg_maintenance_args(spec)]
    capsys.readouterr()
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iceberg"] == "sql:zeek" and not summary["errors"]
    assert (lake / "_iceberg" / "catalog.db").is_file()


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("raw", [
    with_("writer.replicas", 2, with_("writer.storage.pvc.accessModes", ["ReadWriteMany"], SQLITE)),
    with_("writer.storage.pvc.accessModes", ["ReadWriteMany"], SQLITE),
    with_("writer.iceberg.enabled", True, S3),
    with_("writer.autoscaling", {"enabled": True, "maxReplicas": 3},
          with_("writer.storage.pvc.accessModes", ["ReadWriteMany"], SQLITE)),
], ids=["two-writers", "shared-volume", "s3-no-claim", "autoscaling"])
def test_sqlite_catalog_is_refused_beyond_one_writer_on_one_node(raw: dict[str, Any]) -> None:
    found = problems(raw)
    assert found == [("spec.writer", ICEBERG_SQLITE_MESSAGE)]
    assert "PostgreSQL" in found[0][1] and "rest" in found[0][1]
    # the same shapes with a PostgreSQL catalog are fine
    assert parse_spec(with_("writer.iceberg", POSTGRES, raw)).writer.iceberg.enabled


def test_sqlite_catalog_with_one_writer_on_a_single_node_claim_is_accepted() -> None:
    assert parse_spec(SQLITE).writer.iceberg.catalog.sqlite
    assert parse_spec(with_("writer.storage.pvc.accessModes", ["ReadWriteOncePod"], SQLITE))


def test_crd_refuses_the_same_sqlite_shapes() -> None:
    rules = crd.spec_schema()["properties"]["writer"]["x-kubernetes-validations"]
    assert any(rule["message"] == ICEBERG_SQLITE_MESSAGE and "has(self.iceberg.catalog.uri)" in rule["rule"]
               for rule in rules)


@pytest.mark.parametrize(("catalog", "field", "words"), [
    ({"uri": "postgresql+psycopg2://iceberg:hunter2@db:5432/iceberg"}, "spec.writer.iceberg.catalog",
     "passwordSecretRef"),
    ({"type": "rest"}, "spec.writer.iceberg.catalog", "needs uri"),
    ({"type": "rest", "uri": "http://rest:8181", "passwordSecretRef": {"name": "a", "key": "b"}},
     "spec.writer.iceberg.catalog", "for a sql catalog"),
    ({"uri": "postgresql://db/iceberg", "tokenSecretRef": {"name": "a", "key": "b"}},
     "spec.writer.iceberg.catalog", "for a rest catalog"),
    ({"uri": "sqlite:////tmp/catalog.db"}, "spec.writer.iceberg.catalog", "leave uri unset"),
    ({"uri": "postgresql://db/iceberg", "warehouse": "/data/warehouse"}, "spec.writer.iceberg.catalog", "s3://"),
    ({"warehouse": "s3://elsewhere/iceberg"}, "spec.writer.iceberg.catalog", "leave warehouse unset for SQLite"),
    ({"uri": "postgresql://db/iceberg", "password": "hunter2"}, "spec.writer.iceberg.catalog.password",
     "Extra inputs"),
])
def test_bad_catalog_settings_name_the_field(catalog: dict[str, Any], field: str, words: str) -> None:
    found = problems(with_("writer.iceberg", {"enabled": True, "catalog": catalog}))
    assert found[0][0] == field and words in found[0][1]


def test_example_resource_renders_a_postgresql_catalog_on_s3() -> None:
    from tests.unit.test_packaging import load_yaml_docs

    path = Path(__file__).resolve().parents[2] / "config" / "examples" / "zeekpipeline-iceberg.yaml"
    doc = next(d for d in load_yaml_docs(path) if d["kind"] == "ZeekPipeline")
    spec = parse_spec(doc["spec"])
    assert spec.writer.iceberg.enabled and not spec.writer.iceberg.catalog.sqlite and spec.writer.replicas == 2
    children = resources.build_children(doc["metadata"]["name"], spec, build(doc["spec"])[1], "x")
    assert "zeek-iceberg-iceberg-maintenance" in by_kind(children, "CronJob")


def test_default_s3_warehouse_is_beside_the_lake_and_needs_a_prefix() -> None:
    """A warehouse under the lake's prefix would put the tables' Parquet files into `<lake>/**/*.parquet`."""
    whole_bucket = with_("writer.storage.s3.prefix", "", PG_S3)
    found = problems(whole_bucket)
    assert found[0][0] == "spec.writer" and "set iceberg.catalog.warehouse" in found[0][1]
    explicit = with_("writer.iceberg.catalog.warehouse", "s3://zeek-tables/iceberg", whole_bucket)
    assert config(explicit)["output"]["iceberg"]["catalog"]["warehouse"] == "s3://zeek-tables/iceberg"
    lake = config(PG_S3)["output"]["parquet"]["base_path"]
    warehouse = config(PG_S3)["output"]["iceberg"]["catalog"]["warehouse"]
    assert not warehouse.startswith(lake + "/")
