"""`zeek-pipeline write-parquet --output DIR`: three-layer JSON lines (what `normalize` prints) → the same
Parquet layout the parquet-writer service produces, without Kafka.

    zeek-pipeline normalize --input dns.json | zeek-pipeline write-parquet --output lake/

`_kafka_partition` is null and `_kafka_offset` is the line number in the input (see writer/offline.py).
Input: gzip is detected by its magic bytes; blank lines are skipped. Lines that cannot be typed are
reported like `normalize` reports its rejects, one JSON object per line on stderr (or `--rejects FILE`):
{"line": <1-based>, "error": <reason code>, "detail": <text>, "text": <the line>} ("base64" instead of
"text" when the line is not UTF-8); everything else is still written. A summary object goes to stderr.
Exit 0 when the input was processed (rejects or not); 2 for config errors or an output that cannot be
written; 1 when the input could not be read to its end.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="base directory of the data lake (or s3://bucket/prefix)")
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="config.json or its directory (default: $ZEEK_PIPELINE_CONFIG or config/); "
                             "schema.json and normalization.json are read from the same directory")
    parser.add_argument("--input", default="-", metavar="FILE",
                        help="three-layer JSON lines, optionally .gz; '-' (default) reads stdin")
    parser.add_argument("--rejects", default=None, metavar="FILE",
                        help="write the lines that cannot be typed here, as JSON lines (default: stderr)")


def run(args: argparse.Namespace) -> int:
    import base64
    import gzip
    import io
    from collections.abc import Iterator
    from pathlib import Path
    from typing import IO, cast

    import orjson

    from zeek_pipeline.core.rules import ConfigError
    from zeek_pipeline.settings import SettingsError, load_settings, resolve_config_file
    from zeek_pipeline.writer.convert import Converter
    from zeek_pipeline.writer.offline import OfflineWriter
    from zeek_pipeline.writer.storage import StorageError, open_storage

    try:
        settings = load_settings(args.config)
        converter = Converter.from_config_dir(resolve_config_file(args.config).parent)
        storage = open_storage(args.output, settings.output.parquet.s3)
    except (SettingsError, ConfigError, ValueError) as exc:
        sys.stderr.write(f"zeek-pipeline write-parquet: {exc}\n")
        return 2

    def lines() -> Iterator[bytes]:
        raw = cast(io.BufferedReader, sys.stdin.buffer if args.input == "-" else Path(args.input).open("rb"))
        try:
            gzipped = raw.peek(2)[:2] == b"\x1f\x8b"
            yield from (gzip.GzipFile(fileobj=raw) if gzipped else raw)
        finally:
            if args.input != "-":
                raw.close()

    rejects_out: IO[bytes] = open(args.rejects, "wb") if args.rejects else sys.stderr.buffer  # noqa: SIM115

    def on_reject(line_no: int, value: bytes, reason: str, detail: str) -> None:
        entry: dict[str, object] = {"line": line_no, "error": reason, "detail": detail}
        try:
            entry["text"] = value.decode("utf-8")
        except UnicodeDecodeError:
            entry["base64"] = base64.b64encode(value).decode()
        rejects_out.write(orjson.dumps(entry) + b"\n")

    writer = OfflineWriter(settings, converter, storage, on_reject)
    try:
        totals = writer.write_lines(lines())
    except StorageError as exc:
        sys.stderr.write(f"zeek-pipeline write-parquet: {exc}\n")
        return 2
    except (OSError, EOFError) as exc:
        sys.stderr.write(f"zeek-pipeline write-parquet: reading {args.input}: {exc}\n")
        return 1
    finally:
        if args.rejects:
            rejects_out.close()
    summary = {"output": storage.url, "lines": totals.lines, "rows": totals.rows, "files": totals.files,
               "rejected": totals.rejected, "bytes": totals.bytes}
    sys.stderr.write(orjson.dumps(summary).decode() + "\n")
    return 0
