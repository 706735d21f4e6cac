"""Schemathesis: every route, fed generated (also invalid) parameters, answers as its own OpenAPI schema says.

The app serves real runtime records plus the hostile ones, so the responses under test carry odd content.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from tests.unit.test_health_api import NOW, SETTINGS, Clock, hostile_records, real_record
from zeek_pipeline.health.app import create_app
from zeek_pipeline.health.fakes import FixedLag, FixedStatus
from zeek_pipeline.health.state import Sources


def _app() -> object:
    clock = Clock(NOW + 60)
    status = FixedStatus(clock=clock)
    status.put(real_record("normalizer-enricher"))
    status.put(real_record("parquet-writer", heartbeat_at=NOW - 200))
    for key, value in hostile_records():
        status.put(value, key)
    return create_app(SETTINGS, sources=Sources(status, FixedLag(now=NOW), clock=clock, sample_seconds=None))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_own_openapi_schema(case: schemathesis.Case) -> None:
    case.call_and_validate()
