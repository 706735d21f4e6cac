"""spec.enrich.geoip on the real API server: the CRD takes each source and the Deployments the operator builds
for it (the geoip volume and mount, the termination-message policy) pass server-side validation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.test_chart import CRD_FILE, CRD_NAME, crd_established
from tests.infra.waiting import ok, wait_for
from zeek_operator import resources
from zeek_operator.render import config_hash, render_files
from zeek_operator.spec import parse_spec

pytestmark = pytest.mark.e2e

Run = Callable[..., Any]
SOURCES = [{"secretName": "geolite2"}, {"configMapName": "geolite2", "cityFile": ""},
           {"claimName": "geoip-databases", "cityFile": "maxmind/GeoLite2-City.mmdb"}]


@pytest.fixture(scope="module")
def crd(kubectl: Run) -> str:
    ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE)))
    wait_for("the CRD to be established", lambda: crd_established(kubectl))
    return CRD_NAME


@pytest.fixture
def namespace(kubectl: Run) -> Iterator[str]:
    name = f"geoip-{uuid.uuid4().hex[:8]}"
    ok(kubectl("create", "namespace", name))
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.mark.parametrize("source", SOURCES, ids=["secret", "configmap", "claim"])
def test_geoip_pipeline_and_its_deployments_pass_server_side_validation(
    kubectl: Run, crd: str, namespace: str, source: dict[str, Any]
) -> None:
    raw = {"kafka": {"bootstrapServers": ["redpanda:9092"]}, "enrich": {"geoip": source}}
    pipeline = {"apiVersion": "zeek-pipeline.io/v1alpha1", "kind": "ZeekPipeline", "metadata": {"name": "geo"},
                "spec": raw}
    applied = json.loads(ok(kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                                    "-o", "json", input=json.dumps(pipeline))).stdout)
    assert applied["spec"]["enrich"]["geoip"]["cacheSize"] == 100_000  # the CRD's default, filled by the server
    spec = parse_spec(applied["spec"])
    files = render_files(spec)
    for child in resources.build_children("geo", spec, files, config_hash(files)):
        if child["kind"] != "Deployment":
            continue
        child["metadata"]["namespace"] = namespace
        result = json.loads(ok(kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", "-o", "json",
                                       input=json.dumps(child))).stdout)
        pod = result["spec"]["template"]["spec"]
        assert pod["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
        has_geoip = any(volume["name"] == "geoip" for volume in pod["volumes"])
        assert has_geoip == (result["metadata"]["name"] == "geo-normalizer-enricher")
