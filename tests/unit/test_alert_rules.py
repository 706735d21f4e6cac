"""The chart's alert rules, checked and unit-tested by promtool (built from the Go module proxy).

The PrometheusRule is rendered with `helm template` and its `spec.groups` written as a rule file; then
`promtool check rules` lints it and `promtool test rules` runs alert_rules/alerts_test.yaml, where every
alert fires on one synthetic series and stays silent on others.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.prometheus import alert_names, prometheus_binaries, rule_groups, write_rule_file

RULES_TEST = Path(__file__).parent / "alert_rules" / "alerts_test.yaml"
ALERTS = ["ZeekPipelineConsumerLagGrowing", "ZeekPipelineNoRecordsIn", "ZeekPipelineRejectRateHigh",
          "ZeekPipelineWriterNotReady", "ZeekPipelineTargetDown", "ZeekPipelineComponentDown",
          "ZeekPipelineExactlyOnceAborts", "ZeekPipelineWriterErrors"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


@pytest.fixture(scope="module")
def promtool() -> Path:
    return prometheus_binaries().promtool


def promtool_run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_chart_renders_every_alert_with_a_runbook_section() -> None:
    groups = rule_groups()
    assert alert_names(groups) == ALERTS
    headings = {line[3:].strip() for line in DOCS.read_text().splitlines() if line.startswith("## ")}
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["alert"] in headings, f"docs/alerts.md has no section for {rule['alert']}"
        assert rule["annotations"]["runbook_url"].endswith("docs/alerts.md#" + rule["alert"].lower())
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_promtool_check_rules_accepts_the_rendered_rules(promtool: Path, tmp_path: Path) -> None:
    rules = write_rule_file(tmp_path / "rules.yaml", rule_groups())
    result = promtool_run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_fires_when_it_should_and_not_otherwise(promtool: Path, tmp_path: Path) -> None:
    write_rule_file(tmp_path / "rules.yaml", rule_groups())
    shutil.copy(RULES_TEST, tmp_path / "alerts_test.yaml")
    tested = {case["alertname"] for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == set(ALERTS), f"alerts without a firing case: {set(ALERTS) - tested}"
    result = promtool_run(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_thresholds_and_durations_come_from_the_values(promtool: Path, tmp_path: Path) -> None:
    """With the lag alert's threshold raised past the synthetic series, its firing case must fail."""
    groups = rule_groups("metrics.prometheusRule.alerts.consumerLagGrowing.minLag=100000",
                         "metrics.prometheusRule.alerts.targetDown.for=30m",
                         "metrics.prometheusRule.alerts.rejectRateHigh.enabled=false")
    assert "ZeekPipelineRejectRateHigh" not in alert_names(groups)
    write_rule_file(tmp_path / "rules.yaml", groups)
    shutil.copy(RULES_TEST, tmp_path / "alerts_test.yaml")
    result = promtool_run(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    failed = result.stdout + result.stderr
    assert "ZeekPipelineConsumerLagGrowing" in failed
    assert "ZeekPipelineTargetDown" in failed
    assert "ZeekPipelineNoRecordsIn" not in failed.split("FAILED", 1)[-1]
