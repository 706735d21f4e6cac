"""`zeek-pipeline normalizer-enricher --config config/config.json`: run the service until SIGTERM/SIGINT.

Exit 0 after a clean shutdown, 1 on a fatal Kafka error (Kubernetes restarts the pod), 2 on a config error.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="config.json or its directory (default: $ZEEK_PIPELINE_CONFIG or config/); "
                             "normalization.json and schema.json are read from the same directory; "
                             "ZEEK_PIPELINE_* environment variables override the file")


def run(args: argparse.Namespace) -> int:
    from zeek_pipeline.core.rules import ConfigError
    from zeek_pipeline.core.transform import Transformer
    from zeek_pipeline.normalizer.service import COMPONENT, NormalizerService
    from zeek_pipeline.runtime.logging import setup_logging
    from zeek_pipeline.settings import SettingsError, load_settings, resolve_config_file

    try:
        settings = load_settings(args.config)
        config_dir = resolve_config_file(args.config).parent
        transformer = Transformer.from_config_dir(
            config_dir,
            enrich=settings.enrich,
            key_field=settings.normalizer.key_field,
            topic_log_types=settings.kafka.topic_log_types,
            max_message_bytes=settings.normalizer.max_message_bytes,
        )
    except (SettingsError, ConfigError) as exc:
        sys.stderr.write(f"zeek-pipeline normalizer-enricher: {exc}\n")
        return 2
    setup_logging(settings.log, COMPONENT)
    logging.getLogger("zeek_pipeline.normalizer-enricher").info(
        "starting", extra={"context": {"config": str(config_dir), "config_hash": settings.config_hash()}})
    return NormalizerService(settings, transformer).run()
