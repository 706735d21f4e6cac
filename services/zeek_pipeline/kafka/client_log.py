"""librdkafka's own log lines through Python logging, rate-limited: never raw `%4|…|GETPID|…` on stderr.

Every client the project creates (services, health, the operator's helpers, `publish`, the demo) passes
`logger=librdkafka_logger()` (or `with_logger(conf)`), so librdkafka's lines get the project's log format and
destination instead of being written straight to the terminal. While a broker is down librdkafka repeats the
same line several times a second; each kind of line (lines that differ only in numbers are one kind) is
logged once, then at most once per `REPEAT_LOG_SECONDS` with how many were left out.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

REPEAT_LOG_SECONDS = 30.0
LIBRDKAFKA_LOGGER = "zeek_pipeline.librdkafka"
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
    """The logger Kafka clients log through, rate-limited (the filter is installed once per process)."""
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter())
    return logger


def with_logger(conf: dict[str, Any]) -> dict[str, Any]:
    """`conf` with librdkafka's log routed to `librdkafka_logger()` unless the caller chose a logger."""
    conf.setdefault("logger", librdkafka_logger())
    return conf
