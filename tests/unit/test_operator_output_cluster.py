"""spec.kafka.outputBootstrapServers: rendered as output.kafka.brokers, checked by the services' own Settings model
(exactly-once across two clusters is a Degraded InvalidSpec on the resource, never a crash loop), and the lag
and topic creation each go to the cluster their topics live on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeek_operator import reconcile
from zeek_operator.autoscale import GroupLag, LagError
from zeek_operator.render import render_files
from zeek_operator.spec import PipelineSpec, SpecError, parse_spec
from zeek_pipeline.settings import load_settings

NAMESPACE = "zeek"
INPUT, OUTPUT = "kafka-in:9092", "kafka-out:9092"


def two_clusters(guarantee: str) -> dict[str, Any]:
    return {"kafka": {"bootstrapServers": [INPUT], "outputBootstrapServers": [OUTPUT]},
            "normalizer": {"processingGuarantee": guarantee}}


class NothingLive:
    """A namespace with no Deployments and no Secrets: all the reconcile reads before it renders."""

    def get(self, kind: str, namespace: str, name: str) -> None:
        return None

    def secret_data(self, namespace: str, name: str) -> None:
        return None


def test_exactly_once_with_an_output_cluster_is_an_invalid_spec_naming_the_field_and_why() -> None:
    with pytest.raises(SpecError) as refused:
        render_files(parse_spec(two_clusters("exactly_once")))
    text = str(refused.value)
    assert "spec.kafka.outputBootstrapServers" in text
    assert "a Kafka transaction cannot span two clusters" in text and "at_least_once" in text


def test_the_resource_shows_the_refusal_as_degraded_and_its_children_are_left_alone() -> None:
    body = {"metadata": {"name": "zp", "namespace": NAMESPACE, "generation": 2},
            "spec": two_clusters("exactly_once"), "status": {}}
    applied: list[Any] = []
    outcome = reconcile._reconcile_locked(NothingLive(), body, None, lambda child, owner: applied.append(child))  # type: ignore[arg-type]
    degraded = next(c for c in outcome.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "a Kafka transaction cannot span two clusters" in degraded["message"]
    assert applied == []


def test_at_least_once_renders_the_output_cluster_for_the_services(tmp_path: Path) -> None:
    files = render_files(parse_spec(two_clusters("at_least_once")))
    assert json.loads(files["config.json"])["output"]["kafka"]["brokers"] == [OUTPUT]
    (tmp_path / "config.json").write_text(files["config.json"])
    settings = load_settings(tmp_path / "config.json", environ={})
    assert settings.input_bootstrap_servers == INPUT and settings.output_bootstrap_servers == OUTPUT
    # without the field, one cluster as before (no brokers key at all)
    one = render_files(parse_spec({"kafka": {"bootstrapServers": [INPUT]}}))
    assert "brokers" not in json.loads(one["config.json"])["output"]["kafka"]


def test_the_two_clusters_example_renders() -> None:
    example = Path(__file__).resolve().parents[2] / "config/examples/zeekpipeline-two-clusters.yaml"
    document = next(d for d in yaml.safe_load_all(example.read_text()) if d and d.get("kind") == "ZeekPipeline")
    config = json.loads(render_files(parse_spec(document["spec"]))["config.json"])
    assert config["output"]["kafka"]["brokers"] != config["kafka"]["brokers"]


class Reader:
    """The lag reader the tick builds per cluster; records which cluster each group was read on."""

    reads: list[tuple[str, str, str]] = []

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.bootstrap = str(conf["bootstrap.servers"])

    def read(self, group: str, topic: str) -> GroupLag:
        Reader.reads.append((self.bootstrap, group, topic))
        if self.bootstrap == "down:9092":
            raise LagError("Kafka unreachable", unreachable=True)
        return GroupLag(group=group, topic=topic, partitions=1, lag=0, per_partition={0: 0})


def lag_of(spec: PipelineSpec) -> tuple[dict[str, GroupLag], dict[str, Any]]:
    Reader.reads = []
    lags, extra, _ = reconcile._read_lag(NothingLive(), NAMESPACE, spec, Reader)  # type: ignore[arg-type]
    return lags, extra


def test_each_group_lag_is_read_on_its_own_cluster() -> None:
    lags, _ = lag_of(parse_spec(two_clusters("at_least_once")))
    assert set(lags) == {"normalizer-enricher", "parquet-writer"}
    assert Reader.reads == [(INPUT, "zeek-normalizer-enricher", "zeek-raw"),
                            (OUTPUT, "zeek-parquet-writer", "zeek-normalized")]
    # an unreachable output cluster costs only the writer's figure
    spec = parse_spec({**two_clusters("at_least_once"), "kafka": {"bootstrapServers": [INPUT],
                                                                  "outputBootstrapServers": ["down:9092"]}})
    lags, extra = lag_of(spec)
    assert set(lags) == {"normalizer-enricher"} and "Kafka unreachable" in extra["lagError"]
