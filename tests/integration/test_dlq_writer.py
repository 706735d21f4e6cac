"""The parquet-writer's dead letters against a real broker: one larger than the dead-letter topic accepts is cut
to fit (with its original size), and a topic it may not write to fails the delivery with the reason the
writer then reports (flush.py raises DeadLetterError with it; the writer stays degraded, not ready)."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AclOperation  # type: ignore[attr-defined]  # exported, not in __all__

from tests.infra import topics
from tests.infra.kafka import KafkaBroker
from tests.infra.kafka_acl import SERVICE_PASSWORD, SERVICE_USER, acl_broker, deny
from zeek_pipeline.writer.dlq import DeadLetters

pytestmark = pytest.mark.integration
__all__ = ["acl_broker"]  # the module's broker fixture

DLQ_MAX = 64 * 1024


def test_a_writer_dead_letter_over_the_topics_limit_is_cut_with_a_marker(kafka_bootstrap: str) -> None:
    dlq = topics.create_topic(kafka_bootstrap, topics.unique_name("wdlq"), 1, {"max.message.bytes": str(DLQ_MAX)})
    # Uncompressed, so the topic's limit applies to the bytes as they are.
    letters = DeadLetters({"bootstrap.servers": kafka_bootstrap, "compression.type": "none", "linger.ms": 20}, dlq)
    huge = os.urandom(2 * DLQ_MAX).hex().encode()
    small = b'{"log_type": "dns", "ts": "yesterday"}'
    deliveries = [letters.send(value, reason="invalid_value", detail="test", source_topic="norm", partition=0,
                               offset=offset, log_type="dns") for offset, value in enumerate([small, huge, small])]
    letters.flush(30)
    assert [d.ok for d in deliveries] == [True, True, True], [d.error for d in deliveries]
    letters.close()

    records = topics.consume_all(kafka_bootstrap, dlq, expected=3)
    assert [r.headers["source.offset"] for r in records] == [b"0", b"1", b"2"]
    assert [r.value for r in records[::2]] == [small, small]
    assert all("error.truncated_from" not in r.headers for r in records[::2])
    cut = records[1]
    assert cut.headers["error.truncated_from"] == b"%d" % len(huge)
    assert cut.value and len(cut.value) < DLQ_MAX and huge.startswith(cut.value)


def test_a_writer_dead_letter_the_topic_refuses_fails_with_the_reason(acl_broker: KafkaBroker) -> None:
    dlq = topics.create_topic(acl_broker.bootstrap, topics.unique_name("wdlq-denied"), 1)
    deny(acl_broker, dlq, AclOperation.WRITE)
    letters = DeadLetters({"bootstrap.servers": acl_broker.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
                           "sasl.mechanism": "PLAIN", "sasl.username": SERVICE_USER,
                           "sasl.password": SERVICE_PASSWORD}, dlq)
    delivery = letters.send(b"{}", reason="invalid_value", detail="test", source_topic="norm", partition=0,
                            offset=0, log_type="dns")
    letters.flush(30)
    assert delivery.ok is False and delivery.error is not None
    assert delivery.error.startswith("TOPIC_AUTHORIZATION_FAILED")
    letters.close(1)
