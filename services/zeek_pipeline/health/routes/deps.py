"""Dependencies the routes share; tests replace them with `app.dependency_overrides`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from zeek_pipeline.health.metrics import HealthMetrics
from zeek_pipeline.health.state import HealthState
from zeek_pipeline.settings import Settings


def get_state(request: Request) -> HealthState:
    state: HealthState = request.app.state.health
    return state


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> HealthMetrics:
    metrics: HealthMetrics = request.app.state.metrics
    return metrics


StateDep = Annotated[HealthState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[HealthMetrics, Depends(get_metrics)]
