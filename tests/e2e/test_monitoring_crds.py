"""The chart's monitoring objects against the Prometheus Operator's own CRDs on the real test API server.

The CRDs come from the prometheus-operator Go module (`go mod download` into the cache); the API server then
checks the chart's ServiceMonitor and PrometheusRule against the CRDs' OpenAPI schemas (dry-run=server), and
the dashboard ConfigMap and the operator's metrics Service against the built-in types.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl
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
