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

from confluent_kafka import KafkaError

from zeek_pipeline.kafka.client_log import (
    LIBRDKAFKA_LOGGER,
    REPEAT_LOG_SECONDS,
    RepeatFilter,
    RepeatLimiter,
    kind_of,
    librdkafka_logger,
)
from zeek_pipeline.runtime.service import ServiceRuntime

__all__ = ["BROKER_DOWN_REASON", "LIBRDKAFKA_LOGGER", "KafkaErrors", "RepeatFilter", "RepeatLimiter",
           "kind_of", "librdkafka_logger"]

log = logging.getLogger("zeek_pipeline.parquet-writer")

BROKER_DOWN_REASON = "broker unreachable"
# Only "all brokers down" makes the writer unreachable: one connection failing (a broker of several, or a stray
# refusal right after the broker came back) is retried by librdkafka and would only make the state flap.
_UNREACHABLE = (KafkaError._ALL_BROKERS_DOWN,)  # noqa: SLF001


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
