"""Typed Zeek log schemas (config/schema.json) and the Parquet/Arrow layout derived from them.

schema.json lists, per log type, every raw field with Zeek's own type:

    {"$schema_version": "1",
     "$all_logs": {"fields": {"_node_name": "string"}},        # fields any log type may carry
     "$unknown_log": {"fields": {"ts": "time", "uid": "string", ...}},  # types of unlisted log types
     "conn": {"fields": {"ts": "time", "uid": "string", "id.orig_h": "addr", "tunnel_parents": "set[string]"}}}

`arrow_schema()` turns one log type's fields plus the normalization rules into the column layout of its
Parquet files; the rules for naming columns are in `table_layout()` and in docs/parquet-layout.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from zeek_pipeline.core.config_file import config_file, read_json
from zeek_pipeline.core.rules import ConfigError, NormalizationRules, is_valid_name

ZEEK_SCALAR_TYPES: tuple[str, ...] = (
    "time", "interval", "count", "int", "double", "bool", "string", "addr", "subnet", "port", "enum",
)
ZEEK_CONTAINERS: tuple[str, ...] = ("set", "vector")
ALLOWED_TYPES_TEXT = ", ".join(ZEEK_SCALAR_TYPES) + ", or set[T] / vector[T] of one of those"

# Bumped when the column rules below change (not when schema.json changes: that has $schema_version).
# 2: the twelve GeoIP/ASN enriched columns.
LAYOUT_VERSION = "2"
META_LOG_TYPE = b"zeek_pipeline.log_type"
META_SCHEMA_VERSION = b"zeek_pipeline.schema_version"
META_LAYOUT_VERSION = b"zeek_pipeline.layout_version"
FIELD_LAYER = b"zeek.layer"
FIELD_TYPE = b"zeek.type"
FIELD_SOURCE = b"zeek.source"

EXTRA_COLUMN = "_extra"
PARTITION_COLUMN = "_kafka_partition"
OFFSET_COLUMN = "_kafka_offset"
META_COLUMNS = (EXTRA_COLUMN, PARTITION_COLUMN, OFFSET_COLUMN)
RAW_RENAME_PREFIX = "raw_"

TIMESTAMP_US = pa.timestamp("us", tz="UTC")
TIMESTAMP_MS = pa.timestamp("ms", tz="UTC")

# The enriched layer (fixed by the core contract), in column order, with compact integer types.
ENRICHED_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("event_year", pa.int16()), ("event_month", pa.int8()), ("event_day", pa.int8()),
    ("event_hour", pa.int8()), ("event_weekday", pa.int8()),
    ("src_ip_is_private", pa.bool_()), ("dst_ip_is_private", pa.bool_()),
    ("src_is_local", pa.bool_()), ("dst_is_local", pa.bool_()),
    ("direction", pa.string()), ("service", pa.string()), ("community_id", pa.string()),
    # GeoIP/ASN (enrich.geoip; null when it is off or the address is private/local/unknown)
    ("src_geo_country", pa.string()), ("src_geo_city", pa.string()),
    ("src_geo_lat", pa.float64()), ("src_geo_lon", pa.float64()),
    ("src_asn", pa.int64()), ("src_as_org", pa.string()),
    ("dst_geo_country", pa.string()), ("dst_geo_city", pa.string()),
    ("dst_geo_lat", pa.float64()), ("dst_geo_lon", pa.float64()),
    ("dst_asn", pa.int64()), ("dst_as_org", pa.string()),
)
# Normalized keys the transformer sets itself: ms since the epoch.
PIPELINE_TIMES: tuple[str, ...] = ("ingest_time", "zeek_write_ts")

_CONTAINER_RE = re.compile(r"^(set|vector)\[([a-z]+)\]$")
_FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SchemaError(ConfigError):
    """schema.json is wrong: the message names the file, the key path, the bad value and what is allowed."""


@dataclass(frozen=True, slots=True)
class ZeekType:
    """A parsed Zeek log type: a scalar, optionally inside a set or vector (Zeek logs no deeper nesting)."""

    scalar: str
    container: Literal["set", "vector"] | None = None

    @classmethod
    def parse(cls, text: str) -> ZeekType:
        if text in ZEEK_SCALAR_TYPES:
            return cls(text)
        match = _CONTAINER_RE.match(text)
        if match and match.group(2) in ZEEK_SCALAR_TYPES:
            return cls(match.group(2), "set" if match.group(1) == "set" else "vector")
        raise ValueError(f"{text!r} is not a Zeek type; allowed: {ALLOWED_TYPES_TEXT}")

    def __str__(self) -> str:
        return f"{self.container}[{self.scalar}]" if self.container else self.scalar

    @property
    def is_time(self) -> bool:
        return self.scalar == "time"


_SCALAR_ARROW: dict[str, pa.DataType] = {
    "time": TIMESTAMP_US,
    "interval": pa.float64(),  # seconds, exactly the double Zeek logged
    "count": pa.uint64(),
    "int": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "addr": pa.string(),
    "subnet": pa.string(),
    "port": pa.uint16(),
    "enum": pa.string(),
}


def arrow_type(zeek_type: ZeekType) -> pa.DataType:
    """The Parquet/Arrow type of a Zeek type (time -> timestamp[us, UTC], count -> uint64, set -> list)."""
    scalar = _SCALAR_ARROW[zeek_type.scalar]
    return pa.list_(scalar) if zeek_type.container else scalar


def _check_type(text: str) -> str:
    ZeekType.parse(text)
    return text


def _check_field_name(name: str) -> str:
    if not _FIELD_NAME_RE.match(name) or len(name) > 200:
        raise ValueError(f"{name!r} is not a Zeek field name (identifiers joined by '.', e.g. 'id.orig_h')")
    return name


def _check_log_type(name: str) -> str:
    if not is_valid_name(name):
        raise ValueError(f"log type {name!r} is not a valid name (1-100 of A-Z a-z 0-9 _ -)")
    return name


ZeekTypeName = Annotated[str, AfterValidator(_check_type)]
FieldName = Annotated[str, AfterValidator(_check_field_name)]
LogTypeName = Annotated[str, AfterValidator(_check_log_type)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogTypeSchema(_Frozen):
    """The raw fields of one Zeek log type, in Zeek's column order."""

    fields: dict[FieldName, ZeekTypeName] = Field(default_factory=dict)


class ZeekSchema(_Frozen):
    """schema.json as a model: per log type fields plus the two `$` sections."""

    version: Annotated[str, Field(min_length=1)] = "1"
    all_logs: LogTypeSchema = LogTypeSchema()
    unknown_log: LogTypeSchema = LogTypeSchema()
    log_types: dict[LogTypeName, LogTypeSchema] = Field(default_factory=dict)

    def knows(self, log_type: str) -> bool:
        return log_type in self.log_types

    def fields_for(self, log_type: str) -> dict[str, ZeekType]:
        """The typed raw fields of a log type: its own (or `$unknown_log`'s), then `$all_logs`'s."""
        own = self.log_types.get(log_type, self.unknown_log)
        merged = {name: ZeekType.parse(text) for name, text in own.fields.items()}
        for name, text in self.all_logs.fields.items():
            merged.setdefault(name, ZeekType.parse(text))
        return merged


# schema.json's metadata keys -> ZeekSchema attributes
_META_KEYS = {"$schema_version": "version", "$all_logs": "all_logs", "$unknown_log": "unknown_log"}
_IGNORED_META_KEYS = frozenset({"$comment", "$schema"})
_ATTR_TO_KEY = {attr: key for key, attr in _META_KEYS.items()}


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: {error.error_count()} invalid schema entr{'y' if error.error_count() == 1 else 'ies'}"]
    for item in error.errors():
        loc = [str(part) for part in item["loc"] if part != "[key]"]
        if loc and loc[0] == "log_types":
            loc = loc[1:]
        elif loc and loc[0] in _ATTR_TO_KEY:
            loc[0] = _ATTR_TO_KEY[loc[0]]
        path = ".".join(loc) or "(top level)"
        shown = orjson.dumps(item.get("input"), default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"  {path}: {message} (got {shown[:200]})")
    return "\n".join(lines)


def parse_schema(data: Any, source: str = "schema.json") -> ZeekSchema:
    """Validate already-parsed schema.json data; SchemaError names the file and the key path."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"{source}: the top level must be a JSON object of log type -> "
                          f"{{\"fields\": {{...}}}}, got {type(data).__name__}")
    model: dict[str, Any] = {"log_types": {}}
    for key, value in data.items():
        if key in _META_KEYS:
            if key == "$schema_version" and isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            model[_META_KEYS[key]] = value
        elif key.startswith("$"):
            if key not in _IGNORED_META_KEYS:
                allowed = ", ".join(sorted([*_META_KEYS, *_IGNORED_META_KEYS]))
                raise SchemaError(f"{source}: {key}: unknown metadata key (allowed: {allowed})")
        else:
            model["log_types"][key] = value
    try:
        return ZeekSchema.model_validate(model)
    except ValidationError as exc:
        raise SchemaError(_format_errors(source, exc)) from exc


def load_schema(path: Path | str) -> ZeekSchema:
    """Read and validate config/schema.json (a directory means its schema.json)."""
    file = config_file(path, "schema.json")
    return parse_schema(read_json(file, SchemaError), str(file))


# ---------------------------------------------------------------------------------------------------
# Column layout

Layer = Literal["normalized", "raw", "enriched", "meta"]


@dataclass(frozen=True, slots=True)
class Column:
    """One Parquet column and where its values come from.

    With a `source`, the values are that raw field typed `zeek_type` (a raw column, or a promoted
    target in layer "normalized"); otherwise they are the document's `layer`[`key`] ("normalized" or
    "enriched"), or for layer "meta" `_extra` and the Kafka lineage.
    """

    name: str
    type: pa.DataType
    layer: Layer
    key: str
    source: str | None = None
    zeek_type: ZeekType | None = None

    def arrow_field(self) -> pa.Field:
        metadata = {FIELD_LAYER: self.layer.encode()}
        if self.zeek_type is not None:
            metadata[FIELD_TYPE] = str(self.zeek_type).encode()
        if self.source is not None:
            metadata[FIELD_SOURCE] = self.source.encode()
        return pa.field(self.name, self.type, nullable=True, metadata=metadata)


@dataclass(frozen=True, slots=True)
class TableLayout:
    """Every column of one log type's table, plus what the converter needs to read documents."""

    log_type: str
    known: bool  # listed in schema.json (else typed by $unknown_log)
    schema_version: str
    columns: tuple[Column, ...]
    raw_fields: dict[str, ZeekType]  # every typed raw field; others go to _extra
    # normalized keys read from the document (not derived from raw) with their read types
    normalized_reads: dict[str, pa.DataType]
    # promoted target -> its typed raw field (to declare the normalized copy when reading)
    promoted: dict[str, str] = field(default_factory=dict)

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [column.arrow_field() for column in self.columns],
            metadata={
                META_LOG_TYPE: self.log_type.encode(),
                META_SCHEMA_VERSION: self.schema_version.encode(),
                META_LAYOUT_VERSION: LAYOUT_VERSION.encode(),
            },
        )

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


def _static_type(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def table_layout(log_type: str, schema: ZeekSchema, rules: NormalizationRules) -> TableLayout:
    """The column rules, in order (documented in docs/parquet-layout.md):

    1. normalized columns in the rules' order (`event_time`, `ingest_time`, promoted targets, static
       fields, `zeek_write_ts`). A promoted raw field (one per target, as the rules require) is stored
       once, under the target's name, with its own Zeek type and filled from raw, so `event_time` keeps
       the raw `ts` to the microsecond. `event_time` without a `time`-typed source comes from normalized
       (ms), `ingest_time`/`zeek_write_ts` are timestamp[ms, UTC], static fields are typed by their value.
       A promoted field missing from schema.json gives no column (its raw value lands in `_extra`).
    2. raw columns, in schema.json order (`$all_logs` fields last), under their Zeek names (dots kept);
       a raw field whose name is taken by a normalized, enriched or meta column is stored as
       `raw_<name>` (e.g. conn `service` -> `raw_service`), prefixed again while that is taken too
       (by another column or another raw field); raw fields that collide with nothing keep their name.
    3. enriched columns (always present, null where not computable).
    4. `_extra` (JSON object text of raw fields not in schema.json, null when none), `_kafka_partition`
       int32, `_kafka_offset` int64.
    """
    fields = schema.fields_for(log_type)
    rule = rules.rule_for(log_type)
    normalized_names = rules.normalized_fields(log_type)

    targets = {target: raw_name for raw_name, target in rule.promote.items()}

    columns: list[Column] = []
    promoted: dict[str, str] = {}
    normalized_reads: dict[str, pa.DataType] = {}
    stored_only_as_target: set[str] = set()
    for name in normalized_names:
        source = targets.get(name)
        if source is not None:
            zeek_type = fields.get(source)
            if zeek_type is not None and (name != "event_time" or zeek_type == ZeekType("time")):
                promoted[name] = source
                stored_only_as_target.add(source)
                columns.append(Column(name, arrow_type(zeek_type), "normalized", name, source, zeek_type))
                continue
            if name != "event_time":
                continue
        if name == "event_time":
            normalized_reads[name] = pa.int64()
            columns.append(Column(name, TIMESTAMP_US, "normalized", name))
        elif name in PIPELINE_TIMES:
            normalized_reads[name] = pa.int64()
            columns.append(Column(name, TIMESTAMP_MS, "normalized", name))
        elif name in rule.static:
            value_type = _static_type(rule.static[name])
            normalized_reads[name] = value_type
            columns.append(Column(name, value_type, "normalized", name))

    enriched = [Column(name, typ, "enriched", name) for name, typ in ENRICHED_COLUMNS]
    reserved = {column.name for column in columns} | set(normalized_names) | {c.name for c in enriched}
    reserved |= set(META_COLUMNS)
    raw_names = [name for name in fields if name not in stored_only_as_target]
    # raw names that collide with nothing keep their name; only the colliding ones are prefixed
    taken = reserved | {name for name in raw_names if name not in reserved}
    for raw_name in raw_names:
        column_name = raw_name
        if raw_name in reserved:
            while column_name in taken:
                column_name = RAW_RENAME_PREFIX + column_name
            taken.add(column_name)
        zeek_type = fields[raw_name]
        columns.append(Column(column_name, arrow_type(zeek_type), "raw", raw_name, raw_name, zeek_type))

    columns.extend(enriched)
    columns.append(Column(EXTRA_COLUMN, pa.string(), "meta", EXTRA_COLUMN))
    columns.append(Column(PARTITION_COLUMN, pa.int32(), "meta", PARTITION_COLUMN))
    columns.append(Column(OFFSET_COLUMN, pa.int64(), "meta", OFFSET_COLUMN))
    return TableLayout(
        log_type=log_type,
        known=schema.knows(log_type),
        schema_version=schema.version,
        columns=tuple(columns),
        raw_fields=fields,
        normalized_reads=normalized_reads,
        promoted=promoted,
    )


def arrow_schema(log_type: str, schema: ZeekSchema, rules: NormalizationRules) -> pa.Schema:
    """The Arrow schema of one log type's Parquet files, with log type and schema version as metadata.

    An unknown log type gets the `$unknown_log` fields (the common ts/uid/id.* columns), the normalized
    and enriched columns, and `_extra` holding everything else.
    """
    return table_layout(log_type, schema, rules).arrow_schema
