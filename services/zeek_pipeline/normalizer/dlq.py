"""Lineage headers on every output, and the dead-letter message for a record the transform rejected.

Output headers: `log_type`, `source.topic`, `source.partition`, `source.offset` (decimal ASCII), so any
normalized record can be traced back to the raw record it came from. A dead letter keeps the original
key, value and headers untouched and appends `error.reason` (a reject code of core/decode.py),
`error.detail` (human text, at most MAX_DETAIL_BYTES), the same `source.*` headers and
`source.timestamp` (ms since the epoch, when the source record had one). A value too large even for the
dead-letter topic is cut to its limit and `error.truncated_from` gives the original size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Headers = list[tuple[str, str | bytes | None]]  # confluent-kafka's header list type

LOG_TYPE = "log_type"
SOURCE_TOPIC = "source.topic"
SOURCE_PARTITION = "source.partition"
SOURCE_OFFSET = "source.offset"
SOURCE_TIMESTAMP = "source.timestamp"
ERROR_REASON = "error.reason"
ERROR_DETAIL = "error.detail"
ERROR_TRUNCATED_FROM = "error.truncated_from"
MAX_DETAIL_BYTES = 1024

# Reasons the service adds to the core's reject codes.
OUTPUT_TOO_LARGE = "too_large"  # the normalized document exceeds what the output topic accepts
INTERNAL_ERROR = "internal_error"  # the transform raised (a bug): the record is parked, the partition moves on


def lineage_headers(topic: bytes, partition: bytes, offset: int) -> Headers:
    """`topic` and `partition` come pre-encoded (they repeat for every record of a partition)."""
    return [(SOURCE_TOPIC, topic), (SOURCE_PARTITION, partition), (SOURCE_OFFSET, b"%d" % offset)]


def output_headers(log_type: bytes, topic: bytes, partition: bytes, offset: int) -> Headers:
    return [(LOG_TYPE, log_type), (SOURCE_TOPIC, topic), (SOURCE_PARTITION, partition),
            (SOURCE_OFFSET, b"%d" % offset)]


def _truncate_utf8(text: str, limit: int) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: Headers


def dead_letter(
    *,
    key: bytes | None,
    value: bytes | None,
    original_headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    max_value_bytes: int,
) -> DeadLetter:
    """The dead-letter record for one rejected source record (pure: the caller produces it)."""
    items = original_headers.items() if isinstance(original_headers, Mapping) else original_headers or ()
    headers: Headers = list(items)
    headers.append((ERROR_REASON, reason.encode()))
    headers.append((ERROR_DETAIL, _truncate_utf8(detail, MAX_DETAIL_BYTES)))
    headers.extend(lineage_headers(topic.encode(), b"%d" % partition, offset))
    if timestamp_ms is not None and timestamp_ms >= 0:
        headers.append((SOURCE_TIMESTAMP, b"%d" % timestamp_ms))
    if value is not None and len(value) > max_value_bytes:
        headers.append((ERROR_TRUNCATED_FROM, b"%d" % len(value)))
        value = value[:max_value_bytes]
    return DeadLetter(key=key, value=value, headers=headers)
