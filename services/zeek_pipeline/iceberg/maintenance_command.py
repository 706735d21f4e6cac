"""`zeek-pipeline compact --iceberg`: the Iceberg maintenance run of the compact command (commands/compact.py).

Settings come from config.json (`output.iceberg` for the catalog, `compaction` for grace, quiet time and target
size); the flags override them. Prints one JSON line: tables, hours compacted, files before/after, rows,
conflicts, snapshots expired, orphans removed, errors. Exit 0 when every table went through, 1 when one failed
(retried next time), 2 for a config error.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson


def run_iceberg(args: argparse.Namespace) -> int:
    from zeek_pipeline.iceberg.catalog import open_catalog
    from zeek_pipeline.iceberg.failpoints import Failpoints
    from zeek_pipeline.iceberg.maintenance import MaintenanceOptions, maintain_namespace
    from zeek_pipeline.runtime.logging import setup_logging
    from zeek_pipeline.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
        failpoints = Failpoints.from_environment()
    except (SettingsError, ValueError) as exc:
        sys.stderr.write(f"zeek-pipeline compact --iceberg: {exc}\n")
        return 2
    setup_logging(settings.log.model_copy(update={"path": None}), "compact", stream_to=sys.stderr)
    config = settings.compaction
    options = MaintenanceOptions(
        grace_seconds=config.grace_seconds if args.grace_seconds is None else args.grace_seconds,
        min_quiet_seconds=config.min_quiet_seconds if args.min_quiet_seconds is None else args.min_quiet_seconds,
        target_bytes=int((config.target_mb if args.target_mb is None else args.target_mb) * 1024 * 1024))
    started = time.monotonic()
    iceberg = settings.output.iceberg
    try:
        catalog = open_catalog(iceberg)
    except Exception as exc:  # noqa: BLE001 - an unreachable catalog is reported, not a traceback
        sys.stderr.write(f"zeek-pipeline compact --iceberg: cannot open the catalog: {exc}\n")
        return 1
    summary = maintain_namespace(catalog, iceberg.namespace, options, log_types=args.log_type,
                                 dry_run=args.dry_run, failpoints=failpoints)
    line = {"iceberg": f"{iceberg.catalog.type}:{iceberg.namespace}", "dry_run": args.dry_run,
            **summary.as_dict(), "seconds": round(time.monotonic() - started, 3)}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return 1 if line["errors"] else 0
