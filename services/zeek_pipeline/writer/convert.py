"""Buffered three-layer documents -> typed Arrow table + the documents that cannot be typed (for the DLQ).

Routing needs only the log type of a message, read from the bytes without parsing the document: the
first `"log_type":"..."` before the `"raw":` object is the top-level key (inside a JSON string the
quotes would be escaped, so a value cannot fake it); anything else takes the orjson path. The typing
itself is core/arrow.py's vectorised `convert_documents`; if it ever raises (a bug, not bad data), the
batch is bisected so only the offending documents are dead-lettered and the rest is written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa

from zeek_pipeline.core.arrow import convert_documents
from zeek_pipeline.core.rules import NormalizationRules, load_rules
from zeek_pipeline.core.schema import ZeekSchema, arrow_schema, load_schema
from zeek_pipeline.writer.layout import is_valid_log_type

log = logging.getLogger("zeek_pipeline.writer.convert")

# Reasons for messages the writer dead-letters (besides core/arrow.py's REJECT_* codes).
EMPTY = "empty"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
INVALID_LOG_TYPE = "invalid_log_type"
INTERNAL_ERROR = "internal_error"

# The pseudo log type of messages that cannot even be routed; never a valid log type (it has a `!`).
UNROUTABLE = "!unroutable"

_LOG_TYPE_RE = re.compile(rb'"log_type":"([A-Za-z0-9_\-]{1,100})"')
_names: dict[bytes, str] = {}


_PREFIX = b'{"source":"zeek","log_type":"'  # how the normalizer-enricher (orjson) starts every document


def route_fast(value: bytes) -> str:
    """The log type of a message (UNROUTABLE when it has none): a prefix check and one slice for documents
    of the normalizer-enricher and already seen log types, `route` for anything else."""
    if value.startswith(_PREFIX):
        end = value.find(b'"', 29, 140)
        if end > 29:
            name = _names.get(value[29:end])
            if name is not None:
                return name
    return route(value)[0]


def route(value: bytes | None) -> tuple[str, str | None]:
    """(log type, None) for a routable message, else (UNROUTABLE, reason)."""
    if not value:
        return UNROUTABLE, EMPTY
    match = _LOG_TYPE_RE.search(value)
    if match is not None:
        raw_at = value.find(b'"raw":')
        if raw_at < 0 or match.start() < raw_at:
            name = _names.get(match.group(1))
            if name is None:
                name = match.group(1).decode()
                if len(_names) < 10_000:
                    _names[match.group(1)] = name
            return name, None
    return _route_slow(value)


def _route_slow(value: bytes) -> tuple[str, str | None]:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return UNROUTABLE, INVALID_JSON
    if not isinstance(doc, dict):
        return UNROUTABLE, NOT_AN_OBJECT
    log_type = doc.get("log_type")
    if not isinstance(log_type, str) or not is_valid_log_type(log_type):
        return UNROUTABLE, INVALID_LOG_TYPE
    return log_type, None


@dataclass(frozen=True, slots=True)
class Reject:
    index: int  # position in the converted batch
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Converted:
    table: pa.Table
    rejects: tuple[Reject, ...]


class Converter:
    """schema.json + normalization.json, loaded once; converts one (log type, partition) buffer at a time."""

    def __init__(self, schema: ZeekSchema, rules: NormalizationRules) -> None:
        self.schema = schema
        self.rules = rules

    @classmethod
    def from_config_dir(cls, config_dir: Path | str) -> Converter:
        directory = Path(config_dir)
        return cls(load_schema(directory / "schema.json"), load_rules(directory / "normalization.json"))

    @property
    def schema_version(self) -> str:
        return str(self.schema.version)

    def convert(self, log_type: str, values: Sequence[bytes], partitions: Sequence[int],
                offsets: Sequence[int]) -> Converted:
        tables: list[pa.Table] = []
        rejects: list[Reject] = []
        self._convert_range(log_type, values, partitions, offsets, 0, len(values), tables, rejects)
        if not tables:
            table = arrow_schema(log_type, self.schema, self.rules).empty_table()
        elif len(tables) == 1:
            table = tables[0]
        else:
            table = pa.concat_tables(tables)
        return Converted(table, tuple(sorted(rejects, key=lambda r: r.index)))

    def _convert_range(self, log_type: str, values: Sequence[bytes], partitions: Sequence[int],
                       offsets: Sequence[int], start: int, end: int, tables: list[pa.Table],
                       rejects: list[Reject]) -> None:
        try:
            conversion = convert_documents(log_type, values[start:end], partitions[start:end], offsets[start:end],
                                           schema=self.schema, rules=self.rules)
        except Exception as exc:  # noqa: BLE001 - a converter bug must not stop the stream or lose data
            if end - start == 1:
                rejects.append(Reject(start, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:1000]))
                return
            log.warning("conversion of %d %s documents raised %s; bisecting", end - start, log_type, exc)
            middle = (start + end) // 2
            self._convert_range(log_type, values, partitions, offsets, start, middle, tables, rejects)
            self._convert_range(log_type, values, partitions, offsets, middle, end, tables, rejects)
            return
        if conversion.table.num_rows:
            tables.append(conversion.table)
        rejects.extend(Reject(start + r.index, r.reason, r.detail) for r in conversion.rejects)
