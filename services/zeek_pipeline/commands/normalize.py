"""`zeek-pipeline normalize`: Zeek logs in, three-layer JSON documents out, offline (no Kafka).

    zeek-pipeline normalize [--config DIR] [--input FILE|-] [--output FILE|-] [--rejects FILE]

Input (default stdin): one Kafka message body per line (NDJSON, either message form), or a Zeek TSV log
(detected by a first line starting with `#separator`); gzip is detected by its magic bytes. Blank lines
are skipped. Output (default stdout; gzip when FILE ends in .gz): one document per accepted line, in
input order. Rejects (default stderr): one JSON object per rejected line:
{"line": <1-based input line>, "error": <reason code>, "detail": <text>, "text": <the line>} with
"base64" instead of "text" when the line is not UTF-8.
Exit 0 when the input was processed (rejects or not); 2 for usage or config errors; 1 when the input
could not be read to its end (e.g. a truncated gzip file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", default="config", metavar="DIR",
                        help="directory with normalization.json, config.json (enrich) and schema.json "
                             "(default: config)")
    parser.add_argument("--input", default="-", metavar="FILE|-", help="NDJSON or Zeek TSV, .gz ok (default: -)")
    parser.add_argument("--output", default="-", metavar="FILE|-", help="documents, NDJSON (default: -)")
    parser.add_argument("--rejects", default=None, metavar="FILE", help="rejected lines, NDJSON (default: stderr)")


def run(args: argparse.Namespace) -> int:
    import base64
    import gzip
    from typing import IO

    import orjson

    from zeek_pipeline.core.decode import Rejected
    from zeek_pipeline.core.rules import ConfigError
    from zeek_pipeline.core.transform import Transformer
    from zeek_pipeline.core.tsv import TsvReader, TsvReject

    err = sys.stderr
    config_dir = Path(args.config)
    if not config_dir.is_dir():
        err.write(f"zeek-pipeline normalize: --config {config_dir}: not a directory\n")
        return 2
    try:
        transformer = Transformer.from_config_dir(config_dir)
    except ConfigError as exc:
        err.write(f"zeek-pipeline normalize: config error:\n{exc}\n")
        return 2

    try:
        raw_in: IO[bytes] = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    except OSError as exc:
        err.write(f"zeek-pipeline normalize: --input {args.input}: {exc.strerror or exc}\n")
        return 2
    head = raw_in.peek(2)[:2] if hasattr(raw_in, "peek") else b""
    source: IO[bytes] = gzip.GzipFile(fileobj=raw_in, mode="rb") if head == b"\x1f\x8b" else raw_in  # type: ignore[assignment]

    opened: list[IO[bytes]] = []
    try:
        if args.output == "-":
            out = sys.stdout.buffer
        else:
            out = (gzip.open(args.output, "wb") if args.output.endswith(".gz")
                   else open(args.output, "wb", buffering=1 << 20))  # noqa: SIM115
            opened.append(out)
        if args.rejects is None:
            rejects = sys.stderr.buffer
        else:
            rejects = open(args.rejects, "wb")  # noqa: SIM115
            opened.append(rejects)
    except OSError as exc:
        err.write(f"zeek-pipeline normalize: {exc.filename}: {exc.strerror or exc}\n")
        for handle in opened:
            handle.close()
        if raw_in is not sys.stdin.buffer:
            raw_in.close()
        return 2

    def reject(line_no: int, line: bytes, reason: str, detail: str) -> None:
        entry: dict[str, object] = {"line": line_no, "error": reason, "detail": detail}
        try:
            entry["text"] = line.decode("utf-8")
        except UnicodeDecodeError:
            entry["base64"] = base64.b64encode(line).decode("ascii")
        rejects.write(orjson.dumps(entry) + b"\n")

    status = 0
    first = True
    tsv: TsvReader | None = None
    default_type = _log_type_from_name(args.input)
    line_no = 0
    write = out.write
    transform = transformer.transform
    try:
        for line_no, text in enumerate(source, 1):
            line = text.rstrip(b"\r\n")
            if not line:
                continue
            if first:
                first = False
                if line.startswith(b"#separator"):
                    tsv = TsvReader(default_log_type=default_type)
            if tsv is not None:
                item = tsv.feed(line_no, line)
                if item is None:
                    continue
                if isinstance(item, TsvReject):
                    reject(line_no, line, item.reason, item.detail)
                    continue
                result = transformer.transform_record(item.log_type, item.record)
            else:
                result = transform(line)
            if type(result) is Rejected:
                reject(line_no, line, result.reason, result.detail)
            else:
                write(result.value)  # type: ignore[union-attr]
                write(b"\n")
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
            return 0
        err.write(f"zeek-pipeline normalize: stopped at input line {line_no + 1}: {exc}\n")
        status = 1
    finally:
        try:
            out.flush()
            rejects.flush()
        except BrokenPipeError:
            _silence_stdout()
        for handle in opened:
            handle.close()
        if source is not raw_in:
            source.close()  # a GzipFile does not close the file it reads
        if raw_in is not sys.stdin.buffer:
            raw_in.close()
    return status


def _log_type_from_name(name: str) -> str | None:
    """conn.log.gz -> conn: the log type of a TSV file without #path."""
    if name == "-":
        return None
    base = Path(name).name.split(".")[0]
    return base or None


def _silence_stdout() -> None:
    """After a closed pipe (`... | head`), keep the interpreter's final flush from failing."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
