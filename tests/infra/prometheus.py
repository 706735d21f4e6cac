"""Prometheus as the monitoring tests run it: the binaries built from the Go module proxy (scripts/go-tools.sh
prometheus), the chart's PrometheusRule rendered with `helm template`, and a real server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.infra.go_tools import SCRIPT
from tests.infra.kube import ensure_binaries
from tests.infra.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "zeek-pipeline"
DASHBOARD = CHART / "dashboards" / "zeek-pipeline.json"
METRIC_NAME = re.compile(r"\b(zeek_[a-z0-9_]+)\b")
# The newest prometheus-operator module version the Go module proxy serves with its example CRDs.
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.94.1")
CACHE_ROOT = Path(os.environ.get("ZEEK_PIPELINE_CACHE", Path.home() / ".cache" / "zeek-pipeline"))


@dataclass(frozen=True)
class PrometheusBinaries:
    prometheus: Path
    promtool: Path


def prometheus_binaries() -> PrometheusBinaries:
    """Build (once) or find the cached prometheus and promtool."""
    result = subprocess.run(["bash", str(SCRIPT), "prometheus"], stdout=subprocess.PIPE, text=True, timeout=3600,
                            check=False)
    paths = {Path(line.split(" ", 1)[1]).name: Path(line.split(" ", 1)[1])
             for line in result.stdout.splitlines() if line.startswith("prometheus ")}
    if result.returncode != 0 or set(paths) != {"prometheus", "promtool"}:
        raise RuntimeError(f"{SCRIPT} prometheus failed with exit code {result.returncode}")
    return PrometheusBinaries(paths["prometheus"], paths["promtool"])


def prometheus_operator_crds(*kinds: str) -> list[Path]:
    """The Prometheus Operator's CRD files (`example/prometheus-operator-crd/monitoring.coreos.com_<kind>.yaml`),
    from its Go module downloaded into the cache by `go mod download` (never a committed copy)."""
    module, version = PROMETHEUS_OPERATOR
    env = {**os.environ, "GOMODCACHE": str(CACHE_ROOT / "go" / "mod"), "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod",
           "GOSUMDB": os.environ.get("GOSUMDB_OVERRIDE", "off")}
    result = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True,
                            env=env, cwd=CACHE_ROOT, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"go mod download {module}@{version} failed: {result.stdout}{result.stderr}")
    directory = Path(json.loads(result.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    return [directory / f"monitoring.coreos.com_{kind}.yaml" for kind in kinds]


def render_chart(*values: str) -> list[dict[str, Any]]:
    """The chart's manifests with the monitoring objects on; `values` are extra `--set` expressions."""
    helm = ensure_binaries() / "helm"
    args = [str(helm), "template", "monitoring-test", str(CHART),
            "--set", "metrics.serviceMonitor.enabled=true",
            "--set", "metrics.prometheusRule.enabled=true",
            "--set", "metrics.grafanaDashboard.enabled=true"]
    for value in values:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def rule_groups(*values: str) -> list[dict[str, Any]]:
    """`spec.groups` of the chart's PrometheusRule: a Prometheus rule file's `groups`."""
    rules = [doc for doc in render_chart(*values) if doc["kind"] == "PrometheusRule"]
    assert len(rules) == 1, f"expected one PrometheusRule, got {len(rules)}"
    groups: list[dict[str, Any]] = rules[0]["spec"]["groups"]
    return groups


def write_rule_file(path: Path, groups: Sequence[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"groups": list(groups)}, sort_keys=False))
    return path


def alert_names(groups: Iterable[dict[str, Any]]) -> list[str]:
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def rule_metric_names(groups: Iterable[dict[str, Any]]) -> set[str]:
    return {name for group in groups for rule in group["rules"] for name in METRIC_NAME.findall(rule["expr"])}


def dashboard_metric_names(dashboard: Path = DASHBOARD) -> set[str]:
    """Every zeek_* metric a panel or template variable queries."""
    board = json.loads(dashboard.read_text())

    def exprs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    yield value
                else:
                    yield from exprs(value)
        elif isinstance(node, list):
            for item in node:
                yield from exprs(item)

    return {name for expr in exprs(board) for name in METRIC_NAME.findall(expr)}


def exposed_metric_names(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition (`foo_total{…} 1` -> foo_total)."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


@dataclass
class PrometheusServer:
    """A real Prometheus on 127.0.0.1 with static targets and rule files; `api(path)` queries its HTTP API."""

    binary: Path
    directory: Path
    port: int
    targets: dict[str, str]  # component -> host:port
    rule_files: list[Path] = field(default_factory=list)
    scrape_interval: str = "1s"
    evaluation_interval: str = "1s"
    process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.evaluation_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{
                "job_name": "zeek-pipeline",
                "static_configs": [{"targets": [address], "labels": {"app_kubernetes_io_component": component}}
                                   for component, address in self.targets.items()],
            }],
        }

    def start(self) -> PrometheusServer:
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        with (self.directory / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.binary), f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for("prometheus to be ready", self._ready, timeout=60)
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(self.directory / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as the rule manager holds them."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
