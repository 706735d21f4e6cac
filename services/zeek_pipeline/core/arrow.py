"""Buffered three-layer documents of one log type -> one typed Arrow table, vectorised.

The fast path reads the whole batch with pyarrow.json against an explicit schema (the raw, normalized
and enriched structs typed from schema.json and the rules) and builds the flat columns with
pyarrow.compute; no Python runs per row except to build `_extra` for the rows that have unknown raw
fields. Raw time fields arrive as ISO 8601 strings or epoch seconds: the first and last documents of
the batch decide which one the reader expects (ISO is parsed by the reader itself; epoch seconds are
read as float64 and turned into exact microseconds by round(x * 1e6), exact for Zeek's 6 decimals).

A batch mixing ISO and epoch documents (two sensors feeding one topic) is split by time form and each
group read on the fast path, rows put back in input order. A batch the reader still cannot take (a
string where a count is expected, a value out of range, an invalid document, one document mixing both
forms) goes through the per-document fallback: each document is checked and
coerced in Python (lossless coercions only: "42" -> 42 for a count, 42 -> "42" for a string, ISO or
epoch -> microseconds), re-serialised, and read again by the same vectorised builder. A document that
cannot be typed at all is not dropped silently: `convert_documents()` returns it as a `RowReject`
(index, reason, detail) so the caller can dead-letter it; `documents_to_table()` raises
`ConversionError` carrying both the table of good rows and the rejects.

Column rules (names, promotions, collisions, `_extra`, lineage): `schema.table_layout()` and
docs/parquet-layout.md.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from zeek_pipeline.core.rules import NormalizationRules
from zeek_pipeline.core.schema import (
    ENRICHED_COLUMNS,
    EXTRA_COLUMN,
    OFFSET_COLUMN,
    PARTITION_COLUMN,
    PIPELINE_TIMES,
    TIMESTAMP_MS,
    TIMESTAMP_US,
    TableLayout,
    ZeekSchema,
    ZeekType,
    arrow_type,
    table_layout,
)
from zeek_pipeline.core.timefmt import to_us

REJECT_INVALID_DOCUMENT = "invalid_document"
REJECT_LOG_TYPE_MISMATCH = "log_type_mismatch"
REJECT_UNTYPABLE_VALUE = "untypable_value"

TimeForm = Literal["iso", "epoch", "us"]  # ISO 8601 text, epoch seconds, epoch microseconds (fallback)
ConversionPath = Literal["fast", "grouped", "per_document"]

_MIN_BLOCK_SIZE = 1 << 22
_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT_RANGES: dict[pa.DataType, tuple[int, int]] = {
    pa.uint64(): (0, (1 << 64) - 1),
    pa.int64(): _INT64,
    pa.uint16(): (0, 65535),
    pa.int32(): (-(1 << 31), (1 << 31) - 1),
    pa.int16(): (-(1 << 15), (1 << 15) - 1),
    pa.int8(): (-128, 127),
}
_INT_TEXT_RE = re.compile(r"^[+-]?\d+$")
_BOOL_TEXT = {"T": True, "F": False, "true": True, "false": False, "True": True, "False": False}


@dataclass(frozen=True, slots=True)
class RowReject:
    """A document of the batch that could not be typed; `index` is its position in `values`."""

    index: int
    reason: str  # REJECT_* constant
    detail: str


@dataclass(frozen=True, slots=True)
class Conversion:
    """The typed table of the good documents (input order) and the documents that failed."""

    table: pa.Table
    rejects: tuple[RowReject, ...] = ()
    # "fast": one vectorised read of the whole batch; "grouped": one per time form (ISO/epoch mixed);
    # "per_document": documents checked and coerced one by one first
    path: ConversionPath = "fast"
    kept: tuple[int, ...] | None = None  # indexes of `values` in the table; None means all of them

    @property
    def fast_path(self) -> bool:
        return self.path == "fast"


class ConversionError(ValueError):
    """Some documents could not be typed; `.conversion` holds the table of the others and the rejects."""

    def __init__(self, conversion: Conversion) -> None:
        self.conversion = conversion
        first = conversion.rejects[0]
        super().__init__(f"{len(conversion.rejects)} document(s) could not be typed; first: "
                         f"#{first.index} {first.reason}: {first.detail}")


class _Untypable(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------------------------------
# Per log type: layout, read schemas


@dataclass(slots=True)
class _Plan:
    layout: TableLayout
    schema: pa.Schema  # layout.arrow_schema, built once (the property builds it anew on every call)
    time_fields: tuple[str, ...]
    read_schemas: dict[tuple[tuple[str, TimeForm], ...], pa.Schema] = field(default_factory=dict)
    canonical_schema: pa.Schema | None = None
    coercers: _Coercers | None = None
    mixed_forms: bool = False  # a batch of this log type mixed ISO and epoch times: check batches first


_PLANS: OrderedDict[tuple[str, int, int], tuple[_Plan, ZeekSchema, NormalizationRules]] = OrderedDict()
_PLAN_CACHE_SIZE = 256
_PLANS_LOCK = threading.Lock()  # the writer may convert in several threads


def _plan(log_type: str, schema: ZeekSchema, rules: NormalizationRules) -> _Plan:
    # keyed by identity; the entry keeps schema and rules alive so an id is never reused while cached
    key = (log_type, id(schema), id(rules))
    with _PLANS_LOCK:
        hit = _PLANS.get(key)
        if hit is not None:
            _PLANS.move_to_end(key)
            return hit[0]
    layout = table_layout(log_type, schema, rules)
    time_fields = tuple(name for name, zt in layout.raw_fields.items() if zt.is_time)
    plan = _Plan(layout, layout.arrow_schema, time_fields)
    with _PLANS_LOCK:
        _PLANS[key] = (plan, schema, rules)
        if len(_PLANS) > _PLAN_CACHE_SIZE:
            _PLANS.popitem(last=False)
    return plan


def _read_type(zeek_type: ZeekType, form: TimeForm) -> pa.DataType:
    if not zeek_type.is_time:
        return arrow_type(zeek_type)
    scalar = {"iso": TIMESTAMP_US, "epoch": pa.float64(), "us": pa.int64()}[form]
    return pa.list_(scalar) if zeek_type.container else scalar


def _read_schema(plan: _Plan, forms: Mapping[str, TimeForm], canonical: bool) -> pa.Schema:
    layout = plan.layout
    raw = [pa.field(name, _read_type(zt, forms.get(name, "iso"))) for name, zt in layout.raw_fields.items()]
    normalized = [pa.field(name, typ) for name, typ in layout.normalized_reads.items()]
    if not canonical:
        # declare the normalized copies of promoted fields too, so the reader need not infer them
        for target, source in layout.promoted.items():
            zeek_type = layout.raw_fields[source]
            if zeek_type.is_time:  # the normalizer turns promoted times into ms
                normalized.append(pa.field(target, pa.int64()))
            else:
                normalized.append(pa.field(target, arrow_type(zeek_type)))
    fields = [
        pa.field("log_type", pa.string()),
        pa.field("raw", pa.struct(raw)),
        pa.field("normalized", pa.struct(normalized)),
        pa.field("enriched", pa.struct([pa.field(name, typ) for name, typ in ENRICHED_COLUMNS])),
    ]
    if canonical:
        fields.append(pa.field(EXTRA_COLUMN, pa.string()))
    else:
        fields.append(pa.field("source", pa.string()))
    return pa.schema(fields)


def _cached_read_schema(plan: _Plan, forms: dict[str, TimeForm]) -> pa.Schema:
    key = tuple(sorted(forms.items()))
    schema = plan.read_schemas.get(key)
    if schema is None:
        schema = plan.read_schemas[key] = _read_schema(plan, forms, canonical=False)
    return schema


def _canonical_read_schema(plan: _Plan) -> pa.Schema:
    if plan.canonical_schema is None:
        plan.canonical_schema = _read_schema(plan, dict.fromkeys(plan.time_fields, "us"), canonical=True)
    return plan.canonical_schema


# ---------------------------------------------------------------------------------------------------
# Reading and building


def _read(buffer: bytes, schema: pa.Schema, documents: Sequence[bytes], infer: bool) -> pa.Table:
    # a block must hold the longest line; a buffer smaller than the minimum block holds only shorter ones
    block_size = _MIN_BLOCK_SIZE
    if len(buffer) >= _MIN_BLOCK_SIZE:
        block_size = max(_MIN_BLOCK_SIZE, max(map(len, documents)) + 2)
    read_options = pj.ReadOptions(use_threads=True, block_size=block_size)
    parse_options = pj.ParseOptions(explicit_schema=schema,
                                    unexpected_field_behavior="infer" if infer else "ignore")
    return pj.read_json(pa.BufferReader(buffer), read_options=read_options, parse_options=parse_options)


def _epoch_seconds_to_us(array: pa.Array) -> pa.Array:
    micros = pc.round(pc.multiply(array, 1e6), round_mode="half_to_even")
    return pc.cast(pc.cast(micros, pa.int64()), TIMESTAMP_US)


def _time_values(array: pa.Array, zeek_type: ZeekType, form: TimeForm) -> pa.Array:
    """Raw time values as read -> timestamp[us, UTC] (lists element-wise, keeping offsets and nulls)."""
    if form == "iso":
        return array

    def convert(values: pa.Array) -> pa.Array:
        return _epoch_seconds_to_us(values) if form == "epoch" else pc.cast(values, TIMESTAMP_US)

    if zeek_type.container is None:
        return convert(array)
    items = convert(array.values)
    mask = pc.is_null(array) if array.null_count else None
    return pa.ListArray.from_arrays(array.offsets, items, type=pa.list_(TIMESTAMP_US), mask=mask)


def _struct_children(table: pa.Table, name: str) -> dict[str, pa.Array]:
    column = table.column(name).combine_chunks()
    return {column.type.field(i).name: child for i, child in enumerate(column.flatten())}


def _build(
    plan: _Plan,
    table: pa.Table,
    forms: Mapping[str, TimeForm],
    extra: pa.Array,
    partitions: Sequence[int],
    offsets: Sequence[int],
) -> pa.Table:
    layout = plan.layout
    raw = _struct_children(table, "raw")
    normalized = _struct_children(table, "normalized")
    enriched = _struct_children(table, "enriched")
    arrays: list[pa.Array] = []
    for column in layout.columns:
        if column.source is not None:
            zeek_type = layout.raw_fields[column.source]
            values = raw[column.source]
            if zeek_type.is_time:
                values = _time_values(values, zeek_type, forms.get(column.source, "iso"))
            arrays.append(values)
        elif column.layer == "normalized":
            values = normalized[column.key]
            if column.key == "event_time":
                values = pc.cast(pc.multiply_checked(values, 1000), TIMESTAMP_US)
            elif column.key in PIPELINE_TIMES:
                values = pc.cast(values, TIMESTAMP_MS)
            arrays.append(values)
        elif column.layer == "enriched":
            arrays.append(enriched[column.key])
        elif column.name == EXTRA_COLUMN:
            arrays.append(extra)
        elif column.name == PARTITION_COLUMN:
            arrays.append(pa.array(partitions, type=pa.int32()))
        elif column.name == OFFSET_COLUMN:
            arrays.append(pa.array(offsets, type=pa.int64()))
        else:  # pragma: no cover - table_layout() makes no other kind of column
            raise AssertionError(f"unknown column {column.name}")
    return pa.Table.from_arrays(arrays, schema=plan.schema)


def _extra_for_rows(plan: _Plan, table: pa.Table, values: Sequence[bytes]) -> pa.Array:
    """`_extra` of the fast path: JSON of the unknown raw fields, built per row only where there are some."""
    count = len(values)
    raw_type = table.schema.field("raw").type
    unknown = [raw_type.field(i) for i in range(raw_type.num_fields)
               if raw_type.field(i).name not in plan.layout.raw_fields]
    if not unknown:
        return pa.nulls(count, pa.string())
    children = _struct_children(table, "raw")
    if any(pa.types.is_null(f.type) for f in unknown):  # only JSON nulls seen: look at every row
        rows: list[int] = list(range(count))
    else:
        mask = children[unknown[0].name].is_valid()
        for f in unknown[1:]:
            mask = pc.or_(mask, children[f.name].is_valid())
        rows = pc.indices_nonzero(mask).to_pylist()
    texts: list[str | None] = [None] * count
    known = plan.layout.raw_fields
    for row in rows:
        document_raw = orjson.loads(values[row])["raw"]
        extra = {key: value for key, value in document_raw.items() if key not in known}
        texts[row] = orjson.dumps(extra).decode() if extra else None
    return pa.array(texts, type=pa.string())


# ---------------------------------------------------------------------------------------------------
# Fast path


def _forms_of(document: bytes, time_fields: Sequence[str]) -> dict[str, TimeForm] | None:
    try:
        parsed = orjson.loads(document)
        raw = parsed["raw"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None
    if not isinstance(raw, dict):
        return None
    forms: dict[str, TimeForm] = {}
    for name in time_fields:
        value = raw.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, str):
            forms[name] = "iso"
        elif isinstance(value, int | float) and not isinstance(value, bool):
            forms[name] = "epoch"
    return forms


def _peek_forms(plan: _Plan, values: Sequence[bytes]) -> dict[str, TimeForm] | None:
    """Time forms of the batch from its first and last documents; None when they disagree."""
    if not plan.time_fields:
        return {}
    first = _forms_of(values[0], plan.time_fields)
    last = _forms_of(values[-1], plan.time_fields) if len(values) > 1 else first
    if first is None or last is None:
        return None
    forms = {**last, **first}
    if any(last.get(name, form) != form for name, form in first.items()):
        return None
    default: TimeForm = next(iter(forms.values()), "iso")
    return {name: forms.get(name, default) for name in plan.time_fields}


_TS_KEY = b'"ts":'
_EPOCH_START = frozenset(b"-0123456789")
_FORM_SAMPLES = 16  # documents of a batch whose `ts` form is checked before a read


def _ts_forms_agree(values: Sequence[bytes], forms: Mapping[str, TimeForm]) -> bool:
    """Whether sampled documents of the batch have the `ts` form its first and last documents have, so once a
    log type has shown mixed ISO and epoch batches (two sensors on one topic), such a batch goes to the
    grouped path at once instead of after a failed read. Interleaved sensors show in any sample; a batch the
    sample misses only costs a failed read (the read checks types). Counting the forms in the whole buffer
    cost a scan of every byte for each batch of such a log type."""
    form = forms.get("ts")
    if form is None:
        return True
    step = max(1, len(values) // _FORM_SAMPLES)
    for value in values[step:-1:step]:
        at = value.find(_TS_KEY)
        if at < 0:
            continue
        if (value[at + 5:at + 6] == b'"') != (form == "iso"):
            return False
    return True


def _fast(plan: _Plan, log_type: str, values: Sequence[bytes], partitions: Sequence[int],
          offsets: Sequence[int], forms: dict[str, TimeForm] | None = None) -> pa.Table | None:
    peeked = forms is None
    if forms is None:
        forms = _peek_forms(plan, values)
        if forms is None:
            return None
    # A document with a raw newline (pretty-printed JSON) splits into lines that are not JSON objects: the
    # read fails or the row count differs, and the batch takes the per-document path.
    buffer = b"\n".join(values)
    if peeked and plan.mixed_forms and not _ts_forms_agree(values, forms):
        return None
    try:
        table = _read(buffer, _cached_read_schema(plan, forms), values, infer=True)
        if table.num_rows != len(values):
            return None
        log_types = table.column("log_type")
        if log_types.null_count or not pc.all(pc.equal(log_types, log_type)).as_py():
            return None
        if table.column("raw").null_count:
            return None
        extra = _extra_for_rows(plan, table, values)
        return _build(plan, table, forms, extra, partitions, offsets)
    except (pa.ArrowException, orjson.JSONDecodeError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------------
# Mixed time forms: one vectorised read per form


def _form_key(document: bytes, time_fields: Sequence[str]) -> str | None:
    """"iso" or "epoch" when every time field of the document has that form; None without time values;
    "mixed" (both in one document) or "bad" (not readable) send the document to the per-document path.

    The common case is decided from the bytes after the first `"ts":` key (orjson writes no spaces, and
    the sequence cannot occur inside a JSON string, where quotes are escaped). A wrong guess only costs
    speed: each group is still read with type checks and falls back per document when it fails."""
    at = document.find(_TS_KEY)
    if at >= 0:
        follows = document[at + 5:at + 6]
        if follows == b'"':
            return "iso"
        if follows and follows[0] in _EPOCH_START:
            return "epoch"
    forms = _forms_of(document, time_fields)
    if forms is None:
        return "bad"
    distinct = set(forms.values())
    if len(distinct) > 1:
        return "mixed"
    return distinct.pop() if distinct else None


def _grouped(plan: _Plan, log_type: str, values: Sequence[bytes], partitions: Sequence[int],
             offsets: Sequence[int]) -> Conversion | None:
    """A batch mixing ISO and epoch times (two sensors on one topic): split it by form, convert each
    group on the fast path (the per-document path only for a group that still fails), and put the rows
    back in input order. None when the batch is not mixed, so grouping would not help."""
    keys = [_form_key(value, plan.time_fields) for value in values]
    groups: dict[str | None, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    timeless = groups.pop(None, [])
    if len(groups) < 2:
        return None
    plan.mixed_forms = True
    largest = max(groups, key=lambda key: len(groups[key]))
    groups[largest] = sorted([*groups[largest], *timeless])  # no time values: fits any form
    original: list[int] = []
    rejects: list[RowReject] = []
    tables: list[pa.Table] = []
    for key, indexes in groups.items():
        part_values = [values[i] for i in indexes]
        part_partitions = [partitions[i] for i in indexes]
        part_offsets = [offsets[i] for i in indexes]
        table = None
        if key in ("iso", "epoch"):
            forms: dict[str, TimeForm] = dict.fromkeys(plan.time_fields, "iso" if key == "iso" else "epoch")
            table = _fast(plan, log_type, part_values, part_partitions, part_offsets, forms)
        if table is not None:
            tables.append(table)
            original.extend(indexes)
            continue
        conversion = _fallback(plan, log_type, part_values, part_partitions, part_offsets)
        tables.append(conversion.table)
        kept = conversion.kept if conversion.kept is not None else range(len(indexes))
        original.extend(indexes[k] for k in kept)
        rejects.extend(RowReject(indexes[r.index], r.reason, r.detail) for r in conversion.rejects)
    combined = pa.concat_tables(tables).take(pc.sort_indices(pa.array(original, type=pa.int64())))
    rejects.sort(key=lambda reject: reject.index)
    kept_all = sorted(original)
    return Conversion(combined, tuple(rejects), "grouped",
                      None if len(kept_all) == len(values) else tuple(kept_all))


# ---------------------------------------------------------------------------------------------------
# Fallback: per document coercion, then the same builder


def _to_time_us(value: Any) -> int:
    # the normalizer's own parser: the same forms are accepted (ISO 8601 with zone/offset, epoch)
    micros = None if isinstance(value, bool) else to_us(value)
    if micros is None:
        raise ValueError("not epoch seconds or ISO 8601")
    return micros


def _check_int(value: int, bounds: tuple[int, int]) -> int:
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"out of range {bounds[0]}..{bounds[1]}")
    return value


def _to_int(value: Any, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int):
        return _check_int(value, bounds)
    if isinstance(value, float) and value.is_integer():
        return _check_int(int(value), bounds)
    if isinstance(value, str) and _INT_TEXT_RE.match(value.strip()):
        return _check_int(int(value.strip()), bounds)
    raise ValueError("not an integer")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        result = float(value.strip())
    else:
        raise ValueError("not a number")
    if not math.isfinite(result):
        raise ValueError("not a finite number")
    return result


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip()]
    raise ValueError("not a boolean")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return orjson.dumps(value).decode()  # keep the JSON text, e.g. 1 -> "1"
    raise ValueError("not a scalar")


_SCALAR_COERCE: dict[str, Callable[[Any], Any]] = {
    "time": _to_time_us,
    "interval": _to_float,
    "double": _to_float,
    "count": lambda value: _to_int(value, _INT_RANGES[pa.uint64()]),
    "int": lambda value: _to_int(value, _INT64),
    "port": lambda value: _to_int(value, _INT_RANGES[pa.uint16()]),
    "bool": _to_bool,
    "string": _to_str,
    "addr": _to_str,
    "subnet": _to_str,
    "enum": _to_str,
}


Coercer = Callable[[Any], Any]


def _scalar_coercer(coerce: Coercer, exact: type, bounds: tuple[int, int] | None = None) -> Coercer:
    """`coerce` behind a shortcut for values already of the exact JSON type (most of them)."""
    if bounds is not None:
        low, high = bounds

        def bounded(value: Any) -> Any:
            return value if type(value) is int and low <= value <= high else coerce(value)
        return bounded

    def shortcut(value: Any) -> Any:
        return value if type(value) is exact else coerce(value)
    return shortcut


def _raw_coercer(zeek_type: ZeekType) -> Coercer:
    """The per-document coercion of one raw field (lossless only; ValueError when impossible)."""
    scalar = zeek_type.scalar
    coerce = _SCALAR_COERCE[scalar]
    if scalar in ("count", "int", "port"):
        bounds = {"count": _INT_RANGES[pa.uint64()], "int": _INT64, "port": _INT_RANGES[pa.uint16()]}[scalar]
        coerce = _scalar_coercer(coerce, int, bounds)
    elif scalar in ("interval", "double"):
        coerce = _scalar_coercer(coerce, float)  # JSON has no NaN/inf: a float is always finite
    elif scalar == "bool":
        coerce = _scalar_coercer(coerce, bool)
    elif scalar != "time":
        coerce = _scalar_coercer(coerce, str)
    if zeek_type.container is None:
        def single(value: Any) -> Any:
            if isinstance(value, list | dict):
                raise ValueError("a container where a single value is expected")
            return coerce(value)
        return single

    def members(value: Any) -> Any:
        items = value if isinstance(value, list) else [value]  # a lone member becomes a one-member set
        return [None if item is None else coerce(item) for item in items]
    return members


def _arrow_coercer(arrow: pa.DataType) -> Coercer:
    """The per-document coercion of a normalized/enriched value to its column's Arrow type."""
    if pa.types.is_integer(arrow):
        bounds = _INT_RANGES[arrow]
        return _scalar_coercer(lambda value: _to_int(value, bounds), int, bounds)
    if pa.types.is_floating(arrow):
        return _scalar_coercer(_to_float, float)
    if pa.types.is_boolean(arrow):
        return _scalar_coercer(_to_bool, bool)
    return _scalar_coercer(_to_str, str)


@dataclass(frozen=True, slots=True)
class _Coercers:
    raw: dict[str, tuple[Coercer, ZeekType]]
    normalized: tuple[tuple[str, Coercer, pa.DataType], ...]
    enriched: tuple[tuple[str, Coercer, pa.DataType], ...]


def _coercers(plan: _Plan) -> _Coercers:
    if plan.coercers is None:
        layout = plan.layout
        plan.coercers = _Coercers(
            raw={name: (_raw_coercer(zt), zt) for name, zt in layout.raw_fields.items()},
            normalized=tuple((key, _arrow_coercer(arrow), arrow) for key, arrow in layout.normalized_reads.items()),
            enriched=tuple((key, _arrow_coercer(arrow), arrow) for key, arrow in ENRICHED_COLUMNS),
        )
    return plan.coercers


def _shown(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()[:120]


def _canonical(plan: _Plan, log_type: str, value: bytes) -> dict[str, Any]:
    """One document -> the typed form the canonical read schema expects, or _Untypable."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _Untypable(REJECT_INVALID_DOCUMENT, f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _Untypable(REJECT_INVALID_DOCUMENT, f"not a JSON object but {type(document).__name__}")
    if document.get("log_type") != log_type:
        raise _Untypable(REJECT_LOG_TYPE_MISMATCH,
                         f"log_type {_shown(document.get('log_type'))} in a batch of {log_type!r}")
    layers = []
    for name in ("raw", "normalized", "enriched"):
        layer = document.get(name, {} if name != "raw" else None)
        if not isinstance(layer, dict):
            raise _Untypable(REJECT_INVALID_DOCUMENT, f"{name} is not a JSON object but {_shown(layer)}")
        layers.append(layer)
    raw, normalized, enriched = layers
    coercers = _coercers(plan)
    known = coercers.raw
    typed_raw: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, item in raw.items():
        entry = known.get(key)
        if entry is None:
            extra[key] = item
        elif item is not None:
            try:
                typed_raw[key] = entry[0](item)
            except (ValueError, OverflowError) as exc:
                raise _Untypable(REJECT_UNTYPABLE_VALUE,
                                 f"raw.{key}: {_shown(item)} is not a Zeek {entry[1]}: {exc}") from None
    typed_layers: list[dict[str, Any]] = []
    for name, layer, wanted in (("normalized", normalized, coercers.normalized),
                                ("enriched", enriched, coercers.enriched)):
        typed: dict[str, Any] = {}
        for key, coerce, arrow in wanted:
            item = layer.get(key)
            if item is not None:
                try:
                    typed[key] = coerce(item)
                except (ValueError, OverflowError) as exc:
                    raise _Untypable(REJECT_UNTYPABLE_VALUE,
                                     f"{name}.{key}: {_shown(item)} is not {arrow}: {exc}") from None
        typed_layers.append(typed)
    typed_normalized, typed_enriched = typed_layers
    return {
        "log_type": log_type,
        "raw": typed_raw,
        "normalized": typed_normalized,
        "enriched": typed_enriched,
        EXTRA_COLUMN: orjson.dumps(extra).decode() if extra else None,
    }


def _read_canonical(plan: _Plan, documents: list[bytes]) -> pa.Table:
    buffer = b"\n".join(documents)
    return _read(buffer, _canonical_read_schema(plan), documents, infer=False)


def _fallback(plan: _Plan, log_type: str, values: Sequence[bytes], partitions: Sequence[int],
              offsets: Sequence[int]) -> Conversion:
    rejects: list[RowReject] = []
    kept: list[int] = []
    documents: list[bytes] = []
    for index, value in enumerate(values):
        try:
            documents.append(orjson.dumps(_canonical(plan, log_type, value)))
        except _Untypable as exc:
            rejects.append(RowReject(index, exc.reason, exc.detail))
            continue
        kept.append(index)
    if not documents:
        return Conversion(plan.schema.empty_table(), tuple(rejects), "per_document", ())
    try:
        table = _read_canonical(plan, documents)
    except pa.ArrowException:
        # should not happen (every value was coerced); find the culprits one by one rather than fail all
        good_documents: list[bytes] = []
        good: list[int] = []
        for index, document in zip(kept, documents, strict=True):
            try:
                _read_canonical(plan, [document])
            except pa.ArrowException as exc:
                rejects.append(RowReject(index, REJECT_UNTYPABLE_VALUE, f"arrow: {exc}"))
                continue
            good.append(index)
            good_documents.append(document)
        rejects.sort(key=lambda reject: reject.index)
        kept, documents = good, good_documents
        if not documents:
            return Conversion(plan.schema.empty_table(), tuple(rejects), "per_document", ())
        table = _read_canonical(plan, documents)
    forms: dict[str, TimeForm] = dict.fromkeys(plan.time_fields, "us")
    extra = table.column(EXTRA_COLUMN).combine_chunks()
    built = _build(plan, table, forms, extra, [partitions[i] for i in kept], [offsets[i] for i in kept])
    return Conversion(built, tuple(rejects), "per_document", None if len(kept) == len(values) else tuple(kept))


# ---------------------------------------------------------------------------------------------------
# API


def convert_documents(
    log_type: str,
    values: Sequence[bytes],
    partitions: Sequence[int],
    offsets: Sequence[int],
    *,
    schema: ZeekSchema,
    rules: NormalizationRules,
) -> Conversion:
    """Three-layer JSON documents of one log type -> typed table + the documents that could not be typed.

    `partitions`/`offsets` are the Kafka lineage of each document (same length as `values`). Rows keep
    the input order; `Conversion.kept` maps table rows back to input indexes when some were rejected.
    """
    if not len(values) == len(partitions) == len(offsets):
        raise ValueError(f"values, partitions and offsets differ in length "
                         f"({len(values)}, {len(partitions)}, {len(offsets)})")
    plan = _plan(log_type, schema, rules)
    if not values:
        return Conversion(plan.schema.empty_table())
    table = _fast(plan, log_type, values, partitions, offsets)
    if table is not None:
        return Conversion(table)
    if plan.time_fields:
        grouped = _grouped(plan, log_type, values, partitions, offsets)
        if grouped is not None:
            return grouped
    return _fallback(plan, log_type, values, partitions, offsets)


def documents_to_table(
    log_type: str,
    values: Sequence[bytes],
    partitions: Sequence[int],
    offsets: Sequence[int],
    *,
    schema: ZeekSchema,
    rules: NormalizationRules,
) -> pa.Table:
    """The contract's entry point: the typed table of the batch; ConversionError if any document failed
    (its `.conversion` has the table of the good rows and the rejects, so nothing is lost)."""
    conversion = convert_documents(log_type, values, partitions, offsets, schema=schema, rules=rules)
    if conversion.rejects:
        raise ConversionError(conversion)
    return conversion.table
