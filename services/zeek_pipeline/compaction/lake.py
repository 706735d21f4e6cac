"""Which hours exist, which are closed, and which look worth compacting, from one listing of the lake.

An hour (of one log type) is closed when its end plus the grace for late data has passed and none of its
files changed for the quiet time: the writer still publishes into an hour as long as late events for it
arrive, and merging an hour while it fills would only rewrite it again and again. A late file after all
is no harm (it is not an input of a run that started before it, and the next run merges it).
"""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from dataclasses import dataclass

from zeek_pipeline.writer.storage import FileEntry, Storage

JOURNAL_DIR = "_zeek_compaction"
_HOUR_PATH = re.compile(r"^([^/_.][^/]*)/year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/([^/]+)$")


@dataclass(frozen=True, slots=True)
class HourFolder:
    log_type: str
    hour: int  # hours since the epoch, UTC
    folder: str  # `<log_type>/year=YYYY/month=MM/day=DD/hour=HH`
    files: tuple[FileEntry, ...]  # the published Parquet files in it

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def is_closed(self, now: float, grace_seconds: float, min_quiet_seconds: float) -> bool:
        ended = (self.hour + 1) * 3600 + grace_seconds <= now
        quiet = all(f.mtime <= now - min_quiet_seconds for f in self.files)
        return ended and quiet

    def may_need_work(self, target_bytes: int) -> bool:
        """Two files that could share one output: the cheap test before the footers are read."""
        return sum(1 for f in self.files if f.size < target_bytes) >= 2


def is_published(name: str) -> bool:
    """A file readers see: `.parquet`, not hidden (`.`) nor internal (`_`)."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def hour_of(year: str, month: str, day: str, hour: str) -> int:
    return calendar.timegm((int(year), int(month), int(day), int(hour), 0, 0)) // 3600


def hour_folders(entries: list[FileEntry], log_types: set[str] | None = None) -> list[HourFolder]:
    """Group a listing of the base into hour folders (published files only), oldest hour first."""
    grouped: dict[tuple[str, int, str], list[FileEntry]] = defaultdict(list)
    for entry in entries:
        match = _HOUR_PATH.match(entry.rel)
        if match is None or not is_published(match.group(6)):
            continue
        log_type = match.group(1)
        if log_types is not None and log_type not in log_types:
            continue
        folder = entry.rel.rsplit("/", 1)[0]
        grouped[(log_type, hour_of(*match.group(2, 3, 4, 5)), folder)].append(entry)
    return sorted((HourFolder(lt, hour, folder, tuple(files)) for (lt, hour, folder), files in grouped.items()),
                  key=lambda h: (h.hour, h.log_type))


def journal_hours(entries: list[FileEntry], log_types: set[str] | None = None) -> set[tuple[str, int]]:
    """(log type, hour) of every hour that has a compaction journal (a crashed run may need recovery)."""
    found: set[tuple[str, int]] = set()
    for entry in entries:
        if not entry.rel.startswith(JOURNAL_DIR + "/"):
            continue
        match = _HOUR_PATH.match(entry.rel[len(JOURNAL_DIR) + 1:])
        if match is not None and (log_types is None or match.group(1) in log_types):
            found.add((match.group(1), hour_of(*match.group(2, 3, 4, 5))))
    return found


def scan(storage: Storage) -> list[FileEntry]:
    """One listing of the whole base (one recursive LIST on S3)."""
    return storage.walk("")
