"""`zeek-pipeline publish`: send Zeek logs to Kafka as a sensor would (replays, demos, tests, benchmarks).

    zeek-pipeline publish --topic zeek-raw [--form tagged|flat|as-is] [--rate N/s] [--config DIR]
                          [--brokers B] [--count N] [--repeat K] [--partition P] [--json] FILE...

Each FILE is NDJSON (one message body per line, either message form) or a Zeek TSV log (detected by its
`#separator` header), gzip or not (detected by its magic bytes). `--form as-is` (default) sends NDJSON lines
byte for byte; TSV records are typed by core/tsv.py and sent flat (`{"_path": ..., ...}`) unless
`--form tagged` (`{"<log_type>": {...}}` with epoch times, as the zeek-kafka plugin writes). A line that is
not a Zeek record in either form is sent unchanged (the pipeline's dead-letter topic is where it belongs);
a TSV line that does not parse is skipped and counted.

The producer is batched, lz4-compressed and idempotent; `--rate` paces it. Progress goes to stderr (a live
line on a terminal, else every 5 s); at the end a summary: records per log type, bytes, seconds, rate.
Exit 0 when every record was delivered, 1 when some delivery failed, 2 for usage, config or input errors.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from zeek_pipeline.settings import Settings

_DESCRIPTION = __doc__


def _rate(text: str) -> float:
    value = text.strip().lower().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate like 5000 or 5000/s") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("the rate must be > 0")
    return rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="NDJSON or Zeek TSV logs, .gz ok")
    parser.add_argument("--topic", required=True, help="the topic to send to, e.g. zeek-raw")
    parser.add_argument("--form", choices=("as-is", "flat", "tagged"), default="as-is",
                        help="message form (default as-is: NDJSON unchanged, TSV records flat)")
    parser.add_argument("--rate", type=_rate, default=None, metavar="N/s", help="records per second (default: "
                        "as fast as the broker takes them)")
    parser.add_argument("--config", default=None, metavar="DIR",
                        help="config directory or config.json: brokers, security and librdkafka settings "
                             "(default: config/ when present; ZEEK_PIPELINE_* variables apply)")
    parser.add_argument("--brokers", default=None, help="bootstrap servers, overriding the config")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop after N records")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="send the input K times (a big backlog for benchmarks; 0 = until --count)")
    parser.add_argument("--partition", type=int, default=None, metavar="P", help="send everything to one partition")
    parser.add_argument("--json", action="store_true", help="also print the summary as JSON on stdout")


class PublishError(Exception):
    """A usage, config or input problem (exit 2)."""


@dataclass
class Progress:
    """Counts for the progress line and the summary."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    bytes: int = 0
    failed: int = 0
    unconverted: int = 0
    skipped: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{err.name()}: {err.str()}")

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self, queued: int) -> str:
        return (f"sent {self.sent:,} records ({self.bytes / 1e6:,.1f} MB) in {self.elapsed():.1f}s, "
                f"{self.sent / self.elapsed():,.0f} rec/s, in flight {queued:,}, failed {self.failed:,}")

    def summary(self, topic: str) -> dict[str, Any]:
        seconds = self.elapsed()
        return {"topic": topic, "records": self.sent, "delivered": self.sent - self.failed, "failed": self.failed,
                "bytes": self.bytes, "seconds": round(seconds, 3), "records_per_second": round(self.sent / seconds, 1),
                "by_log_type": dict(sorted(self.by_type.items())), "unconverted": self.unconverted,
                "skipped_tsv_lines": self.skipped, "errors": self.errors}


def open_lines(path: Path) -> Iterator[bytes]:
    """Non-empty lines without their line break; gzip detected by its magic bytes."""
    try:
        raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise PublishError(f"{path}: {exc.strerror or exc}") from exc
    with raw:
        head = raw.read(2)
        raw.seek(0)
        handle: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw  # type: ignore[assignment]
        for text in handle:
            line = text.rstrip(b"\r\n")
            if line:
                yield line


def log_type_of(message: Any) -> str:
    """The log type of a decoded message in either form ("?" when it has none)."""
    if isinstance(message, dict):
        path = message.get("_path")
        if isinstance(path, str):
            return path
        if len(message) == 1:
            return str(next(iter(message)))
    return "?"


def records(paths: list[Path], form: str, time_fields: dict[str, list[str]], progress: Progress,
            ) -> Iterator[tuple[str, bytes]]:
    """(log type, message body) for every record of every file, in file order."""
    import orjson

    from zeek_pipeline.core.forms import FormError, convert
    from zeek_pipeline.core.tsv import TsvReader, TsvReject

    for path in paths:
        tsv: TsvReader | None = None
        for line_no, line in enumerate(open_lines(path), 1):
            if line_no == 1 and line.startswith(b"#separator"):
                tsv = TsvReader(default_log_type=path.name.split(".")[0] or None)
            if tsv is not None:
                item = tsv.feed(line_no, line)
                if item is None:
                    continue
                if isinstance(item, TsvReject):
                    progress.skipped += 1
                    if progress.skipped <= 5:
                        sys.stderr.write(f"{path}:{line_no}: skipped ({item.reason}: {item.detail})\n")
                    continue
                body = {item.log_type: item.record} if form == "tagged" else {"_path": item.log_type, **item.record}
                yield item.log_type, orjson.dumps(body)
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                progress.unconverted += 1
                yield "?", line
                continue
            log_type = log_type_of(message)
            if form == "as-is":
                yield log_type, line
                continue
            try:
                converted = convert(message, form, time_fields.get(log_type))  # type: ignore[arg-type]
            except FormError:
                progress.unconverted += 1
                yield log_type, line
                continue
            yield log_type, orjson.dumps(converted)


def load_publish_settings(config: str | None) -> tuple[Settings, Path | None]:
    """Settings from --config (or config/ when present), else the defaults; ZEEK_PIPELINE_* apply either way."""
    import os

    from zeek_pipeline.settings import SettingsError, load_settings, resolve_config_file, settings_from

    file = resolve_config_file(config)
    try:
        if config is None and not file.exists():
            return settings_from({}, os.environ), None
        return load_settings(file), file.parent
    except SettingsError as exc:
        raise PublishError(str(exc)) from exc


def publish(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    from zeek_pipeline.core.transform import load_time_fields
    from zeek_pipeline.kafka import config as kafka_config
    from zeek_pipeline.runtime.logging import setup_logging

    for path in args.files:
        if not path.is_file():
            raise PublishError(f"{path}: no such file")
    if args.repeat < 0 or (args.repeat == 0 and args.count is None):
        raise PublishError("--repeat must be >= 1, or 0 together with --count")
    settings, config_dir = load_publish_settings(args.config)
    # librdkafka's own lines (kafka_config.common sets `logger`) in the project's format on stderr, beside the
    # progress; stdout keeps only the summary.
    setup_logging(settings.log.model_copy(update={"path": None}), "publish", stream_to=sys.stderr)
    time_fields = load_time_fields(config_dir / "schema.json") if config_dir is not None else {}
    progress = Progress()
    conf = kafka_config.common(settings, args.brokers)
    conf.update({
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 131_072,
        "message.max.bytes": settings.normalizer.max_message_bytes + 65_536,
        "on_delivery": progress.on_delivery,
        "delivery.report.only.error": True,
    })
    conf.update(settings.kafka.librdkafka)
    producer = Producer(conf)
    try:
        metadata = producer.list_topics(args.topic, timeout=15)
    except KafkaException as exc:
        raise PublishError(f"cannot reach Kafka at {conf['bootstrap.servers']}: {exc}") from exc
    topic_meta = metadata.topics.get(args.topic)
    if topic_meta is None or topic_meta.error is not None:
        raise PublishError(f"topic {args.topic!r} is not available: {getattr(topic_meta, 'error', 'missing')}")

    tty = sys.stderr.isatty()
    next_report = time.monotonic() + (0.25 if tty else 5.0)
    produce, poll = producer.produce, producer.poll
    extra: dict[str, Any] = {} if args.partition is None else {"partition": args.partition}
    limit = args.count
    interrupted = False
    try:
        passes = 0
        while args.repeat == 0 or passes < args.repeat:
            passes += 1
            for log_type, body in records(args.files, args.form, time_fields, progress):
                if limit is not None and progress.sent >= limit:
                    break
                while True:
                    try:
                        produce(args.topic, body, **extra)
                        break
                    except BufferError:
                        poll(0.05)
                progress.sent += 1
                progress.bytes += len(body)
                progress.by_type[log_type] += 1
                if progress.sent % 1000 == 0:
                    poll(0)
                    now = time.monotonic()
                    if args.rate is not None:
                        ahead = progress.sent / args.rate - (now - progress.started)
                        if ahead > 0:
                            time.sleep(ahead)
                    if now >= next_report:
                        next_report = now + (0.25 if tty else 5.0)
                        sys.stderr.write(("\r" if tty else "") + progress.line(len(producer)) + ("" if tty else "\n"))
                elif args.rate is not None and args.rate < 1000:
                    ahead = progress.sent / args.rate - (time.monotonic() - progress.started)
                    if ahead > 0:
                        time.sleep(ahead)
            if limit is not None and progress.sent >= limit:
                break
    except KeyboardInterrupt:
        interrupted = True
    remaining = producer.flush(120)
    progress.failed += remaining
    if tty:
        sys.stderr.write("\r" + progress.line(remaining) + "\n")
    summary = progress.summary(args.topic)
    _print_summary(summary)
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    if interrupted:
        return 130
    return 1 if progress.failed else 0


def _print_summary(summary: dict[str, Any]) -> None:
    out = sys.stderr
    width = max([len(name) for name in summary["by_log_type"]] + [8])
    out.write(f"{'log type':<{width}}  records\n")
    for name, count in summary["by_log_type"].items():
        out.write(f"{name:<{width}}  {count:>9,}\n")
    out.write(f"{'total':<{width}}  {summary['records']:>9,}  to {summary['topic']}: {summary['bytes'] / 1e6:,.1f} MB "
              f"in {summary['seconds']:.1f}s = {summary['records_per_second']:,.0f} rec/s; "
              f"delivered {summary['delivered']:,}, failed {summary['failed']:,}\n")
    if summary["unconverted"]:
        out.write(f"{summary['unconverted']:,} lines were not Zeek records and were sent unchanged\n")
    if summary["skipped_tsv_lines"]:
        out.write(f"{summary['skipped_tsv_lines']:,} TSV lines did not parse and were skipped\n")
    for error in summary["errors"]:
        out.write(f"delivery error: {error}\n")


def run(args: argparse.Namespace) -> int:
    try:
        return publish(args)
    except PublishError as exc:
        sys.stderr.write(f"zeek-pipeline publish: {exc}\n")
        return 2
