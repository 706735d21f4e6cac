"""The README's path on a real cluster, as a user runs it: `helm install` → `kubectl apply -f zeekpipeline.yaml`
→ `zeek-pipeline publish` of the shared real Zeek logs → every record once in Parquet on the writer's claim
(counted with DuckDB), the rejects in zeek-dlq, the dashboard (reached through the health Service) says ok;
`helm uninstall` leaves no pods, the CRD and the data stay."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from pathlib import Path

import pytest
from tests.cluster.support import (
    ROOT,
    SMALL,
    apply,
    claim_directory,
    count_topic,
    install_chart,
    isolated,
    parquet_rows,
    pipeline_manifest,
    pod_names,
    pod_rss_mb,
    port_forward,
    publish,
    record_measurements,
    release,
    wait_deployments,
)
from tests.infra.browser import chromium
from tests.infra.cluster.cluster import Cluster
from tests.infra.waiting import ok, wait_for
from tests.infra.zeek_data import json_logs, read_lines

NAMESPACE = "zeek"
MALFORMED = [b"this is not json", b'{"conn": "not an object"}', b'{"_path": "conn", "ts": "yesterday"}', b"[1, 2, 3]"]


@pytest.fixture(scope="module")
def installed(cluster: Cluster, helm, kubectl, project_image):  # type: ignore[no-untyped-def]
    with release(helm, kubectl, "zp", NAMESPACE, project_image):
        yield


def test_operator_pod_runs_from_the_built_image_with_the_current_sources(
    installed: None, kubectl, project_image  # type: ignore[no-untyped-def]
) -> None:
    pods = json.loads(ok(kubectl("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/instance=zp",
                                 "-o", "json")).stdout)["items"]
    assert pods, "no operator pod"
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"] == ":".join(project_image)
        assert all(c["ready"] for c in pod["status"]["containerStatuses"]), pod["status"]
    # the installed package is this checkout's, not a wheel a build cache kept from an earlier build
    for module, source in (("zeek_operator.kube", ROOT / "operator" / "zeek_operator" / "kube.py"),
                           ("zeek_pipeline.settings", ROOT / "services" / "zeek_pipeline" / "settings.py")):
        digest = ok(kubectl("-n", NAMESPACE, "exec", pods[0]["metadata"]["name"], "--", "python", "-c",
                            f"import hashlib, {module} as m; print(hashlib.sha256(open(m.__file__, 'rb').read())"
                            ".hexdigest())")).stdout.strip()
        assert digest == hashlib.sha256(source.read_bytes()).hexdigest(), f"{module} in the image is stale"


def test_zeekpipeline_yaml_runs_every_real_record_to_parquet_once(
    installed: None, cluster: Cluster, kubectl, project_image, host_bootstrap: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    apply(kubectl, NAMESPACE, pipeline_manifest(project_image))
    wait_deployments(kubectl, NAMESPACE, "dev")
    pods = {service: pod_names(kubectl, NAMESPACE, f"dev-{service}")[0]
            for service in ("normalizer-enricher", "parquet-writer", "health")}
    time.sleep(10)
    idle = pod_rss_mb(kubectl, NAMESPACE, list(pods.values()))
    peak: dict[str, float] = {}

    def sample() -> None:
        for pod, mb in pod_rss_mb(kubectl, NAMESPACE, list(pods.values())).items():
            peak[pod] = max(peak.get(pod, 0.0), mb)

    files = json_logs()
    expected = sum(1 for path in files for _ in read_lines(path))
    bad = tmp_path / "malformed.json"
    bad.write_bytes(b"\n".join(MALFORMED) + b"\n")
    summary = publish(host_bootstrap, "zeek-raw", [*files, bad])
    assert summary["records"] == expected + len(MALFORMED)
    sample()

    claim = claim_directory(kubectl, NAMESPACE, "dev-parquet")
    # the writer flushes every 60 s (zeekpipeline.yaml): wait for the last rows
    rows = wait_for("every record in Parquet", lambda: (sample(), r := parquet_rows(claim))[1][0] >= expected and r,
                    timeout=300, interval=5)
    record_measurements({f"rss_mb_idle_{service}": idle.get(pod, -1) for service, pod in pods.items()}
                        | {f"rss_mb_flow_peak_{service}": peak.get(pod, -1) for service, pod in pods.items()})
    total, distinct, dns_types = rows
    assert total == expected, f"{total} rows for {expected} published records"
    assert distinct == total, f"{total - distinct} duplicates by (partition, offset)"
    # typed as schema.json and normalization.json say (time → TIMESTAMP, port → USMALLINT, count → UBIGINT)
    assert dns_types["event_time"].startswith("TIMESTAMP"), dns_types
    assert dns_types["src_port"] == "USMALLINT" and dns_types["dst_port"] == "USMALLINT", dns_types
    assert dns_types["_kafka_offset"] in ("BIGINT", "UBIGINT"), dns_types

    dead, headers = wait_for("the rejects in zeek-dlq",
                             lambda: (c := count_topic(host_bootstrap, "zeek-dlq"))[0] >= len(MALFORMED) and c,
                             timeout=120, interval=2)
    assert dead == len(MALFORMED)
    assert all(h.get("error.reason") for h in headers), headers

    with port_forward(cluster, NAMESPACE, "svc/dev-health", 8080) as port:
        def verdict() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/pipeline", timeout=5) as response:
                return str(json.load(response)["verdict"]["state"])

        wait_for("the dashboard's verdict ok", lambda: verdict() == "ok", timeout=180, interval=3)
        with chromium() as browser:
            page = browser.new_page()  # type: ignore[attr-defined]
            page.goto(f"http://127.0.0.1:{port}/")
            from playwright.sync_api import expect

            expect(page.locator("#verdict-state")).to_have_text("ok", timeout=30_000)
            assert page.locator('.card[data-key^="parquet-writer/"]').count() >= 1
            page.screenshot(path=str(tmp_path / "dashboard-on-cluster.png"), full_page=True)


def test_helm_uninstall_leaves_no_pods_and_keeps_the_crd_and_the_data(
    cluster: Cluster, helm, kubectl, project_image  # type: ignore[no-untyped-def]
) -> None:
    """A pipeline made from the chart's values: `helm uninstall` alone runs the pre-delete hook, which deletes
    the pipeline while the operator still runs, so no pod is left; the CRD and the kept claim stay."""
    namespace = "zeek-uninstall"
    topics = isolated("gone")
    pipeline = {"enabled": True, "normalizer": {"resources": SMALL}, "writer": {
        "resources": SMALL, "storage": {"type": "pvc", "pvc": {"size": "1Gi", "keepOnDelete": True}}},
        "kafka": {"bootstrapServers": ["redpanda.redpanda.svc.cluster.local:9092"],
                  "topics": topics["kafka__topics"], "consumerGroups": topics["kafka__consumerGroups"],
                  "createTopics": {"enabled": True, "partitions": 2}}}
    install_chart(helm, "zu", namespace, project_image, "--set-json", f"pipeline={json.dumps(pipeline)}")
    try:
        wait_deployments(kubectl, namespace, "zu-zeek-pipeline")
        claim = claim_directory(kubectl, namespace, "zu-zeek-pipeline-parquet")
        ok(helm("uninstall", "zu", "-n", namespace, "--wait", "--timeout", "3m", timeout=300))
        wait_for("no pods left", lambda: not json.loads(
            kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"], timeout=180, interval=2)
        assert kubectl("get", "crd", "zeekpipelines.zeek-pipeline.io").returncode == 0
        assert kubectl("-n", namespace, "get", "zp", "-o", "name").stdout.strip() == ""
        # keepOnDelete: the claim (and so the data) stays
        assert kubectl("-n", namespace, "get", "pvc", "zu-zeek-pipeline-parquet").returncode == 0
        assert claim.exists()
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")
