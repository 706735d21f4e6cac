"""Operator-wide settings (applied in `@kopf.on.startup`) and the liveness probe's content.

Environment knobs (for tests and for tuning without a new image):
- ZEEK_OPERATOR_TICK_SECONDS: the per-pipeline timer (lag, autoscaling, resync of references), default 30;
- ZEEK_OPERATOR_DEFAULTS_DIR: where the default normalization.json / schema.json are (render.py).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import kopf

TICK_SECONDS = float(os.environ.get("ZEEK_OPERATOR_TICK_SECONDS", "30"))
ANNOTATION_PREFIX = "zeek-pipeline.io"
_started = time.monotonic()
counters: dict[str, int] = {"reconciles": 0, "ticks": 0, "child_events": 0, "errors": 0}


def configure(settings: kopf.OperatorSettings) -> None:
    # kopf's own bookkeeping goes to annotations under our prefix; the status stays the documented one.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/kopf-finalizer"
    # Handler log lines are not turned into Kubernetes events (we post our own, meaningful ones), except
    # warnings and errors, which a user should see in `kubectl describe zp`.
    settings.posting.level = logging.WARNING
    # Reconnect watches regularly: a silently dead connection never stalls the operator for long.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    # The CRD must exist when the operator starts (no cluster-wide CRD watch is needed, nor its RBAC).
    settings.scanning.disabled = True
    settings.execution.max_workers = 8
    # A pipeline deleted while its timer runs waits for the timer to finish; re-check every second, not
    # kopf's default minute, so `kubectl delete zp` returns promptly.
    settings.background.cancellation_polling = 1.0


def probe() -> dict[str, Any]:
    """What `/healthz` reports: the loop answers, so the operator is alive (liveness only, see kopf docs)."""
    return {"uptime_seconds": round(time.monotonic() - _started, 1), **counters}
