"""Iceberg table maintenance (`zeek-pipeline compact --iceberg`): per table of the namespace, compact its closed
hours (rewrite.py), then expire old snapshots and remove orphan files (cleanup.py).

Safe next to running writers and next to another maintenance run: every change is one conditional catalog
commit (a conflict re-plans or skips the hour), expiry keeps what readers and exactly-once need, and orphan
removal only touches old files. A run killed at any point leaves the table at its last commit; files it wrote
and did not commit are orphans the next runs remove once they are old enough.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from zeek_pipeline.iceberg.cleanup import CleanupOptions, expire_snapshots, remove_orphans
from zeek_pipeline.iceberg.failpoints import Failpoints
from zeek_pipeline.iceberg.rewrite import HourRewrite, closed_hours, compact_hour

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceOptions:
    """Compaction settings (from config.json's `compaction` section) and the cleanup's safe defaults."""

    grace_seconds: float = 3600
    min_quiet_seconds: float = 600
    target_bytes: int = 128 * 1024 * 1024
    cleanup: CleanupOptions = CleanupOptions()
    attempts: int = 3  # rewrites of one hour that conflict with a writer's commit before it is left for later


@dataclass(slots=True)
class TableSummary:
    table: str
    hours: list[HourRewrite] = field(default_factory=list)
    snapshots_expired: int = 0
    orphans_removed: int = 0
    error: str | None = None


@dataclass(slots=True)
class MaintenanceSummary:
    tables: list[TableSummary] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        hours = [hour for table in self.tables for hour in table.hours]
        return {
            "tables": len(self.tables),
            "hours_compacted": len(hours),
            "files_before": sum(hour.files_before for hour in hours),
            "files_after": sum(hour.files_after for hour in hours),
            "rows": sum(hour.rows for hour in hours),
            "conflicts": sum(hour.conflicts for hour in hours),
            "snapshots_expired": sum(table.snapshots_expired for table in self.tables),
            "orphans_removed": sum(table.orphans_removed for table in self.tables),
            "errors": {table.table: table.error for table in self.tables if table.error is not None},
        }


def compact_table(table: Table, options: MaintenanceOptions, *, now: Callable[[], float] = time.time,
                  dry_run: bool = False, failpoints: Failpoints | None = None) -> list[HourRewrite]:
    """Rewrite every closed hour of `table` worth it; a dry run reports the plan and changes nothing."""
    planned = closed_hours(table, now=now(), grace_seconds=options.grace_seconds,
                           min_quiet_seconds=options.min_quiet_seconds, target_bytes=options.target_bytes)
    if dry_run:
        return [HourRewrite(hour.hour, len(hour.files), hour.planned_files(options.target_bytes), hour.rows)
                for hour in planned]
    done = []
    for hour in planned:
        result = compact_hour(table, hour.hour, target_bytes=options.target_bytes,
                              grace_seconds=options.grace_seconds, min_quiet_seconds=options.min_quiet_seconds,
                              attempts=options.attempts, now=now, failpoints=failpoints)
        if result is not None:
            done.append(result)
    return done


def maintain_table(table: Table, options: MaintenanceOptions, *, now: Callable[[], float] = time.time,
                   dry_run: bool = False, failpoints: Failpoints | None = None) -> TableSummary:
    summary = TableSummary(str(table.name()[-1]))
    summary.hours = compact_table(table, options, now=now, dry_run=dry_run, failpoints=failpoints)
    summary.snapshots_expired = len(expire_snapshots(table, now=now(), options=options.cleanup, dry_run=dry_run))
    if failpoints is not None:
        failpoints.hit("expired")
    summary.orphans_removed = len(remove_orphans(table, now=now(), options=options.cleanup, dry_run=dry_run))
    return summary


def maintain_namespace(catalog: Catalog, namespace: str, options: MaintenanceOptions, *,
                       log_types: Iterable[str] | None = None, dry_run: bool = False,
                       failpoints: Failpoints | None = None) -> MaintenanceSummary:
    """Every table of `namespace` (or those of `log_types`); a table that fails is reported and the rest go on."""
    wanted = set(log_types) if log_types is not None else None
    summary = MaintenanceSummary()
    for identifier in sorted(catalog.list_tables(namespace)):
        if wanted is not None and identifier[-1] not in wanted:
            continue
        try:
            table = catalog.load_table(identifier)
            summary.tables.append(maintain_table(table, options, dry_run=dry_run, failpoints=failpoints))
        except Exception as exc:  # noqa: BLE001 - one broken table must not stop the others' maintenance
            log.exception("maintenance of %s failed", ".".join(identifier))
            summary.tables.append(TableSummary(identifier[-1], error=f"{type(exc).__name__}: {exc}"))
    return summary
