"""The health service's routes over injected sources: states, escaping, redaction, probes, metrics, OpenAPI."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from tests.infra.zeek_data import PROJECT_ROOT
from zeek_pipeline.health.app import create_app
from zeek_pipeline.health.fakes import FixedLag, FixedStatus, fixed_sources
from zeek_pipeline.health.models import KafkaState, Lag, LagGroup, LagPartition, LagTopic
from zeek_pipeline.health.state import Sources
from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.settings import Settings, load_settings

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; the locked environment has httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

NOW = 1_760_000_000.0
CONFIG = PROJECT_ROOT / "config" / "config.json"
SETTINGS = load_settings(CONFIG, environ={})
API = ["/api/v1/pipeline", "/api/v1/components", "/api/v1/lag", "/api/v1/rejects", "/api/v1/files",
       "/api/v1/config"]


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def real_record(component: str, instance: str = "pod-0", **changes: Any) -> dict[str, Any]:
    """A status record built by the real ServiceRuntime from real metric calls."""
    runtime = ServiceRuntime(component, SETTINGS.model_copy(update={"instance_id": instance}), None)
    runtime.set_state("ok")
    runtime.metrics.add("consumed", 52_000)
    if component == "normalizer-enricher":
        runtime.metrics.add("produced", 51_990)
        runtime.metrics.reject("invalid_json", "line 1 column 37: unexpected end of data", "zeek-raw[0]@1289")
        runtime.metrics.reject("missing_path", "no _path and no topic_log_types entry", "zeek-raw[2]@77")
    else:
        runtime.metrics.add("flushes", 3)
        runtime.metrics.file_written("output/parquet/log_type=conn/date=2018-03-24/hour=17/events-0-0.parquet",
                                     "conn", 31_337, 1_482_112)
    runtime.set_assignment([("zeek-raw", 0), ("zeek-raw", 1)])
    data = runtime.status_record().model_dump()
    data.update({"started_at": NOW - 600, "heartbeat_at": NOW - 5, "interval_seconds": 30.0,
                 "rates": {"in_eps": 850.0, "out_eps": 849.5}}, **changes)
    return data


@pytest.fixture
def clock() -> Clock:
    return Clock()


def client_for(sources: Sources, settings: Settings = SETTINGS) -> TestClient:
    return TestClient(create_app(settings, sources=sources))


@pytest.fixture
def pipeline_client(clock: Clock) -> Iterator[TestClient]:
    sources = fixed_sources([real_record("normalizer-enricher"), real_record("parquet-writer")], clock=clock)
    with client_for(sources) as client:
        yield client


def states(client: TestClient) -> dict[str, str]:
    return {c["key"]: c["state"] for c in client.get("/api/v1/components").json()["components"]}


def test_every_api_route_answers_json_with_the_pipeline_ok(pipeline_client: TestClient) -> None:
    for path in API:
        response = pipeline_client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "application/json"
    body = pipeline_client.get("/api/v1/pipeline").json()
    assert body["verdict"] == {"state": "ok", "reasons": []}
    assert [c["key"] for c in body["components"]] == ["normalizer-enricher/pod-0", "parquet-writer/pod-0"]
    writer = body["components"][1]
    assert writer["totals"]["files"] == 1 and writer["totals"]["bytes_written"] == 1_482_112
    assert writer["assigned"] == [{"topic": "zeek-raw", "partition": 0}, {"topic": "zeek-raw", "partition": 1}]


def test_writer_is_down_after_three_intervals_and_the_verdict_degrades(clock: Clock) -> None:
    status = FixedStatus(clock=clock)
    status.put(real_record("normalizer-enricher", heartbeat_at=NOW))
    status.put(real_record("parquet-writer", heartbeat_at=NOW))
    with client_for(Sources(status, FixedLag(now=NOW), clock=clock, sample_seconds=None)) as client:
        for elapsed in (30, 60, 90):  # the normalizer keeps publishing every 30 s, the writer went silent
            clock.now = NOW + elapsed
            status.put(real_record("normalizer-enricher", heartbeat_at=clock.now))
            assert states(client) == {"normalizer-enricher/pod-0": "ok", "parquet-writer/pod-0": "ok"}
        clock.now = NOW + 91
        body = client.get("/api/v1/pipeline").json()
        html = client.get("/").text
    writer = body["components"][1]
    assert (writer["state"], writer["reported_state"]) == ("down", "ok")
    assert writer["reason"] == "no heartbeat for 91 s (down after 90 s)"
    assert writer["heartbeat_age_seconds"] == 91 and writer["down_after_seconds"] == 90
    assert body["verdict"] == {"state": "degraded", "reasons": [
        {"severity": "degraded", "subject": "parquet-writer/pod-0", "text": "parquet-writer no heartbeat for 91 s"}]}
    assert body["unreachable"] == ["parquet-writer/pod-0: no heartbeat for 91 s (down after 90 s)"]
    assert 'class="card state-down" data-key="parquet-writer/pod-0" data-state="down"' in html


def test_rejects_and_files_are_merged_newest_first(clock: Clock) -> None:
    older = real_record("parquet-writer", "w-0")
    older["recent_files"][0]["at"] = NOW - 100
    newer = real_record("parquet-writer", "w-1")
    newer["recent_files"][0]["at"] = NOW - 10
    with client_for(fixed_sources([real_record("normalizer-enricher"), older, newer], clock=clock)) as client:
        files = client.get("/api/v1/files").json()["recent"]
        rejects = client.get("/api/v1/rejects?limit=1").json()
    assert [f["instance"] for f in files] == ["w-1", "w-0"]
    assert files[0]["rows"] == 31_337 and files[0]["log_type"] == "conn"
    assert rejects["total"] == 2
    assert rejects["by_reason"] == {"invalid_json": 1, "missing_path": 1}
    assert len(rejects["recent"]) == 1 and rejects["recent"][0]["reason"] == "missing_path"


def test_limit_outside_its_range_is_a_422(pipeline_client: TestClient) -> None:
    assert pipeline_client.get("/api/v1/rejects?limit=0").status_code == 422
    assert pipeline_client.get("/api/v1/files?limit=501").status_code == 422


def test_page_renders_cards_chart_and_tables(pipeline_client: TestClient) -> None:
    pipeline_client.app.state.health.sample()  # type: ignore[attr-defined]
    response = pipeline_client.get("/")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert html.count('class="card state-ok"') == 2
    assert 'id="chart"' in html and 'id="lag-rows"' in html
    assert "events-0-0.parquet" in html and "invalid_json" in html
    # Everything is served by the service itself: no absolute URL in any src or href.
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)


def test_page_renders_before_any_instance_reported(clock: Clock) -> None:
    with client_for(fixed_sources(clock=clock)) as client:
        html = client.get("/").text
        body = client.get("/api/v1/pipeline").json()
    assert "No instance has reported on zeek-pipeline-status yet." in html
    assert body["verdict"]["state"] == "degraded"


def test_unreachable_kafka_keeps_the_page_up_and_says_so(clock: Clock) -> None:
    kafka = KafkaState(bootstrap="kafka-0:9092", reachable=False, checked_at=NOW, brokers=None,
                       error="Kafka unreachable: Local: Broker transport failure")
    sources = fixed_sources([real_record("normalizer-enricher"), real_record("parquet-writer")],
                            lag=FixedLag(kafka=kafka, now=NOW), clock=clock)
    with client_for(sources) as client:
        page = client.get("/")
        body = client.get("/api/v1/pipeline").json()
        ready = client.get("/readyz")
    assert page.status_code == 200 and "Kafka (kafka-0:9092)" in page.text
    assert body["verdict"]["state"] == "down"
    assert body["unreachable"] == ["Kafka (kafka-0:9092): Kafka unreachable: Local: Broker transport failure"]
    assert ready.status_code == 200  # the dashboard must stay routable to report the outage
    assert ready.json()["checks"]["kafka"].startswith("unreachable")


def test_readyz_waits_for_the_status_topic_and_fails_when_a_reader_stops(clock: Clock) -> None:
    status = FixedStatus(clock=clock)
    status.store = type(status.store)("zeek-pipeline-status", clock=clock)  # not loaded yet
    lag = FixedLag(now=NOW)
    with client_for(Sources(status, lag, clock=clock, sample_seconds=None)) as client:
        assert client.get("/healthz").text == "ok\n"
        assert client.get("/readyz").status_code == 503
        status.store.set_loaded()
        assert client.get("/readyz").json() == {"status": "ok", "checks": {
            "status_reader": "running", "status_topic": "loaded", "lag_monitor": "running", "kafka": "reachable"}}
        lag.running = False
        assert client.get("/readyz").status_code == 503
        assert "lag monitor stopped" in client.get("/api/v1/pipeline").json()["unreachable"]


def test_metrics_export_verdict_instances_and_lag(clock: Clock) -> None:
    lag = Lag(reachable=True, checked_at=NOW, error=None, groups=[LagGroup(
        group="zeek-parquet-writer", role="parquet-writer", state="stable", members=1, error=None,
        topics=[LagTopic(topic="zeek-normalized", lag=42, trend="growing", growing_for_seconds=30.0, error=None,
                         partitions=[LagPartition(partition=0, committed=100, log_start=0, high_watermark=142,
                                                  lag=42, trend="growing")])])])
    sources = fixed_sources([real_record("normalizer-enricher"), real_record("parquet-writer", heartbeat_at=NOW - 95)],
                            lag=FixedLag(lag, now=NOW), clock=clock)
    with client_for(sources) as client:
        client.get("/api/v1/pipeline")
        text = client.get("/metrics").text
    assert "zeek_health_pipeline_verdict 1.0" in text
    assert 'zeek_health_component_up{component="parquet-writer",instance="pod-0"} 0.0' in text
    assert 'zeek_health_component_state{component="parquet-writer",instance="pod-0",state="down"} 1.0' in text
    assert 'zeek_health_consumer_group_lag{group="zeek-parquet-writer",partition="0",topic="zeek-normalized"} 42.0' \
        in text
    assert 'zeek_health_http_requests_total{route="/api/v1/pipeline",status="200"} 1.0' in text


def test_openapi_describes_every_route_with_a_response_model(pipeline_client: TestClient) -> None:
    schema = pipeline_client.get("/openapi.json").json()
    assert schema["info"]["title"] == "zeek-pipeline health"
    for path in API:
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in ok, path
    assert {"/", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert pipeline_client.get("/docs").status_code == 200


def _everything(client: TestClient) -> str:
    client.app.state.health.sample()  # type: ignore[attr-defined]
    paths = ["/", *API, "/metrics", "/readyz", "/openapi.json", "/api/v1/rejects?limit=500"]
    return "\n".join(client.get(path).text for path in paths)


def test_secrets_never_appear_on_the_page_or_in_the_api(clock: Clock) -> None:
    secrets = {
        "ZEEK_PIPELINE_KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_USERNAME": "zeek",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": "sasl-pw-4f1c9e",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SSL_KEY_PASSWORD": "tls-key-pw-77a0",
        "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__ACCESS_KEY": "AKIAEXAMPLE0SECRET1",
        "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY": "s3-secret-wJalrXUtnFEMI",
        "ZEEK_PIPELINE_KAFKA__LIBRDKAFKA": json.dumps({"sasl.oauthbearer.client.secret": "oauth-secret-9d2b",
                                                       "ssl.keystore.password": "keystore-pw-31ee",
                                                       "socket.keepalive.enable": True}),
    }
    settings = load_settings(CONFIG, environ=secrets)
    sources = fixed_sources([real_record("normalizer-enricher"), real_record("parquet-writer")], clock=clock)
    with client_for(sources, settings) as client:
        text = _everything(client)
        config = client.get("/api/v1/config").json()["settings"]
    for name, value in secrets.items():
        if "PASSWORD" in name or "KEY" in name:
            assert value not in text, name
    for value in ("oauth-secret-9d2b", "keystore-pw-31ee"):
        assert value not in text
    assert config["kafka"]["security"]["sasl_password"] == "**********"
    assert config["output"]["parquet"]["s3"]["secret_key"] == "**********"
    assert config["kafka"]["librdkafka"] == {"sasl.oauthbearer.client.secret": "**********",
                                             "ssl.keystore.password": "**********", "socket.keepalive.enable": True}
    assert config["kafka"]["security"]["sasl_username"] == "zeek"  # not a secret: stays readable


SCRIPT = "<script>alert('pwned')</script>"


def hostile_records() -> list[tuple[str | bytes | None, bytes | dict[str, Any]]]:
    good_but_nasty = real_record("parquet-writer", "<img src=x onerror=alert(1)>",
                                 reason=SCRIPT, version="<b>1</b>", last_error=SCRIPT * 1000,
                                 state="degraded", reject_reasons={SCRIPT: 3},
                                 recent_rejects=[{"at": NOW, "reason": SCRIPT, "detail": SCRIPT, "source": SCRIPT},
                                                 {"at": "yesterday", "reason": ["x"], "detail": {"a": 1}}],
                                 recent_files=[{"at": NOW, "path": "/tmp/" + SCRIPT + ".parquet", "log_type": SCRIPT,
                                                "rows": "many", "bytes": 1e300}],
                                 totals={f"{SCRIPT}{i}": i for i in range(500)},
                                 extra={"x": SCRIPT * 100})
    return [
        (None, good_but_nasty),
        ("normalizer-enricher/" + SCRIPT, b'{"component": "normalizer-enricher", "state": 7, "heartbeat_at": "soon"}'),
        ("parquet-writer/huge", {**real_record("parquet-writer", "huge"), "reason": "A" * 3_000_000}),
        ("normalizer-enricher/pod-9", b"<html>" + SCRIPT.encode() + b"</html>"),
        ("normalizer-enricher/pod-8", b"\xff\xfe\x00binary"),
        ("normalizer-enricher/other", real_record("normalizer-enricher", "pod-7")),  # key does not match
        (SCRIPT.encode() + b"\xff", b"[1, 2, 3]"),
        ("deep/nest", b"[" * 100_000 + b"]" * 100_000),
        ("parquet-writer/lists", {**real_record("parquet-writer", "lists"), "recent_files": ["not a dict", 42]}),
    ]


def test_hostile_and_malformed_records_never_break_anything_and_are_shown_escaped(clock: Clock) -> None:
    status = FixedStatus(clock=clock)
    status.put(real_record("normalizer-enricher"))
    accepted = [status.put(value, key) for key, value in hostile_records()]
    assert accepted == [True] + [False] * 8
    with client_for(Sources(status, FixedLag(now=NOW), clock=clock, sample_seconds=None)) as client:
        responses = {path: client.get(path) for path in ["/", *API, "/metrics", "/api/v1/rejects?limit=500"]}
        assert all(r.status_code == 200 for r in responses.values()), {p: r.status_code for p, r in responses.items()}
        html = responses["/"].text
        pipeline = responses["/api/v1/pipeline"].json()
    # No markup from a record reaches the page unescaped, in the HTML or in the embedded JSON.
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert len(html) < 400_000
    assert pipeline["status_channel"]["malformed"] == 8
    problems = {p["key"]: p["error"] for p in pipeline["status_channel"]["problems"]}
    assert problems["normalizer-enricher/" + SCRIPT].startswith("invalid status record: ")
    assert "exceeds the 262144 byte limit" in problems["parquet-writer/huge"]
    assert problems["normalizer-enricher/pod-9"].startswith("not JSON")
    assert "does not match" in problems["normalizer-enricher/other"]
    assert "deep/nest" in problems
    assert problems["parquet-writer/lists"].startswith("invalid status record: recent_files.0: Input should be")
    nasty = next(c for c in pipeline["components"] if c["component"] == "parquet-writer")
    assert nasty["state"] == "degraded" and nasty["reason"] == SCRIPT
    assert len(nasty["last_error"]) <= 1000 and len(nasty["totals"]) <= 30
    files = responses["/api/v1/files"].json()["recent"]
    assert files[0]["rows"] is None and files[0]["bytes"] == int(1e300)
    rejects = responses["/api/v1/rejects?limit=500"].json()["recent"]
    assert {r["reason"] for r in rejects} >= {SCRIPT, "['x']"}


def test_a_valid_record_replaces_a_problem_for_the_same_key(clock: Clock) -> None:
    status = FixedStatus(clock=clock)
    assert not status.put(b"{broken", "parquet-writer/pod-0")
    assert [p.key for p in status.snapshot().problems] == ["parquet-writer/pod-0"]
    assert status.put(real_record("parquet-writer"))
    assert status.snapshot().problems == [] and status.snapshot().malformed == 1
    assert status.put(b"{broken", "parquet-writer/pod-0") is False
    assert "parquet-writer/pod-0" in status.snapshot().records  # a bad record never replaces a good one
    status.store.ingest(b"parquet-writer/pod-0", None)  # tombstone
    assert status.snapshot().records == {} and status.snapshot().problems == []


def test_docs_page_serves_swagger_ui_from_the_service_itself(pipeline_client) -> None:
    """Clusters are often offline: /docs must not reference a CDN, and its assets must be served."""
    page = pipeline_client.get("/docs").text
    assert "cdn." not in page and "https://" not in page
    assert "/docs-assets/swagger-ui-bundle.js" in page
    script = pipeline_client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert pipeline_client.get("/docs-assets/swagger-ui.css").status_code == 200
