"""The writer's Kafka errors and librdkafka's own log lines: state changes at once, log lines rate-limited.

Why: while the broker is down, librdkafka reports the same refused connection several times a second
(error_cb, error events from consume(), and its own log), and each used to become a warning and a state
change: ~750 warnings per 30 s outage, and a state that flipped between ok and degraded. Here an outage is
one state change (degraded, reason "broker unreachable", until a real message or metadata answer comes
back) and each kind of error is logged once, then at most once per `REPEAT_LOG_SECONDS` with how many
were left out, so the lines per outage are bounded by its length, not by librdkafka's retry rate.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

from zeek_pipeline.runtime.service import ServiceRuntime

log = logging.getLogger("zeek_pipeline.parquet-writer")

REPEAT_LOG_SECONDS = 30.0
BROKER_DOWN_REASON = "broker unreachable"
LIBRDKAFKA_LOGGER = "zeek_pipeline.librdkafka"
# Only "all brokers down" makes the writer unreachable: one connection failing (a broker of several, or a stray
# refusal right after the broker came back) is retried by librdkafka and would only make the state flap.
_UNREACHABLE = (KafkaError._ALL_BROKERS_DOWN,)  # noqa: SLF001
_NUMBERS = re.compile(r"\d+")


class RepeatLimiter:
    """Says whether a line of a given kind may be logged now, and how many of that kind were left out."""

    def __init__(self, interval: float = REPEAT_LOG_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """None: leave this one out. Otherwise log it, mentioning the returned count of left-out repeats."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._left_out.pop(kind, 0)


def kind_of(text: str) -> str:
    """Lines that differ only in numbers (ports, milliseconds, broker ids) are the same kind."""
    return _NUMBERS.sub("#", text)


class KafkaErrors:
    """error_cb of the writer's clients and handler of consume()'s error events."""

    def __init__(self, runtime: ServiceRuntime, limiter: RepeatLimiter | None = None) -> None:
        self.runtime = runtime
        self.limiter = limiter or RepeatLimiter()

    def __call__(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
            return
        if err.fatal():
            self.runtime.on_kafka_error(err)  # logs it, stops the service (Kubernetes restarts it)
            return
        if err.code() in _UNREACHABLE:
            self.broker_down()
        left_out = self.limiter.allow(f"{err.code()} {kind_of(err.str())}")
        if left_out is not None:
            suffix = f" ({left_out} more like it in the last {REPEAT_LOG_SECONDS:.0f} s)" if left_out else ""
            log.warning("kafka: %s%s", err.str(), suffix)

    def broker_down(self) -> None:
        """One state change per outage: the reason text does not vary with each refused connection."""
        runtime = self.runtime
        runtime.broker_reachable = False
        if runtime.state != "degraded" or not runtime.reason.startswith(BROKER_DOWN_REASON):
            runtime.set_state("degraded", BROKER_DOWN_REASON)


class RepeatFilter(logging.Filter):
    """For librdkafka's own log lines (passed to Python logging with the `logger` setting)."""

    def __init__(self, limiter: RepeatLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or RepeatLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        left_out = self.limiter.allow(f"{record.levelno} {kind_of(record.getMessage())}")
        if left_out is None:
            return False
        if left_out:
            record.msg = f"{record.getMessage()} ({left_out} more like it in the last {REPEAT_LOG_SECONDS:.0f} s)"
            record.args = None
        return True


def librdkafka_logger() -> logging.Logger:
    """The logger the writer's Kafka clients log through, rate-limited (installed once per process)."""
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter())
    return logger
