"""The single `zeek-pipeline` entry point; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, help). Each module exposes `add_arguments(parser)` and `run(args) -> int`,
# and is imported only when its subcommand runs, so `normalize` never pays for FastAPI or kopf.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "normalize": ("zeek_pipeline.commands.normalize", "Zeek logs (NDJSON or TSV) -> three-layer documents, offline"),
    "validate-config": ("zeek_pipeline.commands.validate_config", "check config.json, normalization.json, schema.json"),
    "normalizer-enricher": ("zeek_pipeline.normalizer.cli", "the service: zeek-raw -> zeek-normalized, exactly-once"),
    "publish": ("zeek_pipeline.commands.publish", "send Zeek logs (NDJSON or TSV) to a Kafka topic, as a sensor would"),
    "health": ("zeek_pipeline.health.cli", "the health dashboard and JSON API (FastAPI under uvicorn)"),
    "parquet-writer": ("zeek_pipeline.writer.cli", "the service: zeek-normalized -> Parquet (disk/S3), exactly-once"),
    "write-parquet": ("zeek_pipeline.commands.write_parquet", "three-layer JSON lines -> the Parquet layout, offline"),
    "compact": ("zeek_pipeline.commands.compact", "merge the small Parquet files of closed hours (disk or S3)"),
    "operator": ("zeek_operator.cli", "the kopf operator for ZeekPipeline resources (Lease leader election)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeek-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
