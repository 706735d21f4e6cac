"""The JSON API. Plain `def` routes: they only read in-memory snapshots, never call Kafka."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from zeek_pipeline.health.models import ComponentList, Config, Files, Flows, Lag, Lake, Pipeline, Rejects
from zeek_pipeline.health.routes.deps import StateDep
from zeek_pipeline.health.state import MAX_LIMIT

router = APIRouter(prefix="/api/v1", tags=["api"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="how many of the newest entries to return")]


@router.get("/pipeline", response_model=Pipeline, summary="Verdict, components, throughput and reachability")
def pipeline(state: StateDep) -> Pipeline:
    return state.pipeline()


@router.get("/components", response_model=ComponentList, summary="Every instance on the status channel")
def components(state: StateDep) -> ComponentList:
    return state.components()


@router.get("/lag", response_model=Lag, summary="Consumer-group lag per topic and partition, with trends")
def lag(state: StateDep) -> Lag:
    return state.lag()


@router.get("/rejects", response_model=Rejects, summary="Reject counts by reason and the latest rejects")
def rejects(state: StateDep, limit: Limit = 50) -> Rejects:
    return state.rejects(limit)


@router.get("/files", response_model=Files, summary="The latest Parquet files written")
def files(state: StateDep, limit: Limit = 50) -> Files:
    return state.files(limit)


@router.get("/flows", response_model=Flows, summary="Records in, out and rejected per Zeek log type, with rates")
def flows(state: StateDep) -> Flows:
    return state.flows()


@router.get("/lake", response_model=Lake, summary="Rows, files and bytes written per log type and event hour")
def lake(state: StateDep, hours: Annotated[int, Query(ge=1, le=12, description="newest event hours")] = 6) -> Lake:
    return state.lake(hours)


@router.get("/config", response_model=Config, summary="The effective settings, secrets masked")
def config(state: StateDep) -> Config:
    return state.config()
