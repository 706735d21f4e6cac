"""What flows through one instance, per Zeek log type: records in, out and rejected, and what it wrote to the lake.

The health dashboard answers "what is flowing" from these tallies, summed over the instances on the status
channel. Both are bounded whatever the input says: a sensor can invent any number of `_path` values, so
types beyond `MAX_LOG_TYPES` share one "(other)" row, and the lake tally keeps only the newest event hours.
Counts are since the instance started, like every other status total.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Literal

Direction = Literal["in", "out", "rejected"]
DIRECTIONS: tuple[Direction, ...] = ("in", "out", "rejected")
MAX_LOG_TYPES = 96  # Zeek ships ~70 log types; site scripts add a few
OTHER = "(other)"
UNKNOWN = "(unknown)"  # a reject whose log type could not be read (malformed JSON, no _path)
LAKE_HOURS = 12
PREVIEW_BYTES = 160

_HOUR_PATH = re.compile(r"year=(\d{4})/month=(\d{1,2})/day=(\d{1,2})/hour=(\d{1,2})/")


class LogTypeFlows:
    """Per log type, how many records came in, went out and were rejected."""

    def __init__(self, max_types: int = MAX_LOG_TYPES) -> None:
        self.max_types = max_types
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[Direction]] = {}

    def _label(self, log_type: str) -> str:
        """The row a type counts in: its own, or "(other)" once the bound is reached."""
        if log_type in self._counts or len(self._counts) < self.max_types:
            return log_type
        return OTHER

    def add(self, direction: Direction, counts: Mapping[str, int]) -> dict[str, int]:
        """Count, and return what was counted under which row (the labels metrics export)."""
        counted: Counter[str] = Counter()
        with self._lock:
            for log_type, amount in counts.items():
                if amount > 0:
                    label = self._label(log_type or UNKNOWN)
                    self._counts.setdefault(label, Counter())[direction] += amount
                    counted[label] += amount
        return dict(counted)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {log_type: {d: row[d] for d in DIRECTIONS if row[d]} for log_type, row in self._counts.items()}


def event_hour(path: str) -> str | None:
    """`2024-05-01T13` from a Hive-partitioned path (`…/year=2024/month=05/day=01/hour=13/…`), else None."""
    match = _HOUR_PATH.search(path)
    if match is None:
        return None
    year, month, day, hour = (int(part) for part in match.groups())
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}"


class LakeTally:
    """Rows, files and bytes written per (log type, event hour), for the newest `hours` event hours."""

    def __init__(self, hours: int = LAKE_HOURS, max_types: int = MAX_LOG_TYPES) -> None:
        self.hours = hours
        self.max_types = max_types
        self._lock = threading.Lock()
        self._cells: dict[tuple[str, str], list[int]] = {}

    def add(self, path: str, log_type: str, rows: int, size: int) -> None:
        hour = event_hour(path)
        if hour is None:
            return
        with self._lock:
            types = {t for t, _ in self._cells}
            if log_type not in types and len(types) >= self.max_types:
                log_type = OTHER
            cell = self._cells.setdefault((log_type, hour), [0, 0, 0])
            cell[0] += rows
            cell[1] += 1
            cell[2] += size
            kept = sorted({h for _, h in self._cells}, reverse=True)[: self.hours]
            if len(kept) < len({h for _, h in self._cells}):
                self._cells = {k: v for k, v in self._cells.items() if k[1] in kept}

    def snapshot(self) -> list[dict[str, object]]:
        with self._lock:
            return [{"log_type": t, "hour": h, "rows": v[0], "files": v[1], "bytes": v[2]}
                    for (t, h), v in sorted(self._cells.items(), key=lambda kv: (kv[0][1], kv[0][0]), reverse=True)]


def preview(raw: bytes | None, limit: int = PREVIEW_BYTES) -> str:
    """The first bytes of a rejected message as printable text: non-printables escaped, never raw control bytes.

    It is shown on the dashboard (as text, never markup) so a person can see what was wrong without reading
    the dead-letter topic; it is clipped because a reject can be megabytes long.
    """
    if not raw:
        return ""
    head = raw[:limit].decode("utf-8", errors="backslashreplace")
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in head)
    return shown + ("…" if len(raw) > limit else "")
