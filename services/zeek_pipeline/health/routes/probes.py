"""Kubernetes probes and Prometheus.

/healthz: the process answers. /readyz: the status topic has been read and the background readers run; an
unreachable Kafka does not make it unready, because the dashboard must stay reachable to report that outage.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zeek_pipeline.health.models import Probe
from zeek_pipeline.health.routes.deps import MetricsDep, StateDep

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_class=PlainTextResponse, summary="Liveness: the process answers")
def healthz() -> str:
    return "ok\n"


@router.get("/readyz", response_model=Probe, responses={503: {"model": Probe, "description": "not ready yet"}},
            summary="Readiness: the status topic is loaded and the readers run")
def readyz(state: StateDep) -> Response:
    probe = state.readiness()
    return JSONResponse(probe.model_dump(), status_code=200 if probe.status == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus exposition")
def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
