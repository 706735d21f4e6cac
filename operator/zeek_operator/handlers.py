"""kopf handlers for ZeekPipeline: thin functions that call reconcile.py and report its outcome.

    kopf run -m zeek_operator.handlers --standalone -n <namespace>     # development, one instance
    zeek-pipeline operator -n <namespace>                               # with Lease leader election

- create / update / resume: reconcile (the children, then the status, written under the pipeline's lock);
  a spec problem -> Degraded + event, and a PermanentError so kopf does not retry until the spec changes;
- timer (every ZEEK_OPERATOR_TICK_SECONDS): lag, autoscaling, topic creation, and a resync that puts back
  anything the events missed and notices a Secret or ConfigMap that appeared;
- events of the children (Deployments, ConfigMaps, Services, ServiceAccounts we manage): a deleted or
  hand-edited child is put back at once; a Deployment's progress refreshes the status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf
import urllib3

from zeek_operator import reconcile, startup
from zeek_operator.crd import GROUP, PLURAL, VERSION
from zeek_operator.kube import ApiError, get_kube
from zeek_operator.resources import MANAGED_BY

CHILD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    startup.configure(settings)


@kopf.on.probe(id="operator")
def liveness(**_: Any) -> dict[str, Any]:
    return startup.probe()


def _run(counter: str, fn: Callable[..., reconcile.Outcome | None], *args: Any) -> reconcile.Outcome | None:
    startup.counters[counter] += 1
    try:
        return fn(get_kube(), *args)
    except (ApiError, urllib3.exceptions.HTTPError) as exc:
        startup.counters["errors"] += 1
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from exc


def _post(outcome: reconcile.Outcome) -> None:
    for event in outcome.events:
        kopf.event(outcome.owner, type=event.type, reason=event.reason,  # type: ignore[arg-type]
                   message=event.message)


def _problem(outcome: reconcile.Outcome) -> str | None:
    for cond in outcome.status.get("conditions") or []:
        if cond["type"] == "Degraded" and cond["status"] == "True" and cond["reason"] in reconcile.PROBLEM_REASONS:
            return f"{cond['reason']}: {cond['message']}"
    return None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_pipeline(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    # The status is written by reconcile itself (under the pipeline's lock), not through kopf's patch.
    outcome = _run("reconciles", reconcile.reconcile, str(namespace), name)
    if outcome is None:
        return  # deleted meanwhile
    _post(outcome)
    problem = _problem(outcome)
    if problem and outcome.spec is None:
        raise kopf.PermanentError(problem)  # reported; kopf does not retry until the spec changes
    if problem:
        logger.warning("%s", problem)  # a missing Secret: the timer checks again
    else:
        logger.info("reconciled: config %s", outcome.status.get("configHash"))


@kopf.timer(GROUP, VERSION, PLURAL, interval=startup.TICK_SECONDS, initial_delay=startup.TICK_SECONDS / 2)
def tick(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    outcome = _run("ticks", reconcile.tick, body)
    if outcome is None:
        return
    _post(outcome)
    for event in outcome.events:
        if event.reason in ("ScaledUp", "ScaledDown"):
            logger.info("%s", event.message)


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
@kopf.on.event("batch", "v1", "cronjobs", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "configmaps", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "services", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "serviceaccounts", labels=CHILD_LABELS)
def child_changed(event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    kind, parent_name = event.get("type"), reconcile.owner_name(body)
    if kind is None or parent_name is None:  # the initial listing (resume reconciles anyway) or not ours
        return
    kube = get_kube()
    try:
        outcome = reconcile.on_child_event(kube, str(kind), body, parent_name)
        if outcome is not None:
            startup.counters["child_events"] += 1
            logger.info("%s %s was %s by someone else: put back", body.get("kind"), body.metadata.name,
                        "deleted" if kind == "DELETED" else "changed")
            _post(outcome)
        elif body.get("kind") in reconcile.GENERATION_KINDS and kind != "DELETED":  # a rollout, a compaction run
            reconcile.refresh(kube, str(body.metadata.namespace), parent_name)
    except (ApiError, urllib3.exceptions.HTTPError) as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=5) from exc
