"""`output.kafka.brokers`: which cluster each client talks to, and exactly-once refused across two clusters."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeek_pipeline.health.state import group_specs
from zeek_pipeline.kafka import config as kafka_config
from zeek_pipeline.settings import Settings, SettingsError, load_settings

CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.json"
TWO_CLUSTERS = {"ZEEK_PIPELINE_KAFKA__BROKERS": "in-1:9092,in-2:9092",
                "ZEEK_PIPELINE_OUTPUT__KAFKA__BROKERS": "out:9092"}
AT_LEAST_ONCE = {"ZEEK_PIPELINE_NORMALIZER__PROCESSING_GUARANTEE": "at_least_once"}


def test_exactly_once_with_a_distinct_output_cluster_is_refused_saying_why() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(CONFIG, environ=TWO_CLUSTERS)
    message = str(refused.value)
    assert "a Kafka transaction cannot span two clusters" in message
    assert "output.kafka.brokers" in message and "at_least_once" in message
    assert "(got" not in message  # a check across sections does not echo the whole input (secrets included)


def test_the_same_cluster_named_again_is_not_a_second_cluster() -> None:
    settings = load_settings(CONFIG, environ={**TWO_CLUSTERS,
                                              "ZEEK_PIPELINE_OUTPUT__KAFKA__BROKERS": "in-2:9092,in-1:9092"})
    assert not settings.separate_output_cluster
    assert settings.normalizer.processing_guarantee == "exactly_once"


def test_each_client_talks_to_the_cluster_its_topics_live_on() -> None:
    settings = load_settings(CONFIG, environ={**TWO_CLUSTERS, **AT_LEAST_ONCE})
    assert settings.separate_output_cluster
    # the normalizer's consumer (zeek-raw, its group and offsets) on the input cluster ...
    assert kafka_config.consumer(settings, "g")["bootstrap.servers"] == "in-1:9092,in-2:9092"
    assert kafka_config.admin(settings)["bootstrap.servers"] == "in-1:9092,in-2:9092"
    # ... every producer (zeek-normalized, zeek-dlq, status) and the writer's consumer on the output cluster
    assert kafka_config.producer(settings)["bootstrap.servers"] == "out:9092"
    assert kafka_config.consumer(settings, "w", cluster="output")["bootstrap.servers"] == "out:9092"
    assert kafka_config.admin(settings, "output")["bootstrap.servers"] == "out:9092"
    # health reads each group's lag on its own cluster
    specs = {spec.role: spec.bootstrap for spec in group_specs(settings)}
    assert specs == {"normalizer-enricher": "in-1:9092,in-2:9092", "parquet-writer": "out:9092"}


def test_without_output_brokers_everything_is_one_cluster() -> None:
    settings = Settings()
    assert settings.output_bootstrap_servers == settings.input_bootstrap_servers == "localhost:9092"
    assert not settings.separate_output_cluster
