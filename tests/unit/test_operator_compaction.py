"""spec.compaction: the CronJob that runs `zeek-pipeline compact` with the parquet-writer's output settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_operator_resources import NAME, build, by_kind, env_names, load_rendered
from tests.unit.test_operator_spec import MINIMAL, problems, with_
from zeek_operator import crd, reconcile, resources
from zeek_operator.spec import parse_spec

S3 = with_("writer.storage", {"type": "s3", "s3": {"bucket": "zeek-lake", "prefix": "zeek/prod",
                                                    "endpoint": "http://seaweedfs.s3.svc:8333",
                                                    "credentialsSecret": {"name": "lake-keys"}}})
SASL_TLS = with_("kafka.security", {"protocol": "SASL_SSL",
                                    "sasl": {"secretRef": {"name": "kafka-user"}},
                                    "tls": {"secretRef": {"name": "kafka-ca"}}})


def cronjob(raw: dict[str, Any] = MINIMAL) -> dict[str, Any]:
    found = by_kind(build(raw)[3], "CronJob")
    assert list(found) == [f"{NAME}-compactor"]
    return found[f"{NAME}-compactor"]


def pod(job: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return found


def writer(raw: dict[str, Any] = MINIMAL) -> dict[str, Any]:
    return by_kind(build(raw)[3], "Deployment")[f"{NAME}-parquet-writer"]


def test_cronjob_runs_compact_on_the_writers_volume_with_its_config() -> None:
    job = cronjob()
    spec = pod(job)
    container = spec["containers"][0]
    assert container["command"] == ["zeek-pipeline"]
    assert container["args"] == ["compact", "--output", "/var/lib/zeek-pipeline/parquet",
                                 "--config", "/etc/zeek-pipeline", "--grace-seconds", "3600", "--target-mb", "128"]
    writer_pod = writer()["spec"]["template"]["spec"]
    writer_mounts = {m["name"]: m for m in writer_pod["containers"][0]["volumeMounts"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    writer_volumes = {v["name"]: v for v in writer_pod["volumes"]}
    for shared in ("config", "parquet"):  # the same ConfigMap and claim, at the same paths
        assert mounts[shared] == writer_mounts[shared]
        assert volumes[shared] == writer_volumes[shared]
    assert volumes["parquet"]["persistentVolumeClaim"]["claimName"] == f"{NAME}-parquet"
    assert container["image"] == writer_pod["containers"][0]["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"] == writer_pod["securityContext"]
    assert spec["serviceAccountName"] == NAME and spec["automountServiceAccountToken"] is False
    assert "livenessProbe" not in container and "ports" not in container  # a batch run, not a service


def test_cronjob_schedule_and_job_limits() -> None:
    job = cronjob()
    assert job["apiVersion"] == "batch/v1"
    assert job["spec"]["schedule"] == "7 * * * *"
    assert job["spec"]["suspend"] is False
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["startingDeadlineSeconds"] > 0
    assert job["spec"]["successfulJobsHistoryLimit"] >= 1 and job["spec"]["failedJobsHistoryLimit"] >= 1
    template = job["spec"]["jobTemplate"]["spec"]
    assert template["backoffLimit"] >= 1
    assert template["activeDeadlineSeconds"] == 3000
    assert pod(job)["restartPolicy"] == "Never"
    assert pod(job)["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "512Mi"},
                                                      "limits": {"cpu": "1", "memory": "2560Mi"}}
    for labels in (job["metadata"]["labels"], job["spec"]["jobTemplate"]["metadata"]["labels"],
                   job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]):
        assert labels["app.kubernetes.io/component"] == "compactor"
        assert labels["app.kubernetes.io/managed-by"] == "zeek-operator"


def test_on_a_single_node_claim_the_job_runs_beside_the_writer() -> None:
    affinity = pod(cronjob())["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert affinity == [{"labelSelector": {"matchLabels": resources.selector_labels(NAME, "parquet-writer")},
                         "topologyKey": "kubernetes.io/hostname"}]
    assert writer()["spec"]["selector"]["matchLabels"] == resources.selector_labels(NAME, "parquet-writer")
    shared = with_("writer.storage.pvc.accessModes", ["ReadWriteMany"])
    assert "affinity" not in pod(cronjob(shared))
    assert "affinity" not in pod(cronjob(S3))


def test_s3_output_gets_the_writers_bucket_and_credentials_only(tmp_path: Path) -> None:
    job = cronjob(S3)
    container = pod(job)["containers"][0]
    assert container["args"][:3] == ["compact", "--output", "s3://zeek-lake/zeek/prod"]
    assert "parquet" not in {v["name"] for v in pod(job)["volumes"]}
    compactor_env = {item["name"]: item.get("valueFrom") for item in container["env"]}
    writer_env = env_names(writer(S3))
    s3_keys = {key for key in writer_env if "__S3__" in key}
    assert s3_keys == {"ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ACCESS_KEY", "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY"}
    assert {key: compactor_env[key] for key in s3_keys} == {key: writer_env[key] for key in s3_keys}
    # The endpoint comes from the one ConfigMap (config.json), whose base_path is the --output
    files = build(S3)[1]
    settings = load_rendered(files, tmp_path)
    assert settings.output.parquet.base_path == container["args"][2]
    assert settings.output.parquet.s3.endpoint == "seaweedfs.s3.svc:8333"


def test_compactor_gets_no_kafka_credentials() -> None:
    raw = with_("kafka.security", SASL_TLS["kafka"]["security"], S3)
    container = pod(cronjob(raw))["containers"][0]
    names = {item["name"] for item in container["env"]}
    assert not any("SASL" in name for name in names)
    assert "kafka-tls" not in {m["name"] for m in container["volumeMounts"]}
    writer_container = writer(raw)["spec"]["template"]["spec"]["containers"][0]
    assert any("SASL" in item["name"] for item in writer_container["env"])  # the writer keeps them
    assert "kafka-tls" in {m["name"] for m in writer_container["volumeMounts"]}


def test_spec_changes_reach_the_cronjob() -> None:
    raw = with_("compaction", {"schedule": "*/15 2-5 * * 1-5", "suspend": True, "graceSeconds": 7200,
                               "targetMB": 512, "activeDeadlineSeconds": 600,
                               "resources": {"limits": {"memory": "2Gi"}}})
    job = cronjob(raw)
    container = pod(job)["containers"][0]
    assert job["spec"]["schedule"] == "*/15 2-5 * * 1-5"
    assert job["spec"]["suspend"] is True
    assert container["args"][-4:] == ["--grace-seconds", "7200", "--target-mb", "512"]
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 600
    assert container["resources"] == {"limits": {"memory": "2Gi"}}


def test_disabled_compaction_has_no_cronjob_and_removes_an_old_one() -> None:
    children = build(with_("compaction.enabled", False))[3]
    assert by_kind(children, "CronJob") == {}
    assert ("CronJob", f"{NAME}-compactor") in resources.obsolete_children(NAME, parse_spec(
        with_("compaction.enabled", False)))
    assert ("CronJob", f"{NAME}-compactor") not in resources.obsolete_children(NAME, parse_spec(MINIMAL))


def test_enabled_by_default_except_on_a_claim_only_the_writer_may_mount() -> None:
    assert parse_spec(MINIMAL).compaction_enabled
    assert parse_spec(S3).compaction_enabled
    only_writer = with_("writer.storage.pvc.accessModes", ["ReadWriteOncePod"])
    assert not parse_spec(only_writer).compaction_enabled
    assert by_kind(build(only_writer)[3], "CronJob") == {}
    found = problems(with_("compaction.enabled", True, only_writer))
    assert found[0][0] == "spec" and "ReadWriteOncePod" in found[0][1]


@pytest.mark.parametrize("schedule", ["7 * * * *", "@hourly", "0 */2 * * MON-FRI", "*/5 * * * ?"])
def test_cron_schedules_are_accepted(schedule: str) -> None:
    assert parse_spec(with_("compaction.schedule", schedule)).compaction.schedule == schedule


@pytest.mark.parametrize("schedule", ["", "7 * * *", "every hour", "@often", "7 * * * * *"])
def test_bad_schedule_names_the_field(schedule: str) -> None:
    assert problems(with_("compaction.schedule", schedule))[0][0] == "spec.compaction.schedule"


def test_crd_checks_the_schedule_with_the_same_pattern() -> None:
    prop = crd.spec_schema()["properties"]["compaction"]["properties"]["schedule"]
    assert prop["default"] == "7 * * * *"
    import re

    assert re.match(prop["pattern"], "7 * * * *") and not re.match(prop["pattern"], "7 * * *")


def test_longest_pipeline_name_gives_a_valid_cronjob_name() -> None:
    longest = "a" + "b" * (resources.MAX_NAME - 1)
    name = resources.cronjob_name(longest)
    assert len(name) <= resources.MAX_CRONJOB_NAME and name.endswith("-compactor")
    assert name != resources.cronjob_name("a" + "c" * (resources.MAX_NAME - 1))  # a digest, not a cut
    assert resources.cronjob_name("lab") == "lab-compactor"


def test_status_reports_the_last_runs() -> None:
    spec = parse_spec(MINIMAL)
    live = {"status": {"lastScheduleTime": "2026-12-02T12:07:00Z", "lastSuccessfulTime": "2026-12-02T11:07:41Z",
                       "active": [{"name": "lab-compactor-29412727"}]}}
    assert resources.compaction_status(spec, live) == {
        "enabled": True, "schedule": "7 * * * *", "suspended": False, "active": 1,
        "lastScheduleTime": "2026-12-02T12:07:00Z", "lastSuccessfulTime": "2026-12-02T11:07:41Z"}
    assert resources.compaction_status(spec, None) == {"enabled": True, "schedule": "7 * * * *",
                                                       "suspended": False, "active": 0}
    assert resources.compaction_status(parse_spec(with_("compaction.enabled", False)), live) is None
    status = resources.compute_status(name=NAME, namespace="zeek", generation=1, spec=spec, deployments={},
                                      old_status=None, cronjob=live)
    assert status["compaction"]["lastSuccessfulTime"] == "2026-12-02T11:07:41Z"


def test_cronjob_status_updates_are_not_drift_but_spec_edits_are() -> None:
    live = {"kind": "CronJob", "metadata": {"namespace": "zeek", "name": "drift-compactor", "generation": 2,
                                            "resourceVersion": "100"}}
    reconcile.record_applied(live)
    scheduled = {**live, "metadata": {**live["metadata"], "resourceVersion": "101"},
                 "status": {"lastScheduleTime": "2026-12-02T12:07:00Z"}}
    assert not reconcile.drifted(scheduled)  # the controller wrote its status: same generation
    edited = {**live, "metadata": {**live["metadata"], "generation": 3, "resourceVersion": "102"}}
    assert reconcile.drifted(edited)


def test_rendered_command_line_runs_the_real_compact_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    """The CronJob's arguments, with the pod's paths mapped to a temporary config directory and lake, are
    accepted by `zeek-pipeline compact` itself, which loads the rendered config and prints its summary."""
    import json

    from zeek_operator.render import CONFIG_DIR, PARQUET_DIR
    from zeek_pipeline import cli

    spec, files, _, _ = build(with_("compaction", {"graceSeconds": 60, "targetMB": 64}))
    config_dir, lake = tmp_path / "config", tmp_path / "lake"
    config_dir.mkdir()
    lake.mkdir()
    for name, text in files.items():
        (config_dir / name).write_text(text)
    args = resources.compact_args(spec)
    assert args[args.index("--output") + 1] == PARQUET_DIR and args[args.index("--config") + 1] == CONFIG_DIR
    local = [{PARQUET_DIR: str(lake), CONFIG_DIR: str(config_dir)}.get(arg, arg) for arg in args]
    parsed = cli.build_parser().parse_args(local)
    assert (parsed.grace_seconds, parsed.target_mb) == (60, 64)
    capsys.readouterr()
    assert cli.main(local) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"].endswith(str(lake)) and summary["dry_run"] is False
