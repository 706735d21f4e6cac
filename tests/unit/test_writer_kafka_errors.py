"""A broker outage as the writer's Kafka clients report it: hundreds of identical errors, one state change,
a bounded number of log lines."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.settings import Settings
from zeek_pipeline.writer.kafka_errors import KafkaErrors, RepeatFilter, RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refused(ms: int) -> KafkaError:
    return KafkaError(KafkaError._TRANSPORT,  # noqa: SLF001
                      f"127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after {ms}ms)")


def test_an_outage_is_one_state_change_and_a_few_warnings(caplog: pytest.LogCaptureFixture) -> None:
    runtime = ServiceRuntime("parquet-writer", Settings(), None)
    runtime.set_state("ok")
    clock = Clock()
    errors = KafkaErrors(runtime, RepeatLimiter(clock=clock))
    changes = []
    with caplog.at_level(logging.INFO):
        for n in range(750):  # 30 s of librdkafka retrying, 25 reports a second
            clock.now = n / 25
            errors(refused(n % 7) if n % 50 else KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))  # noqa: SLF001
            changes.append((runtime.state, runtime.reason))
    assert set(changes) == {("degraded", "broker unreachable")}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the first of each kind; the next ones come 30 s later with the count left out
    assert len([r for r in caplog.records if r.getMessage() == "state degraded"]) == 1
    clock.now = 31.0
    with caplog.at_level(logging.INFO):
        errors(refused(3))
    assert "734 more like it" in caplog.records[-1].getMessage()  # 750 - 15 "all brokers down" - the first
    runtime.broker_ok()  # a record arrived: the outage is over
    assert (runtime.state, runtime.broker_reachable) == ("ok", True)
    errors(refused(1))  # a stray refusal once the broker is back: no flap
    assert runtime.state == "ok"


def test_librdkafkas_own_lines_are_rate_limited_by_kind() -> None:
    clock = Clock()
    repeat = RepeatFilter(RepeatLimiter(clock=clock))

    def line(text: str) -> logging.LogRecord:
        return logging.LogRecord("zeek_pipeline.librdkafka", logging.ERROR, __file__, 1, text, None, None)

    passed = [repeat.filter(line(f"FAIL [thrd:127.0.0.1:{9000 + n}]: Connection refused (after {n}ms)"))
              for n in range(100)]
    assert passed.count(True) == 1
    assert repeat.filter(line("another kind of line"))
    clock.now = 30.0
    late = line("FAIL [thrd:127.0.0.1:9092]: Connection refused (after 5ms)")
    assert repeat.filter(late) and "99 more like it" in late.getMessage()
