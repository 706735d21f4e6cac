"""Pure builders: a ZeekPipeline spec in, Kubernetes objects (plain dicts) out, plus the status it reports.

Nothing here talks to the API server, so every object and every condition can be unit-tested. The handlers
adopt the objects (`kopf.adopt`: owner reference, namespace) and create or patch them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from zeek_operator.render import (
    COMPACTOR,
    COMPONENTS,
    CONFIG_DIR,
    CONFIG_FILE,
    GEOIP_DIR,
    ICEBERG_MAINTENANCE,
    PARQUET_DIR,
    PORTS,
    TLS_DIR,
    TLS_FILES,
    parquet_base_path,
)
from zeek_operator.spec import GeoIpSpec, PipelineSpec, Resources
from zeek_pipeline.settings import env_name

Component = Literal["normalizer-enricher", "parquet-writer", "health"]
MANAGED_BY = "zeek-operator"
PIPELINE_LABEL = "zeek-pipeline.io/pipeline"
CONFIG_HASH_ANNOTATION = "zeek-pipeline.io/config-hash"
RUN_AS = 10001
DEFAULT_IMAGE_TAG = "0.1.0"  # replaced by the package version at import (see _image_tag)
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME = 45  # the longest child name is <name>-normalizer-enricher; Service names must stay DNS labels
MAX_CRONJOB_NAME = 52  # the API server's limit: a Job is named <cronjob>-<minutes since the epoch>


def _image_tag() -> str:
    try:
        from zeek_pipeline import __version__
    except ImportError:  # pragma: no cover - the operator always ships with the services
        return DEFAULT_IMAGE_TAG
    return __version__


# ------------------------------------------------------------------------------------------------ names


def configmap_name(name: str) -> str:
    return f"{name}-config"


def deployment_name(name: str, component: str) -> str:
    return f"{name}-{component}"


def cronjob_name(name: str, job: str = COMPACTOR) -> str:
    """`<name>-<job>` (compactor, iceberg-maintenance), shortened with a digest of the name past the CronJob
    limit (its Jobs append 11)."""
    full = f"{name}-{job}"
    if len(full) <= MAX_CRONJOB_NAME:
        return full
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[:MAX_CRONJOB_NAME - len(job) - 8].rstrip('-')}-{digest}-{job}"


def health_service_name(name: str) -> str:
    return f"{name}-health"


def metrics_service_name(name: str) -> str:
    return f"{name}-metrics"


def pvc_name(name: str, spec: PipelineSpec) -> str | None:
    """The claim the writer mounts (None for S3): the user's own, or `<name>-parquet` created by us."""
    storage = spec.writer.storage
    if storage.type != "pvc":
        return None
    return storage.pvc.claim_name or f"{name}-parquet"


def selector_labels(name: str, component: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "zeek-pipeline", PIPELINE_LABEL: name}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def labels(name: str, component: str | None = None) -> dict[str, str]:
    return {
        **selector_labels(name, component),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "zeek-pipeline",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": _image_tag(),
    }


def image(spec: PipelineSpec) -> str:
    return f"{spec.image.repository}:{spec.image.tag or _image_tag()}"


# --------------------------------------------------------------------------------------------- builders


def build_configmap(name: str, files: Mapping[str, str], config_hash: str) -> dict[str, Any]:
    """The services' config directory: config.json, normalization.json, schema.json."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": configmap_name(name), "labels": labels(name),
                     "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
        "data": dict(files),
    }


def build_service_account(name: str) -> dict[str, Any]:
    """The pods' identity; the services never call the Kubernetes API, so no token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "labels": labels(name)},
        "automountServiceAccountToken": False,
    }


def build_service(name: str, spec: PipelineSpec, kind: Literal["health", "metrics"] = "health") -> dict[str, Any]:
    """`health`: the dashboard (spec.health.serviceType/port). `metrics`: headless, every pod's http port."""
    if kind == "metrics":
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": metrics_service_name(name), "labels": labels(name)},
            "spec": {
                "clusterIP": "None",
                "selector": selector_labels(name),
                # Each container names its probe/metrics port "http": one Service port reaches all three.
                "ports": [{"name": "metrics", "port": 9090, "targetPort": "http", "protocol": "TCP"}],
                "publishNotReadyAddresses": True,
            },
        }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": health_service_name(name), "labels": labels(name, "health")},
        "spec": {
            "type": spec.health.service_type,
            "selector": selector_labels(name, "health"),
            "ports": [{"name": "http", "port": spec.health.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_pvc(name: str, spec: PipelineSpec) -> dict[str, Any] | None:
    """The Parquet volume when the spec asks the operator to create one (pvc storage without claimName)."""
    storage = spec.writer.storage
    if storage.type != "pvc" or storage.pvc.claim_name:
        return None
    pvc = storage.pvc
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{name}-parquet", "labels": labels(name, "parquet-writer")},
        "spec": {
            "accessModes": list(pvc.access_modes),
            "resources": {"requests": {"storage": str(pvc.size)}},
        },
    }
    if pvc.storage_class_name:
        body["spec"]["storageClassName"] = pvc.storage_class_name
    return body


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resources.requests:
        out["requests"] = {key: str(value) for key, value in resources.requests.items()}
    if resources.limits:
        out["limits"] = {key: str(value) for key, value in resources.limits.items()}
    return out


def _secret_env(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _uses_kafka(component: str) -> bool:
    return component in COMPONENTS  # the CronJobs only read and write the lake


def _uses_lake(component: str) -> bool:
    """Mounts the writer's claim (the Hive lake; an SQLite catalog and the default warehouse live there too)."""
    return component in ("parquet-writer", COMPACTOR, ICEBERG_MAINTENANCE)


def _uses_hive(component: str) -> bool:
    return component in ("parquet-writer", COMPACTOR)


def _uses_iceberg(component: str, spec: PipelineSpec) -> bool:
    return spec.writer.iceberg.enabled and component in ("parquet-writer", ICEBERG_MAINTENANCE)


def _iceberg_env(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The catalog's and the warehouse's credentials, each from its Secret (config.json holds none)."""
    catalog = spec.writer.iceberg.catalog
    env = []
    for key, ref in (("password", catalog.password_secret_ref), ("credential", catalog.credential_secret_ref),
                     ("token", catalog.token_secret_ref)):
        if ref is not None:
            env.append(_secret_env(env_name("output", "iceberg", "catalog", key), ref.name, ref.key))
    creds = spec.writer.iceberg_s3.credentials_secret
    if creds is not None:
        env.append(_secret_env(env_name("output", "iceberg", "catalog", "s3", "access_key"), creds.name,
                               creds.access_key_key))
        env.append(_secret_env(env_name("output", "iceberg", "catalog", "s3", "secret_key"), creds.name,
                               creds.secret_key_key))
    return env


def _env(component: str, spec: PipelineSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    sasl = spec.kafka.security.sasl
    if sasl is not None and _uses_kafka(component):
        env.append(_secret_env(env_name("kafka", "security", "sasl_username"), sasl.secret_ref.name,
                               sasl.username_key))
        env.append(_secret_env(env_name("kafka", "security", "sasl_password"), sasl.secret_ref.name,
                               sasl.password_key))
    s3 = spec.writer.storage.s3
    if _uses_hive(component) and spec.writer.storage.type == "s3" and s3 and s3.credentials_secret:
        creds = s3.credentials_secret
        env.append(_secret_env(env_name("output", "parquet", "s3", "access_key"), creds.name, creds.access_key_key))
        env.append(_secret_env(env_name("output", "parquet", "s3", "secret_key"), creds.name, creds.secret_key_key))
    if _uses_iceberg(component, spec):
        env += _iceberg_env(spec)
    return env


def geoip_volume(geoip: GeoIpSpec) -> dict[str, Any]:
    """The volume holding the MaxMind DB files: the Secret's or ConfigMap's keys as files, or the claim."""
    items = [{"key": name, "path": name} for name in geoip.files]
    if geoip.secret_name is not None:
        return {"name": "geoip", "secret": {"secretName": geoip.secret_name, "items": items, "defaultMode": 0o440}}
    if geoip.config_map_name is not None:
        return {"name": "geoip", "configMap": {"name": geoip.config_map_name, "items": items, "defaultMode": 0o440}}
    return {"name": "geoip", "persistentVolumeClaim": {"claimName": geoip.claim_name, "readOnly": True}}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 3,
            "failureThreshold": failures}


def _component_spec(component: str, spec: PipelineSpec) -> tuple[int, Resources]:
    if component == "normalizer-enricher":
        return spec.normalizer.replicas, spec.normalizer.resources
    if component == "parquet-writer":
        return spec.writer.replicas, spec.writer.resources
    return (1 if spec.health.enabled else 0), spec.health.resources


def rollout_strategy(component: str) -> dict[str, Any]:
    """How a Deployment replaces its pods (the writer on a single-node volume is `Recreate`, see below).

    The consumer-group services replace one pod at a time and never run more than `replicas`: a surge pod
    would be a consumer beyond the partition count once replicas reach it (autoscaled to the cap, a
    one-partition topic), and every extra member costs the group a rebalance. The dashboard surges, so it
    stays reachable during a rollout.
    """
    if component == "health":
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def _volumes(component: str, name: str, spec: PipelineSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) of one component: the config, /tmp, and what it reads or writes (Kafka TLS
    material for the Kafka clients, the GeoIP files for the normalizer, the Parquet claim for the lake's users)."""
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": configmap_name(name)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    tls = spec.kafka.security.tls
    if tls is not None and _uses_kafka(component):
        items = [{"key": tls.ca_key, "path": TLS_FILES["ca"]}]
        if tls.cert_key and tls.key_key:
            items += [{"key": tls.cert_key, "path": TLS_FILES["cert"]}, {"key": tls.key_key, "path": TLS_FILES["key"]}]
        mounts.append({"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "kafka-tls", "secret": {"secretName": tls.secret_ref.name, "items": items,
                                                         "defaultMode": 0o440}})
    if component == "normalizer-enricher" and spec.enrich.geoip is not None:
        mounts.append({"name": "geoip", "mountPath": GEOIP_DIR, "readOnly": True})
        volumes.append(geoip_volume(spec.enrich.geoip))
    claim = pvc_name(name, spec)
    if _uses_lake(component) and claim is not None:
        mounts.append({"name": "parquet", "mountPath": PARQUET_DIR})
        volumes.append({"name": "parquet", "persistentVolumeClaim": {"claimName": claim}})
    return mounts, volumes


def _single_node_claim(name: str, spec: PipelineSpec) -> bool:
    """The lake is a claim that attaches to one node at a time (not ReadWriteMany)."""
    return pvc_name(name, spec) is not None and "ReadWriteMany" not in spec.writer.storage.pvc.access_modes


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}}


def _pod_spec(component: str, name: str, spec: PipelineSpec, container: dict[str, Any],
              volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """What every pod of the pipeline shares: its identity, non-root and seccomp, pull secrets."""
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        # No docker-link style variables (ZEEK_PIPELINE_HEALTH_PORT=tcp://... for the Service <name>-health):
        # the services read ZEEK_PIPELINE_* as settings, and nothing here uses links (DNS names do).
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # the writer flushes its open files and commits on SIGTERM; the normalizer ends its transaction
        "terminationGracePeriodSeconds": {"parquet-writer": 90, "normalizer-enricher": 60}.get(component, 15),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.image.pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in spec.image.pull_secrets]
    return pod_spec


def build_deployment(
    component: str, name: str, spec: PipelineSpec, config_hash: str, replicas: int | None = None
) -> dict[str, Any]:
    """One service: non-root, read-only root filesystem, probes on /healthz and /readyz, config hash annotation.

    `replicas` overrides the spec's count (the autoscaler's decision).
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")
    spec_replicas, resources = _component_spec(component, spec)
    mounts, volumes = _volumes(component, name, spec)
    strategy = rollout_strategy(component)
    if component == "parquet-writer" and _single_node_claim(name, spec):
        strategy = {"type": "Recreate"}  # a single-node volume cannot be attached to a surge pod elsewhere
    container = {
        "name": component,
        "image": image(spec),
        "imagePullPolicy": spec.image.pull_policy,
        "command": ["zeek-pipeline"],
        "args": [component, "--config", CONFIG_FILE],
        "env": _env(component, spec),
        "ports": [{"name": "http", "containerPort": PORTS[component], "protocol": "TCP"}],
        "startupProbe": _probe("/healthz", 2, 60),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 3),
        "resources": _resources(resources),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
        # A service that cannot start (a config error: a bad rule, a missing GeoIP database) prints one line
        # and exits 2; the kubelet keeps that line as the container's termination message, shown by
        # `kubectl describe pod` and in the pod status, so a restart loop always carries its reason.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec = _pod_spec(component, name, spec, container, volumes)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(name, component), "labels": labels(name, component),
                     "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
        "spec": {
            "replicas": spec_replicas if replicas is None else replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(name, component)},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": labels(name, component),
                             "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
                "spec": pod_spec,
            },
        },
    }


def build_cronjob(name: str, spec: PipelineSpec, config_hash: str, job: str = COMPACTOR) -> dict[str, Any]:
    """`zeek-pipeline compact` of the writer's output, on spec.compaction.schedule.

    `job` ICEBERG_MAINTENANCE builds its twin `<name>-iceberg-maintenance` (`compact --iceberg`, the catalog's
    secrets instead of the Parquet output's): a CronJob of its own, so the Hive one stays as it was and each
    shows its own last run in `kubectl get cronjobs`.

    The pod gets what the writer has for the lake and nothing for Kafka: config.json (the S3 endpoint and
    region), the S3 key pair from the Secret, or the Parquet claim at the same path. One run at a time
    (Forbid; the command is safe beside another compactor anyway, e.g. a manual run), a run missed by more
    than startingDeadlineSeconds is skipped (the next one does its work), a killed run is recovered by the
    next. On a single-node claim the pod must run where the writer's pod has the volume attached.
    """
    compaction = spec.compaction
    mounts, volumes = _volumes(job, name, spec)  # outputs stream to the claim or S3, not via /tmp
    container = {
        "name": job,
        "image": image(spec),
        "imagePullPolicy": spec.image.pull_policy,
        "command": ["zeek-pipeline"],
        "args": iceberg_maintenance_args(spec) if job == ICEBERG_MAINTENANCE else compact_args(spec),
        "env": _env(job, spec),
        "resources": _resources(compaction.resources),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec = _pod_spec(job, name, spec, container, volumes)
    pod_spec["restartPolicy"] = "Never"  # a failed run keeps its pod (and log); backoffLimit retries in a new one
    if _single_node_claim(name, spec):
        pod_spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": selector_labels(name, "parquet-writer")},
            "topologyKey": "kubernetes.io/hostname",
        }]}}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name(name, job), "labels": labels(name, job),
                     "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
        "spec": {
            "schedule": compaction.schedule,
            "suspend": compaction.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(name, job)},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": compaction.active_deadline_seconds,
                    "template": {
                        "metadata": {"labels": labels(name, job),
                                     "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
                        "spec": pod_spec,
                    },
                },
            },
        },
    }


def compact_args(spec: PipelineSpec) -> list[str]:
    """The compactor's arguments: the writer's output, its config directory, the spec's thresholds."""
    compaction = spec.compaction
    return ["compact", "--output", parquet_base_path(spec), "--config", CONFIG_DIR,
            "--grace-seconds", str(compaction.grace_seconds), "--target-mb", str(compaction.target_mb)]


def iceberg_maintenance_args(spec: PipelineSpec) -> list[str]:
    """`compact --iceberg`: the tables of config.json's output.iceberg, with the Hive compaction's thresholds."""
    compaction = spec.compaction
    return ["compact", "--iceberg", "--config", CONFIG_DIR,
            "--grace-seconds", str(compaction.grace_seconds), "--target-mb", str(compaction.target_mb)]


def build_children(
    name: str, spec: PipelineSpec, files: Mapping[str, str], config_hash: str,
    replicas: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Every object the pipeline owns, in creation order (config and identity before the pods)."""
    replicas = replicas or {}
    children = [build_service_account(name), build_configmap(name, files, config_hash)]
    pvc = build_pvc(name, spec)
    if pvc is not None:
        children.append(pvc)
    for component in COMPONENTS:
        if component == "health" and not spec.health.enabled:
            continue
        children.append(build_deployment(component, name, spec, config_hash, replicas.get(component)))
    if spec.health.enabled:
        children.append(build_service(name, spec, "health"))
    children.append(build_service(name, spec, "metrics"))
    if spec.compaction_enabled:
        children.append(build_cronjob(name, spec, config_hash))
    if spec.iceberg_maintenance_enabled:
        children.append(build_cronjob(name, spec, config_hash, ICEBERG_MAINTENANCE))
    return children


def obsolete_children(name: str, spec: PipelineSpec) -> list[tuple[str, str]]:
    """(kind, name) of children a previous spec may have created that this one does not want."""
    obsolete = []
    if not spec.health.enabled:
        obsolete += [("Deployment", deployment_name(name, "health")), ("Service", health_service_name(name))]
    if not spec.compaction_enabled:
        obsolete.append(("CronJob", cronjob_name(name)))
    if not spec.iceberg_maintenance_enabled:
        obsolete.append(("CronJob", cronjob_name(name, ICEBERG_MAINTENANCE)))
    return obsolete


def health_url(name: str, namespace: str, spec: PipelineSpec) -> str:
    if not spec.health.enabled:
        return ""
    return f"http://{health_service_name(name)}.{namespace}.svc:{spec.health.port}/"


# ----------------------------------------------------------------------------------------------- status

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[Condition], generation: int, now: str | None = None
) -> list[dict[str, Any]]:
    """Conditions as stored: lastTransitionTime changes only when a condition's status changes."""
    previous = {item.get("type"): item for item in old or []}
    stamp = now or _now()
    out = []
    for cond in new:
        before = previous.get(cond.type)
        changed = before is None or before.get("status") != cond.status
        out.append({
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": stamp if changed or not before else before.get("lastTransitionTime", stamp),
            "observedGeneration": generation,
        })
    return out


def component_counts(deployment: Mapping[str, Any] | None, desired: int) -> dict[str, int]:
    status = (deployment or {}).get("status") or {}
    return {
        "desiredReplicas": desired,
        "replicas": int(status.get("replicas") or 0),
        "readyReplicas": int(status.get("readyReplicas") or 0),
        "updatedReplicas": int(status.get("updatedReplicas") or 0),
        "availableReplicas": int(status.get("availableReplicas") or 0),
    }


def _rolled_out(deployment: Mapping[str, Any], desired: int) -> bool:
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    return (int(status.get("updatedReplicas") or 0) >= desired
            and int(status.get("replicas") or 0) <= desired
            and int(status.get("availableReplicas") or 0) >= desired)


def _deployment_failure(deployment: Mapping[str, Any]) -> str | None:
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"{cond.get('reason')}: {cond.get('message')}"
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"ProgressDeadlineExceeded: {cond.get('message')}"
    return None


def compute_conditions(
    desired: Mapping[str, int],
    deployments: Mapping[str, Mapping[str, Any] | None],
    problem: tuple[str, str] | None = None,
) -> list[Condition]:
    """Ready / Progressing / Degraded from what the API server knows (no pod needs to run for the rest).

    desired: component -> replicas wanted (only the enabled components); deployments: component -> the live
    Deployment (None when missing). problem: (reason, message) of a spec or reference error.
    """
    failures = []
    missing = []
    rolling = []
    not_ready = []
    for component, want in desired.items():
        deployment = deployments.get(component)
        if deployment is None:
            missing.append(component)
            continue
        failure = _deployment_failure(deployment)
        if failure:
            failures.append(f"{component}: {failure}")
        if not _rolled_out(deployment, want):
            rolling.append(component)
        count = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        if count < want:
            not_ready.append(f"{component} {count}/{want} ready")
    if problem is not None:
        degraded = Condition("Degraded", "True", problem[0], problem[1])
    elif failures:
        degraded = Condition("Degraded", "True", "DeploymentFailing", "; ".join(failures))
    else:
        degraded = Condition("Degraded", "False", "AsExpected", "")
    if missing:
        progressing = Condition("Progressing", "True", "Creating", f"waiting for {', '.join(missing)}")
    elif rolling:
        progressing = Condition("Progressing", "True", "RollingOut", f"rolling out {', '.join(rolling)}")
    else:
        progressing = Condition("Progressing", "False", "RolloutComplete", "")
    if problem is not None:
        ready = Condition("Ready", "False", problem[0], problem[1])
    elif missing or not_ready:
        ready = Condition("Ready", "False", "ComponentsNotReady",
                          "; ".join([*(f"{c} missing" for c in missing), *not_ready]))
    elif failures:
        ready = Condition("Ready", "False", "DeploymentFailing", "; ".join(failures))
    else:
        ready = Condition("Ready", "True", "AllComponentsReady", "")
    return [ready, progressing, degraded]


def desired_replicas(spec: PipelineSpec, autoscaled: Mapping[str, int] | None = None) -> dict[str, int]:
    """Replicas per enabled component: the autoscaler's decision when it has one, else the spec."""
    autoscaled = autoscaled or {}
    out = {
        "normalizer-enricher": autoscaled.get("normalizer-enricher", spec.normalizer.replicas)
        if spec.normalizer.autoscaling.enabled else spec.normalizer.replicas,
        "parquet-writer": autoscaled.get("parquet-writer", spec.writer.replicas)
        if spec.writer.autoscaling.enabled else spec.writer.replicas,
    }
    if spec.health.enabled:
        out["health"] = 1
    return out


def compute_status(
    *,
    name: str,
    namespace: str,
    generation: int,
    spec: PipelineSpec | None,
    deployments: Mapping[str, Mapping[str, Any] | None],
    old_status: Mapping[str, Any] | None,
    desired: Mapping[str, int] | None = None,
    problem: tuple[str, str] | None = None,
    config_hash: str | None = None,
    now: str | None = None,
    cronjob: Mapping[str, Any] | None = None,
    iceberg_cronjob: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status subresource patch: conditions, per-component replicas, the printer-column summaries, and
    the compaction CronJobs' last runs (`cronjob`, `iceberg_cronjob`: the live ones, None when missing or
    disabled)."""
    old_status = old_status or {}
    wanted = desired or (desired_replicas(spec) if spec is not None else {})
    desired = {c: wanted[c] for c in COMPONENTS if c in wanted}  # stable order in messages
    conditions = compute_conditions(desired, deployments, problem)
    components: dict[str, Any] = {c: component_counts(deployments.get(c), want) for c, want in desired.items()}
    for component in COMPONENTS:
        components.setdefault(component, None)  # a disabled component's entry is removed by the merge patch
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(old_status.get("conditions"), conditions, generation, now),
        "components": components,
    }
    for key, component in (("normalizers", "normalizer-enricher"), ("writers", "parquet-writer")):
        counts = components.get(component)
        if counts is not None:
            status[key] = f"{counts['readyReplicas']}/{counts['desiredReplicas']}"
    if spec is not None:
        status["healthUrl"] = health_url(name, namespace, spec)
        status["compaction"] = compaction_status(spec, cronjob)
        status["icebergMaintenance"] = compaction_status(spec, iceberg_cronjob, ICEBERG_MAINTENANCE)
    if config_hash is not None:
        status["configHash"] = config_hash
    return status


def compaction_status(spec: PipelineSpec, cronjob: Mapping[str, Any] | None,
                      job: str = COMPACTOR) -> dict[str, Any] | None:
    """The CronJob's schedule and what its controller says about the runs; None (the key removed by the merge
    patch) when that CronJob is off. A time the controller has not set yet is left out, not cleared."""
    if not (spec.iceberg_maintenance_enabled if job == ICEBERG_MAINTENANCE else spec.compaction_enabled):
        return None
    live = (cronjob or {}).get("status") or {}
    status: dict[str, Any] = {"enabled": True, "schedule": spec.compaction.schedule,
                              "suspended": spec.compaction.suspend, "active": len(live.get("active") or [])}
    for key in ("lastScheduleTime", "lastSuccessfulTime"):
        if live.get(key):
            status[key] = live[key]
    return status
