"""`zeek-pipeline parquet-writer --config config/config.json`: run the writer until SIGTERM/SIGINT.

Exit 0 after a clean shutdown, 1 on a fatal error (Kubernetes restarts the pod), 2 on a config error.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="config.json or its directory (default: $ZEEK_PIPELINE_CONFIG or config/); "
                             "schema.json and normalization.json are read from the same directory; "
                             "ZEEK_PIPELINE_* environment variables override the file")


def run(args: argparse.Namespace) -> int:
    import logging

    from zeek_pipeline.core.rules import ConfigError
    from zeek_pipeline.runtime.logging import setup_logging
    from zeek_pipeline.settings import SettingsError, load_settings, resolve_config_file
    from zeek_pipeline.writer.convert import Converter
    from zeek_pipeline.writer.service import COMPONENT, WriterService
    from zeek_pipeline.writer.storage import open_storage

    try:
        settings = load_settings(args.config)
        config_dir = resolve_config_file(args.config).parent
        converter = Converter.from_config_dir(config_dir)
        storage = open_storage(settings.output.parquet.base_path, settings.output.parquet.s3)
    except (SettingsError, ConfigError, ValueError) as exc:
        sys.stderr.write(f"zeek-pipeline parquet-writer: {exc}\n")
        return 2
    setup_logging(settings.log, COMPONENT)
    logging.getLogger(f"zeek_pipeline.{COMPONENT}").info("starting", extra={"context": {
        "config": str(config_dir), "config_hash": settings.config_hash(), "output": storage.url}})
    return WriterService(settings, converter, storage).run()
