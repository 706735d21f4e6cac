"""What the health service keeps of the status channel, and for how long: a bound on memory it can prove.

The status topic is written by every instance that ever ran, and by anything else that can produce to it.
Without limits the health pod (256 Mi) held up to 1,000 records of 256 KiB, kept every dead pod forever,
and once 1,000 keys had been seen it dropped every new instance. So:

- every record is trimmed on arrival to what the page shows (the same caps the views apply), and its size
  is accounted as the JSON of the trimmed record;
- the store holds at most `max_instances` records and `max_bytes` of accounted JSON; a record that does not
  fit evicts those with the oldest heartbeats (dead pods first), never one newer than itself;
- an instance whose last heartbeat is older than `forget_after_seconds` is forgotten (a pod that died
  without saying so); a clean exit removes its key at once with a tombstone (runtime/service.py).

The figures for the defaults are measured in tests/unit/test_health_retention.py and in docs/health-api.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from zeek_pipeline.runtime.status import StatusRecord

KNOWN_TOTALS = ("consumed", "produced", "rejected", "errors", "flushes", "files", "bytes_written", "transactions",
                "aborts", "rebalances")
MAX_TOTALS = 30
MAX_REASONS = 20
MAX_ASSIGNED = 256
MAX_RECENT_PER_INSTANCE = 20
MAX_ERROR_CHARS = 1000
# The keys a recent reject / file entry may keep, with the length each string is clipped to.
REJECT_FIELDS = {"at": 0, "reason": 200, "detail": 500, "source": 300, "log_type": 64, "preview": 240}
FILE_FIELDS = {"at": 0, "path": 1000, "log_type": 64, "rows": 0, "bytes": 0}
LAKE_FIELDS = {"log_type": 64, "hour": 13, "rows": 0, "files": 0, "bytes": 0}
MAX_LOG_TYPES = 96
MAX_LAKE_CELLS = MAX_LOG_TYPES * 12
FLOW_DIRECTIONS = ("in", "out", "rejected")


@dataclass(frozen=True)
class Retention:
    """The limits; the defaults keep the store under the bound measured in test_health_retention.py."""

    max_instances: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    forget_after_seconds: float = 86_400.0


def clip(text: object, limit: int) -> str:
    """A printable, bounded string (the template escapes it; this keeps responses small)."""
    value = text if isinstance(text, str) else repr(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def ordered_totals(totals: dict[str, int]) -> dict[str, int]:
    """The known counters first, then the others by name, at most MAX_TOTALS."""
    ordered = [k for k in KNOWN_TOTALS if k in totals] + sorted(k for k in totals if k not in KNOWN_TOTALS)
    return {clip(k, 64): int(totals[k]) for k in ordered[:MAX_TOTALS]}


def top_counts(counts: dict[str, int], limit: int) -> dict[str, int]:
    return {clip(k, 200): int(v) for k, v in Counter(counts).most_common(limit)}


def _scalar(value: Any, limit: int) -> Any:
    """Numbers and None as they are (the views judge them); anything else as a clipped string, as shown."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, int):
        return value
    return clip(value if isinstance(value, str) else str(value), limit or 64)


def _entries(items: list[dict[str, Any]], fields: dict[str, int],
             limit: int = MAX_RECENT_PER_INSTANCE) -> list[dict[str, Any]]:
    return [{name: _scalar(entry.get(name), size) for name, size in fields.items()}
            for entry in items[:limit] if isinstance(entry, dict)]


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def flow_counts(log_types: dict[str, Any]) -> dict[str, dict[str, int]]:
    """At most MAX_LOG_TYPES log types, each with its positive in/out/rejected counts (as services send them)."""
    kept: dict[str, dict[str, int]] = {}
    for name, row in list(log_types.items())[:MAX_LOG_TYPES]:
        if isinstance(row, dict):
            kept[clip(name, 64)] = {d: _count(row.get(d)) for d in FLOW_DIRECTIONS if _count(row.get(d))}
    return kept


def trim(record: StatusRecord) -> StatusRecord:
    """The record reduced to what the health views read; `extra` is dropped (nothing reads it here)."""
    return record.model_copy(update={
        "totals": ordered_totals(record.totals),
        "reject_reasons": top_counts(record.reject_reasons, MAX_REASONS),
        "assigned": record.assigned[:MAX_ASSIGNED],
        "recent_rejects": _entries(record.recent_rejects, REJECT_FIELDS),
        "recent_files": _entries(record.recent_files, FILE_FIELDS),
        "log_types": flow_counts(record.log_types),
        "lake": _entries(record.lake, LAKE_FIELDS, MAX_LAKE_CELLS),
        "last_error": None if record.last_error is None else clip(record.last_error, MAX_ERROR_CHARS),
        "extra": {},
    })


def accounted_bytes(record: StatusRecord) -> int:
    """What a kept record counts against `max_bytes`: its JSON once trimmed."""
    return len(orjson.dumps(record.model_dump()))


def expired(record: StatusRecord, now: float, retention: Retention) -> bool:
    return now - record.heartbeat_at > retention.forget_after_seconds


def eviction_order(heartbeats: dict[str, float], now: float) -> list[str]:
    """Keys oldest heartbeat first; a heartbeat from the future counts as now, so skew cannot pin a key."""
    return sorted(heartbeats, key=lambda key: min(heartbeats[key], now))
