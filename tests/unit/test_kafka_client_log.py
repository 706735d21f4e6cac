"""librdkafka's own log lines go through Python logging (the project's format and files), never raw to stderr.

Real clients against a loopback port nothing listens on: librdkafka logs the refused connection itself
(`%3|…|FAIL|…` when no logger is configured).
"""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import KafkaException, Producer

from zeek_pipeline.kafka import config as kafka_config
from zeek_pipeline.kafka.client_log import LIBRDKAFKA_LOGGER
from zeek_pipeline.kafka.topics import ensure_topics
from zeek_pipeline.settings import Settings

NOBODY = "127.0.0.1:1"


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limit is per process: start without it so an earlier test's line cannot hide this one's."""
    monkeypatch.setattr(logging.getLogger(LIBRDKAFKA_LOGGER), "filters", [])


def librdkafka_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LIBRDKAFKA_LOGGER]


def test_a_service_clients_librdkafka_lines_are_log_records(caplog: pytest.LogCaptureFixture,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings.model_validate({"kafka": {"brokers": [NOBODY]}})
    producer = Producer(kafka_config.producer(settings))
    deadline = time.monotonic() + 30
    while not librdkafka_records(caplog) and time.monotonic() < deadline:
        producer.poll(0.2)
    assert any("Connection refused" in r.getMessage() for r in librdkafka_records(caplog)), caplog.text
    assert "%3|" not in capfd.readouterr().err


def test_topic_creation_clients_log_through_logging_too(caplog: pytest.LogCaptureFixture,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(KafkaException):
        ensure_topics({"bootstrap.servers": NOBODY}, {"t": 1}, timeout=3)
    assert librdkafka_records(caplog), caplog.text
    assert "%3|" not in capfd.readouterr().err
