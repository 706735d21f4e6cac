"""The seed's log format, `TIMESTAMP | LEVEL | COMPONENT | MESSAGE | CONTEXT`, to stdout and log/<component>.log.

Context is key=value pairs passed as `logger.info("msg", extra={"context": {"eps": 8200}})`.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import orjson

from zeek_pipeline.settings import LogSettings


def _context_text(context: Any) -> str:
    if not context:
        return ""
    if isinstance(context, dict):
        return " ".join(f"{key}={value}" for key, value in context.items())
    return str(context)


class PipeFormatter(logging.Formatter):
    """`2026-02-03T10:30:00Z | INFO | health | memory=612MB buffer=38% eps=8200 | `"""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        component = getattr(record, "component", None) or record.name.rsplit(".", 1)[-1] or self.component
        line = f"{stamp} | {record.levelname} | {component} | {record.getMessage()} | " + _context_text(
            getattr(record, "context", None))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "component": getattr(record, "component", None) or self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = getattr(record, "context", None)
        if context:
            entry["context"] = context
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(settings: LogSettings, component: str, stream_to: TextIO | None = None) -> None:
    """Configure the root logger once per process: stdout (or `stream_to`) always, plus
    <log.path>/<component>.log if set."""
    formatter: logging.Formatter = (
        JsonFormatter(component) if settings.format == "json" else PipeFormatter(component))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stream = logging.StreamHandler(stream_to or sys.stdout)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    if settings.path:
        directory = Path(settings.path)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(directory / f"{component}.log")
            file_handler.setFormatter(formatter)
            root.addHandler(file_handler)
        except OSError as exc:  # a read-only root filesystem in a pod: stdout is enough
            root.warning("cannot write log file in %s: %s", directory, exc)
    root.setLevel(settings.level)
