"""`zeek-pipeline validate-config [--config DIR]`: check config.json, normalization.json and schema.json.

Each error names the file, the key path, the bad value and what is allowed. Beyond each file on its own,
it checks that every log type's Parquet layout can be derived from schema.json + normalization.json, and
warns (without failing) about promoted raw fields that schema.json does not type, and opens the GeoIP
databases that `enrich.geoip` names. Exit 0 when all three
files are valid, 1 otherwise, 2 when DIR is not a directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config", metavar="DIR",
                        help="directory with config.json, normalization.json and schema.json (default: config)")


def run(args: argparse.Namespace) -> int:
    from zeek_pipeline.core.rules import ConfigError, load_rules
    from zeek_pipeline.core.schema import load_schema, table_layout
    from zeek_pipeline.settings import load_settings

    out, err = sys.stdout, sys.stderr
    directory = Path(args.config)
    if not directory.is_dir():
        err.write(f"zeek-pipeline validate-config: --config {directory}: not a directory\n")
        return 2
    failed = False

    def check(name: str, load: Any) -> Any:
        nonlocal failed
        try:
            value = load(directory / name)
        except (ConfigError, ValueError) as exc:  # SettingsError, SchemaError and ConfigError are ValueErrors
            failed = True
            err.write(f"{exc}\n")
            return None
        out.write(f"ok  {directory / name}\n")
        return value

    settings = check("config.json", load_settings)
    if settings is not None and settings.enrich.geoip.enabled:
        from zeek_pipeline.core.geoip import GeoIpError, GeoIpLookup

        try:  # the databases are opened at start too: a bad one is a config error, found here first
            GeoIpLookup(settings.enrich.geoip).close()
        except GeoIpError as exc:
            failed = True
            err.write(f"{directory / 'config.json'}: {exc}\n")
        else:
            out.write(f"ok  GeoIP databases of {directory / 'config.json'}\n")
    rules = check("normalization.json", load_rules)
    schema = check("schema.json", load_schema)

    if rules is not None and schema is not None:
        for log_type in sorted(set(rules.types) | set(schema.log_types)):
            try:
                table_layout(log_type, schema, rules)
            except Exception as exc:  # noqa: BLE001 - report any layout problem as a config error
                failed = True
                err.write(f"{directory / 'normalization.json'} + schema.json: {log_type}: "
                          f"no Parquet layout: {exc}\n")
                continue
            if schema.knows(log_type) and log_type in rules.types:
                fields = schema.fields_for(log_type)
                for raw in rules.types[log_type].promote:
                    if raw not in fields:
                        out.write(f"warning: normalization.json: {log_type}.promote.{raw}: "
                                  f"not a field of {log_type} in schema.json (its values go to _extra)\n")
    if failed:
        err.write("validate-config: invalid configuration\n")
        return 1
    out.write("validate-config: configuration is valid\n")
    return 0
