"""One reconcile of a ZeekPipeline, and the periodic tick (lag, autoscaling, topic creation).

Called from the kopf handlers (create/update/resume, the timer, child events). Each call re-reads the
resource as stored and re-derives everything from it: parse the spec, read the Secrets/ConfigMap it
references, render the config files, build the children, create or patch them (server-side apply),
compute the status and write it. Calls for one pipeline are serialized by a lock that also covers the
status write, so each one starts from the previous one's status: condition transitions (and the events
they raise) are computed in order, whichever of the handler, the timer or a child event runs them.

A spec problem never touches the running children (the last good configuration keeps running): it
becomes the Degraded condition plus a Warning event naming the field. A missing Secret is reported the
same way, but the children are still applied, so the pods start as soon as the Secret appears.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from zeek_operator import resources
from zeek_operator.autoscale import (
    GroupLag,
    LagError,
    LagReader,
    Policy,
    admin_config,
    decide,
    input_rate,
    writer_backlog,
)
from zeek_operator.kube import ApiError, Kube
from zeek_operator.pem import pem_problem
from zeek_operator.render import COMPACTOR, COMPONENTS, ICEBERG_MAINTENANCE, Overrides, config_hash, render_files
from zeek_operator.spec import PipelineSpec, SpecError, TlsSpec, parse_spec

log = logging.getLogger("zeek_operator.reconcile")

# Degraded reasons that come from the resource itself (kept until a reconcile clears them); any other
# Degraded reason (a failing Deployment) is recomputed from the children on every status refresh.
PROBLEM_REASONS = frozenset({"InvalidSpec", "InvalidNormalization", "MissingSecret", "InvalidSecret",
                             "MissingConfigMap", "InvalidGeoIP"})
MAXMIND_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"  # every MaxMind DB file ends with its metadata after this
AUTOSCALED = {"normalizer-enricher": "normalizer", "parquet-writer": "writer"}


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    """What a reconcile wrote to the status, the events to post, and the resource they belong to."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    spec: PipelineSpec | None = None
    owner: dict[str, Any] = field(default_factory=dict)


Adopt = Callable[[dict[str, Any], Mapping[str, Any]], None]


_locks_guard = threading.Lock()
_locks: dict[tuple[str, str], threading.Lock] = {}
# (kind, namespace, name) -> the last generations (Deployments) or resourceVersions (other kinds) our own
# applies produced. A child event showing anything else was made by someone else and triggers a reconcile.
# The marker DELETED is set for children we removed ourselves (a component disabled in the spec).
_applied: dict[tuple[str, str, str], deque[str]] = {}
DELETED = "deleted"


def pipeline_lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _precise_stamp(moment: float) -> str:
    """With milliseconds: input rates are measured between two of these (ticks can be 2 s apart)."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Kinds whose metadata.generation counts spec changes only: their controllers' status writes are not drift.
GENERATION_KINDS = frozenset({"Deployment", "CronJob"})


def _fingerprint(child: Mapping[str, Any]) -> str:
    meta = child.get("metadata") or {}
    if child.get("kind") in GENERATION_KINDS:
        return f"g{meta.get('generation')}"
    return f"rv{meta.get('resourceVersion')}"


def _key(child: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = child.get("metadata") or {}
    return str(child.get("kind")), str(meta.get("namespace")), str(meta.get("name"))


def record_applied(child: Mapping[str, Any]) -> None:
    _applied.setdefault(_key(child), deque(maxlen=8)).append(_fingerprint(child))


def record_deleted(kind: str, namespace: str, name: str) -> None:
    _applied[(kind, namespace, name)] = deque([DELETED], maxlen=8)


def deleted_by_us(child: Mapping[str, Any]) -> bool:
    """An event of a child this operator removed itself (a component disabled in the spec)."""
    return DELETED in _applied.get(_key(child), ())


def drifted(child: Mapping[str, Any]) -> bool:
    """True when a child is not in a state one of our applies left (edited by hand, or unknown since a restart).

    A Deployment's (a CronJob's) generation only grows, so a late event of an older generation (one we already
    put back) is not drift; other kinds are compared by resourceVersion, which Kubernetes says not to order.
    """
    seen = _applied.get(_key(child), ())
    if child.get("kind") in GENERATION_KINDS:
        ours = [int(item[1:]) for item in seen if item.startswith("g") and item[1:].isdigit()]
        generation = int((child.get("metadata") or {}).get("generation") or 0)
        return not ours or generation > max(ours)
    return _fingerprint(child) not in seen


# ----------------------------------------------------------------------------------------- references


def _check_secret(kube: Kube, namespace: str, secret: str, keys: list[str], field_path: str,
                  found: dict[str, dict[str, str]]) -> tuple[str, str] | None:
    data = found.get(secret)
    if data is None:
        data = kube.secret_data(namespace, secret)
        if data is None:
            return "MissingSecret", f"{field_path}: Secret {secret!r} not found in namespace {namespace}"
        found[secret] = data
    missing = [key for key in keys if key not in data]
    if missing:
        return "MissingSecret", f"{field_path}: Secret {secret!r} has no key(s) {', '.join(missing)}"
    return None


def read_secrets(kube: Kube, namespace: str, spec: PipelineSpec) -> tuple[dict[str, dict[str, str]],
                                                                           tuple[str, str] | None]:
    """The referenced Secrets' data, and the first problem (a missing Secret or key) naming the field."""
    found: dict[str, dict[str, str]] = {}
    checks: list[tuple[str, list[str], str]] = []
    security = spec.kafka.security
    if security.sasl is not None:
        checks.append((security.sasl.secret_ref.name, [security.sasl.username_key, security.sasl.password_key],
                       "spec.kafka.security.sasl.secretRef"))
    if security.tls is not None:
        keys = [security.tls.ca_key] + [k for k in (security.tls.cert_key, security.tls.key_key) if k]
        checks.append((security.tls.secret_ref.name, keys, "spec.kafka.security.tls.secretRef"))
    s3 = spec.writer.storage.s3
    if spec.writer.storage.type == "s3" and s3 is not None and s3.credentials_secret is not None:
        creds = s3.credentials_secret
        checks.append((creds.name, [creds.access_key_key, creds.secret_key_key],
                       "spec.writer.storage.s3.credentialsSecret"))
    checks += _iceberg_secrets(spec)
    problem = None
    for secret, keys, field_path in checks:
        problem = problem or _check_secret(kube, namespace, secret, keys, field_path, found)
    if problem is None and security.tls is not None:
        problem = _check_tls_pem(security.tls, found.get(security.tls.secret_ref.name, {}))
    return found, problem


def _iceberg_secrets(spec: PipelineSpec) -> list[tuple[str, list[str], str]]:
    """(Secret, keys, field) of the Iceberg catalog's credentials, when the Iceberg output is on."""
    iceberg = spec.writer.iceberg
    if not iceberg.enabled:
        return []
    catalog = iceberg.catalog
    base = "spec.writer.iceberg.catalog"
    checks = [(ref.name, [ref.key], f"{base}.{field}") for field, ref in (
        ("passwordSecretRef", catalog.password_secret_ref), ("credentialSecretRef", catalog.credential_secret_ref),
        ("tokenSecretRef", catalog.token_secret_ref)) if ref is not None]
    creds = catalog.s3.credentials_secret if catalog.s3 is not None else None
    if creds is not None:  # inherited ones are checked as spec.writer.storage.s3.credentialsSecret
        checks.append((creds.name, [creds.access_key_key, creds.secret_key_key], f"{base}.s3.credentialsSecret"))
    return checks


def _check_tls_pem(tls: TlsSpec, data: Mapping[str, str]) -> tuple[str, str] | None:
    """The TLS Secret's keys must be PEM: librdkafka refuses anything else when a client is created."""
    wanted = [(tls.ca_key, "CERTIFICATE")]
    if tls.cert_key and tls.key_key:
        wanted += [(tls.cert_key, "CERTIFICATE"), (tls.key_key, "PRIVATE KEY")]
    for key, label in wanted:
        issue = pem_problem(data.get(key, ""), label)
        if issue is not None:
            return "InvalidSecret", (f"spec.kafka.security.tls.secretRef: key {key!r} of Secret "
                                     f"{tls.secret_ref.name!r} {issue}")
    return None


def geoip_problem(kube: Kube, namespace: str, spec: PipelineSpec) -> tuple[str, str] | None:
    """The GeoIP Secret or ConfigMap must exist and hold each named file as a MaxMind DB (a claim's files
    are only seen by the pod, which reports a bad one itself: exit 2 with the reason as termination message)."""
    import base64

    geoip = spec.enrich.geoip
    if geoip is None or geoip.claim_name is not None:
        return None
    kind, name = ("Secret", geoip.secret_name) if geoip.secret_name else ("ConfigMap", geoip.config_map_name)
    field_path = "spec.enrich.geoip.secretName" if kind == "Secret" else "spec.enrich.geoip.configMapName"
    missing_reason = "MissingSecret" if kind == "Secret" else "MissingConfigMap"
    found = kube.get(kind, namespace, str(name))
    if found is None:
        return missing_reason, f"{field_path}: {kind} {name!r} not found in namespace {namespace}"
    encoded = dict(found.get("data") or {}) if kind == "Secret" else dict(found.get("binaryData") or {})
    text = {} if kind == "Secret" else dict(found.get("data") or {})
    for key in geoip.files:
        if key in encoded:
            content = base64.b64decode(encoded[key])
        elif key in text:
            content = str(text[key]).encode("utf-8", "replace")  # binary cannot survive a ConfigMap's data
        else:
            where = "binaryData" if kind == "ConfigMap" else "data"
            return missing_reason, f"{field_path}: {kind} {name!r} has no {where} key {key!r}"
        if MAXMIND_METADATA_MARKER not in content[-128 * 1024:]:
            return "InvalidGeoIP", (f"{field_path}: key {key!r} of {kind} {name!r} is not a MaxMind DB file "
                                    "(no MaxMind metadata section)")
    return None


def read_overrides(kube: Kube, namespace: str, spec: PipelineSpec) -> Overrides:
    ref = spec.normalization.config_map_ref
    if ref is None:
        return Overrides()
    configmap = kube.get("ConfigMap", namespace, ref.name)
    if configmap is None:
        raise SpecError([("spec.normalization.configMapRef.name",
                          f"ConfigMap {ref.name!r} not found in namespace {namespace}")], reason="MissingConfigMap")
    data = configmap.get("data") or {}
    if ref.rules_key not in data and ref.schema_key not in data:
        raise SpecError([("spec.normalization.configMapRef",
                          f"ConfigMap {ref.name!r} has neither key {ref.rules_key!r} nor {ref.schema_key!r}")],
                        reason="MissingConfigMap")
    return Overrides(rules=data.get(ref.rules_key), schema=data.get(ref.schema_key))


# -------------------------------------------------------------------------------------------- reconcile


def _identity(body: Mapping[str, Any]) -> tuple[str, str, int]:
    meta = body.get("metadata") or {}
    return str(meta["name"]), str(meta["namespace"]), int(meta.get("generation") or 0)


def autoscaled_replicas(status: Mapping[str, Any] | None) -> dict[str, int]:
    """The autoscaler's last decision per component, as recorded in the status."""
    out = {}
    for component, entry in ((status or {}).get("autoscaling") or {}).items():
        if isinstance(entry, Mapping) and isinstance(entry.get("desiredReplicas"), int):
            out[component] = int(entry["desiredReplicas"])
    return out


def _live_deployments(kube: Kube, namespace: str, name: str) -> dict[str, dict[str, Any] | None]:
    return {c: kube.get("Deployment", namespace, resources.deployment_name(name, c)) for c in COMPONENTS}


def _degraded_events(old_status: Mapping[str, Any], status: Mapping[str, Any]) -> list[Event]:
    """A Warning when Degraded turns True or its message changes; a Normal event when it clears."""
    def degraded(s: Mapping[str, Any]) -> Mapping[str, Any]:
        return next((c for c in s.get("conditions") or [] if c.get("type") == "Degraded"), {})

    before, after = degraded(old_status), degraded(status)
    if after.get("status") == "True":
        if before.get("status") != "True" or before.get("message") != after.get("message"):
            return [Event("Warning", str(after.get("reason")), str(after.get("message")))]
    elif before.get("status") == "True":
        return [Event("Normal", "Recovered", f"no longer degraded (was {before.get('reason')})")]
    return []


def check_name(name: str) -> None:
    import re

    if len(name) > resources.MAX_NAME or not re.match(resources.NAME_PATTERN, name):
        raise SpecError([("metadata.name", f"{name!r} must be a DNS label of at most {resources.MAX_NAME} "
                                           "characters starting with a letter (children append suffixes)")])


def _fresh(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The resource as stored now (None when gone or being deleted: the garbage collector takes over)."""
    current = kube.get("ZeekPipeline", namespace, name)
    if current is None or current["metadata"].get("deletionTimestamp"):
        return None
    return current


def _commit(kube: Kube, outcome: Outcome, namespace: str, name: str) -> Outcome:
    """Write the status while still holding the lock, so every reconcile starts from the last one's status
    (its conditions' transitions, hence its events, are computed in order)."""
    try:
        kube.patch_status("ZeekPipeline", namespace, name, outcome.status)
    except ApiError as exc:
        if exc.status != 404:
            raise
    return outcome


def reconcile(kube: Kube, namespace: str, name: str, adopt: Adopt | None = None) -> Outcome | None:
    """Bring the children in line with the resource and write its status; None when it is gone."""
    with pipeline_lock(namespace, name):
        current = _fresh(kube, namespace, name)
        if current is None:
            return None
        return _commit(kube, _reconcile_locked(kube, current, None, adopt or _adopt), namespace, name)


def _adopt(child: dict[str, Any], owner: Mapping[str, Any]) -> None:
    import kopf

    kopf.adopt(child, owner=owner)  # type: ignore[arg-type]


def _reconcile_locked(kube: Kube, body: dict[str, Any], autoscaled: Mapping[str, int] | None,
                      adopt: Adopt) -> Outcome:
    name, namespace, generation = _identity(body)
    old_status = dict(body.get("status") or {})
    events: list[Event] = []
    try:
        check_name(name)
        spec = parse_spec(body.get("spec"))
        secrets, secret_problem = read_secrets(kube, namespace, spec)
        secret_problem = secret_problem or geoip_problem(kube, namespace, spec)
        files = render_files(spec, read_overrides(kube, namespace, spec))
    except SpecError as exc:
        # Leave the children alone: the last good configuration keeps running.
        status = resources.compute_status(
            name=name, namespace=namespace, generation=generation, spec=None,
            deployments=_live_deployments(kube, namespace, name), old_status=old_status,
            desired=_old_desired(old_status), problem=(exc.reason, str(exc)))
        return Outcome(status, _degraded_events(old_status, status), None, body)
    del secrets  # only their presence matters here; the pods read them through env/volumes
    digest = config_hash(files)
    replicas = resources.desired_replicas(spec, autoscaled if autoscaled is not None
                                          else autoscaled_replicas(old_status))
    deployments: dict[str, dict[str, Any] | None] = dict.fromkeys(COMPONENTS)
    cronjobs: dict[str, dict[str, Any]] = {}  # component label -> live CronJob
    for child in resources.build_children(name, spec, files, digest, replicas):
        child["metadata"]["namespace"] = namespace
        if child["kind"] != "PersistentVolumeClaim" or not spec.writer.storage.pvc.keep_on_delete:
            adopt(child, body)
        action, live = kube.ensure(child) if child["kind"] == "PersistentVolumeClaim" else kube.apply(child)
        record_applied(live)
        if action == "created":
            events.append(Event("Normal", "Created", f"{child['kind']} {child['metadata']['name']} created"))
        if child["kind"] == "Deployment":
            deployments[live["metadata"]["labels"]["app.kubernetes.io/component"]] = live
        elif child["kind"] == "CronJob":
            cronjobs[live["metadata"]["labels"]["app.kubernetes.io/component"]] = live
    for kind, child_name in resources.obsolete_children(name, spec):
        existing = kube.get(kind, namespace, child_name)
        if existing is None or not _owned_by(existing, body):
            continue
        record_deleted(kind, namespace, child_name)  # before the DELETED event can arrive
        if kube.delete(kind, namespace, child_name):
            events.append(Event("Normal", "Deleted", f"{kind} {child_name} deleted (disabled in the spec)"))
    status = resources.compute_status(
        name=name, namespace=namespace, generation=generation, spec=spec, deployments=deployments,
        old_status=old_status, desired=replicas, problem=secret_problem, config_hash=digest,
        cronjob=cronjobs.get(COMPACTOR), iceberg_cronjob=cronjobs.get(ICEBERG_MAINTENANCE))
    if old_status.get("configHash") and old_status.get("configHash") != digest:
        events.append(Event("Normal", "ConfigChanged", f"configuration {digest} rolled out (was "
                                                       f"{old_status.get('configHash')})"))
    return Outcome(status, events + _degraded_events(old_status, status), spec, body)


def _old_desired(old_status: Mapping[str, Any]) -> dict[str, int]:
    components = old_status.get("components") or {}
    return {c: int(v.get("desiredReplicas") or 0) for c, v in components.items() if isinstance(v, Mapping)}


def _owned_by(child: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    return any(ref.get("uid") == uid for ref in (child.get("metadata") or {}).get("ownerReferences") or [])


# ---------------------------------------------------------------------------------------- child events


def owner_name(child: Mapping[str, Any]) -> str | None:
    for ref in (child.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ZeekPipeline" and str(ref.get("apiVersion", "")).startswith("zeek-pipeline.io/"):
            return str(ref.get("name"))
    return None


def on_child_event(kube: Kube, event_type: str, child: Mapping[str, Any], parent_name: str) -> Outcome | None:
    """Put a child back when it was deleted or changed by someone else; None when nothing was needed.

    The check runs under the pipeline's lock: an apply in flight records its result first, so the watch
    event of our own write is never mistaken for a hand edit.
    """
    namespace = str((child.get("metadata") or {}).get("namespace"))
    with pipeline_lock(namespace, parent_name):
        if deleted_by_us(child) or (event_type != "DELETED" and not drifted(child)):
            return None
        parent = _fresh(kube, namespace, parent_name)
        if parent is None:
            return None
        return _commit(kube, _reconcile_locked(kube, parent, None, _adopt), namespace, parent_name)


def refresh(kube: Kube, namespace: str, name: str) -> None:
    """Status from the live Deployments and CronJob only (a rollout progressed, a compaction ran), keeping a
    resource problem as it was."""
    with pipeline_lock(namespace, name):
        parent = _fresh(kube, namespace, name)
        if parent is None:
            return
        old_status = dict(parent.get("status") or {})
        status = refresh_status(kube, parent)
        if any(old_status.get(key) != value for key, value in status.items()):
            _commit(kube, Outcome(status), namespace, name)


def refresh_status(kube: Kube, parent: Mapping[str, Any]) -> dict[str, Any]:
    """The status recomputed from the live Deployments, keeping a resource problem as it was recorded."""
    name, namespace, generation = _identity(parent)
    old_status = dict(parent.get("status") or {})
    degraded: Mapping[str, Any] = next(
        (c for c in old_status.get("conditions") or [] if c.get("type") == "Degraded"), {})
    problem = None
    if degraded.get("status") == "True" and degraded.get("reason") in PROBLEM_REASONS:
        problem = (str(degraded["reason"]), str(degraded.get("message", "")))
    try:
        spec: PipelineSpec | None = parse_spec(parent.get("spec"))
    except SpecError:
        spec = None
    desired = _old_desired(old_status) or (resources.desired_replicas(spec) if spec else {})
    cronjob = iceberg_cronjob = None
    if spec is not None and spec.compaction_enabled:
        cronjob = kube.get("CronJob", namespace, resources.cronjob_name(name))
    if spec is not None and spec.iceberg_maintenance_enabled:
        iceberg_cronjob = kube.get("CronJob", namespace, resources.cronjob_name(name, ICEBERG_MAINTENANCE))
    return resources.compute_status(
        name=name, namespace=namespace, generation=int(old_status.get("observedGeneration") or generation),
        spec=spec, deployments=_live_deployments(kube, namespace, name), old_status=old_status,
        desired=desired, problem=problem, cronjob=cronjob, iceberg_cronjob=iceberg_cronjob)


# ------------------------------------------------------------------------------------------------ tick

_readers: OrderedDict[str, LagReader] = OrderedDict()
_topics_done: set[str] = set()


def _reader_key(conf: Mapping[str, Any]) -> str:
    return json.dumps(conf, sort_keys=True, default=str)


def _reader(conf: Mapping[str, Any]) -> LagReader:
    key = _reader_key(conf)
    reader = _readers.pop(key, None) or LagReader(conf)
    _readers[key] = reader
    while len(_readers) > 32:
        _readers.popitem(last=False)[1].close()
    return reader


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _read_lag(kube: Kube, namespace: str, spec: PipelineSpec,
              reader_factory: Callable[[Mapping[str, Any]], LagReader]) -> tuple[dict[str, GroupLag],
                                                                                dict[str, Any], list[Event]]:
    """Lag per component (and optional topic creation), from the pipeline's brokers; may wait for a timeout."""
    secrets, problem = read_secrets(kube, namespace, spec)
    lags: dict[str, GroupLag] = {}
    extra: dict[str, Any] = {}
    events: list[Event] = []
    if problem is not None:  # the reconcile reports it as the Degraded reason too
        extra["lagError"] = f"not read: {problem[1]}"
        return lags, extra, events
    # The normalizer's group lives on the input cluster, the writer's on the output one (the same by default).
    confs = {"input": admin_config(spec, secrets), "output": admin_config(spec, secrets, output=True)}
    readers: dict[str, LagReader] = {}
    for conf in confs.values():
        try:
            readers.setdefault(_reader_key(conf), reader_factory(conf))
        except LagError as exc:  # a client librdkafka refuses to create: said in the status, not as a traceback
            extra["lagError"] = str(exc)
            return lags, extra, events
    errors: list[str] = []
    unreachable: set[str] = set()
    for component, (group, topic, cluster) in {
        "normalizer-enricher": (spec.kafka.consumer_groups.normalizer, spec.kafka.topics.raw, "input"),
        "parquet-writer": (spec.kafka.consumer_groups.writer, spec.kafka.topics.normalized, "output"),
    }.items():
        key = _reader_key(confs[cluster])
        if key in unreachable:
            continue
        try:
            lags[component] = readers[key].read(group, topic)
        except LagError as exc:
            errors.append(str(exc))
            if exc.unreachable:  # one timeout is enough; drop the client so it stops reconnecting
                dropped = _readers.pop(key, None)
                if dropped is not None:
                    dropped.close()
                unreachable.add(key)
    if spec.kafka.create_topics.enabled and not unreachable:
        errors += _create_topics(spec, confs, events, extra)  # their lag is read from the next tick on
    extra["lagError"] = "; ".join(errors)
    if lags:
        extra["lag"] = {lag.group: lag.lag for lag in lags.values()}
        extra["totalLag"] = sum(lag.lag for lag in lags.values())
        extra["lagTime"] = _stamp(_now())
    return lags, extra, events


def _decide(spec: PipelineSpec, old_status: Mapping[str, Any], lags: Mapping[str, GroupLag],
            now: float) -> tuple[dict[str, Any], dict[str, int], list[Event]]:
    """The autoscaling decisions (status entries), the replicas they give, and ScaledUp/Down events."""
    autoscaled = autoscaled_replicas(old_status)
    decisions: dict[str, Any] = {}
    events: list[Event] = []
    for component, key in AUTOSCALED.items():
        policy_spec = getattr(spec, key).autoscaling
        if not policy_spec.enabled:
            decisions[component] = None  # removes a stale entry (merge patch)
            autoscaled.pop(component, None)
            continue
        previous = (old_status.get("autoscaling") or {}).get(component) or {}
        current = autoscaled.get(component, getattr(spec, key).replicas)
        lag = lags.get(component)
        signal_name, signal, extra = "lag", lag.lag if lag else None, {}
        if component == "parquet-writer" and lag is not None:
            signal_name, signal, extra = "backlog", *_writer_signal(spec, previous, lag, now)
        decision = decide(current=current, lag=signal,
                          partitions=lag.partitions if lag else None, policy=Policy.from_spec(policy_spec),
                          last_scale=_parse_time(previous.get("lastScaleTime")), now=now, signal=signal_name)
        entry = {"desiredReplicas": decision.replicas, "reason": decision.reason,
                 "lastScaleTime": previous.get("lastScaleTime") or None, **extra}
        if lag is not None:
            entry.update(lag=lag.lag, partitions=lag.partitions)
        if decision.changed:
            entry["lastScaleTime"] = _stamp(dt.datetime.fromtimestamp(now, dt.UTC))
            events.append(Event("Normal", "ScaledUp" if decision.direction == "up" else "ScaledDown",
                                f"{component}: {decision.reason}"))
        autoscaled[component] = decision.replicas
        decisions[component] = entry
    return decisions, autoscaled, events


def _writer_signal(spec: PipelineSpec, previous: Mapping[str, Any], lag: GroupLag,
                   now: float) -> tuple[int | None, dict[str, Any]]:
    """The writer's backlog (None until a second reading gives the input rate) and what to keep in the status
    for the next tick (the end offsets and when they were read)."""
    previous_end = previous.get("endOffsets")
    rate = input_rate(previous_end if isinstance(previous_end, int) else None,
                      _parse_time(previous.get("sampleTime")), lag.end_offsets, now)
    backlog = writer_backlog(lag.lag, lag.partitions, rate, spec.writer.flush)
    extra: dict[str, Any] = {"endOffsets": lag.end_offsets, "sampleTime": _precise_stamp(now),
                             "backlog": backlog.value, "backlogReason": backlog.reason,
                             "inputRate": None if rate is None else round(rate, 3)}
    return backlog.value, extra


def tick(kube: Kube, body: Mapping[str, Any], now: float | None = None,
         reader_factory: Callable[[Mapping[str, Any]], LagReader] = _reader,
         adopt: Adopt | None = None) -> Outcome | None:
    """The timer: read the lag (outside the lock), then decide and reconcile on the resource as stored."""
    name, namespace, _ = _identity(body)
    now = time.time() if now is None else now
    try:
        lags, extra, events = _read_lag(kube, namespace, parse_spec(body.get("spec")), reader_factory)
    except SpecError:
        lags, extra, events = {}, {}, []
    with pipeline_lock(namespace, name):
        current = _fresh(kube, namespace, name)
        if current is None:
            return None
        try:
            spec = parse_spec(current.get("spec"))
        except SpecError:
            return _commit(kube, _reconcile_locked(kube, current, None, adopt or _adopt), namespace, name)
        decisions, autoscaled, scale_events = _decide(spec, current.get("status") or {}, lags, now)
        outcome = _reconcile_locked(kube, current, autoscaled, adopt or _adopt)
        outcome.status.update(extra)
        outcome.status["autoscaling"] = decisions
        outcome.events[:0] = events + scale_events
        return _commit(kube, outcome, namespace, name)


def _create_topics(spec: PipelineSpec, confs: Mapping[str, Mapping[str, Any]], events: list[Event],
                   extra: dict[str, Any]) -> list[str]:
    """The raw topic on the input cluster, the other three on the output cluster (the same by default)."""
    from confluent_kafka import KafkaException

    from zeek_pipeline.kafka.topics import STATUS_TOPIC_CONFIG, ensure_topics

    topics = spec.kafka.topics
    partitions = spec.kafka.create_topics.partitions
    per_cluster: dict[str, tuple[Mapping[str, Any], dict[str, int]]] = {}
    for cluster, wanted in (("input", {topics.raw: partitions}),
                            ("output", {topics.normalized: partitions, topics.dlq: partitions, topics.status: 1})):
        per_cluster.setdefault(_reader_key(confs[cluster]), (confs[cluster], {}))[1].update(wanted)
    created: list[str] = []
    for conf, wanted in per_cluster.values():
        key = json.dumps([sorted(conf.get("bootstrap.servers", "").split(",")), wanted], sort_keys=True)
        if key in _topics_done:
            continue
        try:
            created += ensure_topics(conf, wanted, configs={topics.status: STATUS_TOPIC_CONFIG},
                                     replication_factor=spec.kafka.create_topics.replication_factor, timeout=10)
        except (KafkaException, ApiError) as exc:
            return [f"topic creation failed: {exc}"]
        _topics_done.add(key)
    if created:
        events.append(Event("Normal", "TopicsCreated", f"created {', '.join(created)}"))
        extra["topicsCreated"] = created
    return []
