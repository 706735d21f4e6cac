"""`zeek-pipeline parquet-writer --config config/config.json`: run the writer until SIGTERM/SIGINT.

Exit 0 after a clean shutdown, 1 on a fatal error (Kubernetes restarts the pod), 2 on a config error.
"""

from __future__ import annotations

import argparse

from zeek_pipeline.runtime.cli import add_config_argument, config_error, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, also_read="schema.json and normalization.json")


def run(args: argparse.Namespace) -> int:
    import logging

    from zeek_pipeline.core.rules import ConfigError
    from zeek_pipeline.runtime.logging import setup_logging
    from zeek_pipeline.settings import SettingsError
    from zeek_pipeline.writer.convert import Converter
    from zeek_pipeline.writer.service import COMPONENT, WriterService
    from zeek_pipeline.writer.storage import open_storage

    try:
        settings, config_dir = load_config(args.config)
        converter = Converter.from_config_dir(config_dir)
        storage = open_storage(settings.output.parquet.base_path, settings.output.parquet.s3)
    except (SettingsError, ConfigError, ValueError) as exc:
        return config_error("parquet-writer", exc)
    setup_logging(settings.log, COMPONENT)
    logging.getLogger(f"zeek_pipeline.{COMPONENT}").info("starting", extra={"context": {
        "config": str(config_dir), "config_hash": settings.config_hash(), "output": storage.url}})
    return WriterService(settings, converter, storage).run()
