"""`zeek-pipeline normalizer-enricher --config config/config.json`: run the service until SIGTERM/SIGINT.

Exit 0 after a clean shutdown, 1 on a fatal Kafka error (Kubernetes restarts the pod), 2 on a config error.
"""

from __future__ import annotations

import argparse
import logging

from zeek_pipeline.runtime.cli import add_config_argument, config_error, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, also_read="normalization.json and schema.json")


def run(args: argparse.Namespace) -> int:
    from zeek_pipeline.core.rules import ConfigError
    from zeek_pipeline.core.transform import Transformer
    from zeek_pipeline.normalizer.service import COMPONENT, NormalizerService
    from zeek_pipeline.runtime.logging import setup_logging
    from zeek_pipeline.settings import SettingsError

    try:
        settings, config_dir = load_config(args.config)
        transformer = Transformer.from_config_dir(
            config_dir,
            enrich=settings.enrich,
            key_field=settings.normalizer.key_field,
            topic_log_types=settings.kafka.topic_log_types,
            max_message_bytes=settings.normalizer.max_message_bytes,
        )
    except (SettingsError, ConfigError) as exc:
        return config_error("normalizer-enricher", exc)
    setup_logging(settings.log, COMPONENT)
    logging.getLogger("zeek_pipeline.normalizer-enricher").info(
        "starting", extra={"context": {"config": str(config_dir), "config_hash": settings.config_hash()}})
    return NormalizerService(settings, transformer).run()
