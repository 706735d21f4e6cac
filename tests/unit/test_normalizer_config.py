"""Settings, error classes and limits the normalizer-enricher derives (pure)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from zeek_pipeline.normalizer.errors import ErrorClass, classify
from zeek_pipeline.normalizer.service import RECORD_OVERHEAD, limits_from_topic_configs
from zeek_pipeline.normalizer.transactions import transactional_id
from zeek_pipeline.settings import Settings, settings_from


def test_shutdown_timeout_defaults_to_30_seconds_and_env_overrides_it() -> None:
    assert Settings().normalizer.shutdown_timeout_seconds == 30
    settings = settings_from({}, {"ZEEK_PIPELINE_NORMALIZER__SHUTDOWN_TIMEOUT_SECONDS": "12.5"})
    assert settings.normalizer.shutdown_timeout_seconds == 12.5


def test_shutdown_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="shutdown_timeout_seconds"):
        Settings.model_validate({"normalizer": {"shutdown_timeout_seconds": 0}})


def test_transactional_id_is_stable_per_instance_and_distinct_per_pipeline() -> None:
    assert transactional_id("zeek-normalizer-enricher", "normalizer-0") == transactional_id(
        "zeek-normalizer-enricher", "normalizer-0")
    assert transactional_id("zeek-normalizer-enricher", "normalizer-0") != transactional_id(
        "zeek-normalizer-enricher", "normalizer-1")
    assert transactional_id("lab", "normalizer-0") != transactional_id("prod", "normalizer-0")


@pytest.mark.parametrize(("error", "expected"), [
    (KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True), ErrorClass.RETRY),
    (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large", txn_requires_abort=True), ErrorClass.ABORT),
    (KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True), ErrorClass.FATAL),
    # fatal wins over the other flags
    (KafkaError(KafkaError._FENCED, "fenced", fatal=True, retriable=True), ErrorClass.FATAL),
    # anything unclassified stops the process (Kubernetes restarts it from committed offsets)
    (KafkaError(KafkaError._STATE, "erroneous state"), ErrorClass.FATAL),
])
def test_error_classes_follow_the_transactional_api(error: KafkaError, expected: ErrorClass) -> None:
    assert classify(error) is expected
    assert classify(KafkaException(error)) is expected


def test_non_kafka_exceptions_are_fatal() -> None:
    assert classify(RuntimeError("bug")) is ErrorClass.FATAL


def test_limits_default_to_max_message_bytes_without_topic_configs() -> None:
    assert limits_from_topic_configs(1_000_000, None, None) == (1_000_000, 1_000_000)


def test_output_limit_follows_a_smaller_output_topic() -> None:
    output, dlq = limits_from_topic_configs(8 << 20, 1_048_588, 8 << 20)
    assert output == 1_048_588 - RECORD_OVERHEAD
    assert dlq == (8 << 20) - RECORD_OVERHEAD


def test_dead_letters_may_keep_originals_larger_than_max_message_bytes() -> None:
    # the "too_large" reject itself must fit in the dead-letter topic with its original bytes
    _, dlq = limits_from_topic_configs(65_536, 8 << 20, 8 << 20)
    assert dlq > 65_536
