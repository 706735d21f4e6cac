"""`zeek-pipeline compact --output DIR|s3://bucket/prefix`: merge the small files of closed hours.

Run it by hand or from a CronJob, next to running writers and even next to another compaction: each hour
is claimed through its journal (compaction/journal.py), and a run that dies is finished or cleaned up by
the next one. Settings come from the `compaction` section of config.json; the flags override them. Prints
one JSON line: hours compacted, files before/after, rows, bytes, errors. With `--iceberg` it maintains the
Iceberg tables of `output.iceberg` instead (iceberg/maintenance.py). Exit 0 when every hour went
through (or was skipped because another run holds it), 1 when some hour failed (it is retried next time),
2 for a config error.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=None, metavar="DIR|s3://bucket/prefix",
                        help="base of the data lake (output.parquet.base_path); required without --iceberg")
    parser.add_argument("--iceberg", action="store_true",
                        help="maintain the Iceberg tables of output.iceberg instead: rewrite closed hours, expire "
                             "snapshots, remove orphan files (docs/iceberg.md, Maintenance)")
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="config.json or its directory (default: $ZEEK_PIPELINE_CONFIG or config/)")
    parser.add_argument("--grace-seconds", type=float, default=None, metavar="N",
                        help="an hour is closed N seconds after its end (late data); default compaction.grace_seconds")
    parser.add_argument("--min-quiet-seconds", type=float, default=None, metavar="N",
                        help="... and once no file of it changed for N seconds; default compaction.min_quiet_seconds")
    parser.add_argument("--target-mb", type=float, default=None, metavar="N",
                        help="size of the merged files; default compaction.target_mb (128)")
    parser.add_argument("--log-type", action="append", default=None, metavar="TYPE",
                        help="compact only this log type (repeatable); default: every log type")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be merged (reads footers only, changes nothing)")


def run(args: argparse.Namespace) -> int:
    if args.iceberg:
        from zeek_pipeline.iceberg.maintenance_command import run_iceberg

        return run_iceberg(args)
    if args.output is None:
        sys.stderr.write("zeek-pipeline compact: --output is required (or --iceberg)\n")
        return 2
    import time

    import orjson

    from zeek_pipeline.compaction.failpoints import Failpoints
    from zeek_pipeline.compaction.run import CompactionOptions, Compactor
    from zeek_pipeline.runtime.logging import setup_logging
    from zeek_pipeline.settings import SettingsError, load_settings
    from zeek_pipeline.writer.memory import configure_allocators
    from zeek_pipeline.writer.parquet_file import ParquetOptions
    from zeek_pipeline.writer.storage import StorageError, open_storage

    configure_allocators()  # as the writer: freed Arrow buffers go back to the system between slices

    try:
        settings = load_settings(args.config)
        storage = open_storage(args.output, settings.output.parquet.s3)
        failpoints = Failpoints.from_environment()
    except (SettingsError, ValueError) as exc:
        sys.stderr.write(f"zeek-pipeline compact: {exc}\n")
        return 2
    # Log lines to stderr (stdout carries the summary line only), not into the services' log file.
    setup_logging(settings.log.model_copy(update={"path": None}), "compact", stream_to=sys.stderr)
    config = settings.compaction
    mb = 1024 * 1024
    options = CompactionOptions(
        grace_seconds=config.grace_seconds if args.grace_seconds is None else args.grace_seconds,
        min_quiet_seconds=config.min_quiet_seconds if args.min_quiet_seconds is None else args.min_quiet_seconds,
        target_bytes=int((config.target_mb if args.target_mb is None else args.target_mb) * mb),
        slice_bytes=int(config.slice_mb * mb),
        lease_seconds=config.lease_seconds,
        file_prefix=settings.output.parquet.file_prefix,
        parquet=ParquetOptions.from_settings(settings.output.parquet))
    started = time.monotonic()
    try:
        summary = Compactor(storage, options, failpoints=failpoints).run_all(
            set(args.log_type) if args.log_type else None, dry_run=args.dry_run)
    except StorageError as exc:  # the lake could not even be listed
        sys.stderr.write(f"zeek-pipeline compact: {exc}\n")
        return 1
    line = {"output": storage.url, "dry_run": args.dry_run, **summary.as_dict(),
            "seconds": round(time.monotonic() - started, 3)}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return 1 if summary.errors else 0
