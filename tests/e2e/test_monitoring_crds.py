"""The chart's monitoring objects against the Prometheus Operator's own CRDs on the real test API server.

The CRDs come from the prometheus-operator Go module (`go mod download` into the cache); the API server then
checks the chart's ServiceMonitor and PrometheusRule against the CRDs' OpenAPI schemas (dry-run=server), and
the dashboard ConfigMap and the operator's metrics Service against the built-in types. Installed with the
ServiceMonitor on, the operator (run as its Deployment says, as its ServiceAccount) serves /metrics, and the
ServiceMonitor's selector picks exactly the operator's metrics Service and the pipeline's `<name>-metrics`
Service that the operator creates.
"""

from __future__ import annotations

import copy
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl
from tests.e2e.test_chart import CHART, PIPELINE_FILE, free_port, operator_from_deployment, token_kubeconfig
from tests.infra.helm import Run, helm_runner
from tests.infra.prometheus import prometheus_operator_crds, render_chart
from tests.infra.waiting import ok, wait_for

MONITORING_KINDS = ("ServiceMonitor", "PrometheusRule")


def established(kubectl: Kubectl, name: str) -> bool:
    jsonpath = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    return kubectl("get", "crd", name, "-o", jsonpath).stdout == "True"


@pytest.fixture(scope="module")
def monitoring_crds(kubectl: Kubectl) -> list[str]:
    names = []
    for path in prometheus_operator_crds("servicemonitors", "prometheusrules"):
        ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path)))
        names.append(yaml.safe_load(path.read_text())["metadata"]["name"])
    for name in names:
        wait_for(f"the CRD {name} to be established", lambda name=name: established(kubectl, name))
    return names


@pytest.fixture
def release_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"monitoring-{uuid.uuid4().hex[:8]}"
    ok(kubectl("create", "namespace", name))
    yield name
    for ref in kubectl("get", "zeekpipelines", "-n", name, "-o", "name").stdout.split():
        kubectl("patch", ref, "-n", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kubectl("delete", "namespace", name, "--wait=false")


def operator_metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def dry_run(kubectl: Kubectl, objects: list[dict[str, Any]]) -> Any:
    document = "\n---\n".join(yaml.safe_dump(o) for o in objects)
    return kubectl("apply", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-", input=document)


@pytest.mark.parametrize("cluster_wide", [False, True], ids=["namespaced", "cluster-wide"])
def test_api_server_accepts_the_charts_monitoring_objects(kubectl: Kubectl, monitoring_crds: list[str],
                                                          cluster_wide: bool) -> None:
    rendered = render_chart(f"rbac.clusterWide={str(cluster_wide).lower()}",
                            "metrics.serviceMonitor.labels.release=kube-prometheus-stack")
    objects = [o for o in rendered if o["kind"] in MONITORING_KINDS
               or (o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))
               or (o["kind"] == "Service" and o["metadata"]["name"].endswith("-operator-metrics"))]
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "PrometheusRule", "Service", "ServiceMonitor"]
    result = dry_run(kubectl, objects)
    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout)
    items = accepted["items"] if accepted.get("kind") == "List" else [accepted]
    by_kind = {item["kind"]: item for item in items}
    monitor = by_kind["ServiceMonitor"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert monitor["namespaceSelector"] == ({"any": True} if cluster_wide else {"matchNames": ["default"]})
    rules = by_kind["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert len(rules) == 8 and all(r["annotations"]["runbook_url"] for r in rules)
    assert by_kind["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_api_server_refuses_a_rule_the_crd_schema_forbids(kubectl: Kubectl, monitoring_crds: list[str]) -> None:
    """The schemas are really applied: a `for:` that is no Prometheus duration is refused, naming the field."""
    rule = next(o for o in render_chart() if o["kind"] == "PrometheusRule")
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    result = dry_run(kubectl, [broken])
    assert result.returncode != 0
    assert "for" in result.stderr and "five minutes" in result.stderr


def test_service_monitor_selects_the_operators_and_the_pipelines_metrics_services(
        kube: Any, kubectl: Kubectl, monitoring_crds: list[str], release_namespace: str, tmp_path: Path) -> None:
    namespace, release, metrics_port = release_namespace, "mon", free_port()
    helm: Run = helm_runner(Path(kube.bin_dir), Path(kube.kubeconfig), tmp_path / "helm-home")
    ok(helm("install", release, str(CHART), "--namespace", namespace, "--set", f"operator.probePort={free_port()}",
            "--set", "metrics.serviceMonitor.enabled=true",
            "--set", f"metrics.serviceMonitor.operatorPort={metrics_port}",
            "--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.grafanaDashboard.enabled=true"))
    operator = f"{release}-zeek-pipeline-operator"
    kubeconfig = token_kubeconfig(kubectl, namespace, operator, tmp_path / "operator.kubeconfig")
    log = tmp_path / "operator.log"
    (pipeline,) = [d for d in yaml.safe_load_all(PIPELINE_FILE.read_text()) if d and d["kind"] == "ZeekPipeline"]
    name = pipeline["metadata"]["name"]
    with operator_from_deployment(kubectl, namespace, operator, kubeconfig, log) as proc:
        text = wait_for("the operator's /metrics", lambda: operator_metrics(metrics_port) or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        assert "process_cpu_seconds_total" in str(text)
        ok(kubectl("apply", "-n", namespace, "-f", str(PIPELINE_FILE)))
        wait_for("the pipeline's metrics Service", lambda: kubectl(
            "get", "service", f"{name}-metrics", "-n", namespace).returncode == 0)

        monitor = json.loads(ok(kubectl("get", "servicemonitor", "-n", namespace, "-o", "json")).stdout)["items"]
        assert len(monitor) == 1
        spec = monitor[0]["spec"]
        selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
        services = json.loads(ok(kubectl("get", "services", "-n", namespace, "-l", selector, "-o", "json")).stdout)
        port = spec["endpoints"][0]["port"]
        scraped = {s["metadata"]["name"] for s in services["items"]
                   if any(p.get("name") == port for p in s["spec"]["ports"])}
        assert scraped == {f"{operator}-metrics", f"{name}-metrics"}
        # the operator's metrics Service reaches a named container port of the operator's pods
        deployment = json.loads(ok(kubectl("get", "deployment", operator, "-n", namespace, "-o", "json")).stdout)
        template = deployment["spec"]["template"]
        service = next(s for s in services["items"] if s["metadata"]["name"] == f"{operator}-metrics")
        assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
        (container,) = template["spec"]["containers"]
        assert {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"} in container["ports"]
        ok(kubectl("delete", "zp", name, "-n", namespace, "--timeout=60s"))
    ok(helm("uninstall", release, "--namespace", namespace))
