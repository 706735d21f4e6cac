"""The command line the two Kafka services share (normalizer-enricher, parquet-writer).

Both take one `--config` (config.json or its directory, the other config files beside it), load it the same
way and exit 2 on a config problem, so that lives here once. This module stays light: `zeek-pipeline`
imports every subcommand's module to build its parser, so the settings are imported only when loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeek_pipeline.settings import Settings

CONFIG_ERROR_EXIT = 2


def add_config_argument(parser: argparse.ArgumentParser, also_read: str) -> None:
    """`--config PATH`; `also_read` names the files the service reads from the same directory."""
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="config.json or its directory (default: $ZEEK_PIPELINE_CONFIG or config/); "
                             f"{also_read} are read from the same directory; "
                             "ZEEK_PIPELINE_* environment variables override the file")


def load_config(config: str | None) -> tuple[Settings, Path]:
    """The validated settings and the directory of the other config files; raises SettingsError."""
    from zeek_pipeline.settings import load_settings, resolve_config_file

    return load_settings(config), resolve_config_file(config).parent


def config_error(command: str, error: Exception) -> int:
    """Report a config problem on stderr (logging is not set up yet) and return the exit code for it."""
    sys.stderr.write(f"zeek-pipeline {command}: {error}\n")
    return CONFIG_ERROR_EXIT
