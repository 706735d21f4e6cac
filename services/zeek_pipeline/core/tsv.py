"""Zeek's default TSV log format -> typed records, line by line (for `normalize` backfills of archived logs).

Header lines set the format: `#separator \\x09` (its value with \\xHH escapes), `#set_separator`,
`#empty_field`, `#unset_field`, `#path` (the log type), `#fields`, `#types`; `#open`/`#close` and other
`#` lines are ignored. A new `#separator` or `#fields` line starts a new header block, so concatenated
log files (several blocks in one file) read correctly.

Values are typed from `#types` the way Zeek's JSON writer would write them, so a TSV record and the same
record from JSON normalize alike: count/int/port -> int (exact, uint64 range checked), double/interval ->
float, bool T/F -> true/false, time -> epoch float seconds (an ISO time stays text), addr/subnet/enum/
string/pattern -> string, set[T]/vector[T]/table[T] -> list. The unset marker (`-`) leaves the field out;
the empty marker (`(empty)`) is an empty list or an empty string; `\\xHH` escapes are undone (bytes that
are not UTF-8 then read as the text "\\xHH", as Zeek's JSON writer prints them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from zeek_pipeline.core.decode import INVALID_TIME, MISSING_PATH
from zeek_pipeline.core.timefmt import epoch_text_to_us, iso_to_us

TSV_NO_HEADER = "tsv_no_header"  # a data line before any #fields header
TSV_FIELD_COUNT = "tsv_field_count"  # a data line with more or fewer columns than #fields
TSV_BAD_VALUE = "tsv_bad_value"  # a value that is not of its #types type

_HEX = frozenset(b"0123456789abcdefABCDEF")
_U64 = 1 << 64
_I64 = 1 << 63


class TsvRecord(NamedTuple):
    line: int
    log_type: str
    record: dict[str, Any]


class TsvReject(NamedTuple):
    line: int
    reason: str
    detail: str


class _BadValue(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def unescape(value: bytes) -> bytes:
    """Undo Zeek's \\xHH escapes (Zeek escapes a literal backslash as \\x5c, so every \\x is an escape)."""
    if b"\\x" not in value:
        return value
    parts = value.split(b"\\x")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 2 and part[0] in _HEX and part[1] in _HEX:
            out.append(bytes((int(part[:2], 16),)))
            out.append(part[2:])
        else:
            out.append(b"\\x")
            out.append(part)
    return b"".join(out)


def _text(value: bytes) -> str:
    return unescape(value).decode("utf-8", "backslashreplace")


def _is_int_text(value: bytes) -> bool:
    body = value[1:] if value[:1] == b"-" else value
    return body.isdigit()  # bytes.isdigit is ASCII-only; int() alone would accept " 1" and "1_0"


def _count(value: bytes) -> int:
    if not value.isdigit() or int(value) >= _U64:
        raise ValueError("not a count (0 .. 2^64-1)")
    return int(value)


def _int(value: bytes) -> int:
    if not _is_int_text(value) or not -_I64 <= int(value) < _I64:
        raise ValueError("not an int (64-bit signed)")
    return int(value)


def _port(value: bytes) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise ValueError("not a port (0 .. 65535)")
    return int(value)


def _double(value: bytes) -> float:
    if b"_" in value or value.strip() != value:
        raise ValueError("not a number")
    return float(value)


def _bool(value: bytes) -> bool:
    if value == b"T":
        return True
    if value == b"F":
        return False
    raise ValueError("not a bool (T or F)")


def _time(value: bytes) -> float | str:
    text = _text(value)
    us = epoch_text_to_us(text)
    if us is not None:
        return us / 1_000_000
    if iso_to_us(text) is not None:
        return text
    raise _BadValue(INVALID_TIME, "not a Zeek time (epoch seconds or ISO 8601)")


_SCALARS: dict[str, Callable[[bytes], Any]] = {
    "count": _count, "int": _int, "port": _port, "double": _double, "interval": _double, "bool": _bool,
    "time": _time,
}


def _scalar(zeek_type: str) -> Callable[[bytes], Any]:
    return _SCALARS.get(zeek_type, _text)  # addr, subnet, enum, string, pattern, unknown types: text


class _Column(NamedTuple):
    name: str
    zeek_type: str
    convert: Callable[[bytes], Any]
    container: bool
    text: bool


class TsvReader:
    """Feed lines (without the line break) in file order; get a record, a reject or None (header line)."""

    def __init__(self, default_log_type: str | None = None) -> None:
        self._default_log_type = default_log_type
        self._reset(b"\t")

    def _reset(self, separator: bytes) -> None:
        self._sep = separator
        self._set_sep = b","
        self._empty = b"(empty)"
        self._unset = b"-"
        self._path: str | None = None
        self._fields: list[str] | None = None
        self._types: list[str] | None = None
        self._columns: list[_Column] | None = None

    @property
    def log_type(self) -> str | None:
        return self._path or self._default_log_type

    def feed(self, line_no: int, line: bytes) -> TsvRecord | TsvReject | None:
        if line[:1] == b"#":
            self._header(line)
            return None
        if self._fields is None:
            return TsvReject(line_no, TSV_NO_HEADER, "data line before the #fields header")
        log_type = self.log_type
        if log_type is None:
            return TsvReject(line_no, MISSING_PATH, "no #path header and no log type given")
        columns = self._columns if self._columns is not None else self._compile()
        values = line.split(self._sep)
        if len(values) != len(columns):
            return TsvReject(line_no, TSV_FIELD_COUNT, f"{len(values)} values for {len(columns)} #fields")
        record: dict[str, Any] = {}
        unset, empty = self._unset, self._empty
        for column, value in zip(columns, values, strict=True):
            if value == unset:
                continue
            try:
                if value == empty and (column.container or column.text):
                    record[column.name] = [] if column.container else ""
                elif column.container:
                    record[column.name] = [None if item == unset else column.convert(item)
                                           for item in value.split(self._set_sep)]
                else:
                    record[column.name] = column.convert(value)
            except ValueError as exc:
                reason = exc.reason if isinstance(exc, _BadValue) else TSV_BAD_VALUE
                shown = value[:60].decode("utf-8", "backslashreplace")
                return TsvReject(line_no, reason, f"{column.name}={shown!r} ({column.zeek_type}): {exc}")
        return TsvRecord(line_no, log_type, record)

    def _header(self, line: bytes) -> None:
        if line.startswith(b"#separator "):
            self._reset(unescape(line[len(b"#separator "):]) or b"\t")
            return
        name, _, value = line[1:].partition(self._sep)
        if name == b"set_separator":
            self._set_sep = unescape(value) or b","
        elif name == b"empty_field":
            self._empty = unescape(value)
        elif name == b"unset_field":
            self._unset = unescape(value)
        elif name == b"path":
            self._path = _text(value) or None
        elif name == b"fields":
            self._fields = [_text(part) for part in value.split(self._sep)]
            self._types = None
            self._columns = None
        elif name == b"types":
            self._types = [_text(part) for part in value.split(self._sep)]
            self._columns = None

    def _compile(self) -> list[_Column]:
        fields: Sequence[str] = self._fields or []
        types: Sequence[str] = self._types if self._types and len(self._types) == len(fields) else []
        columns = []
        for index, name in enumerate(fields):
            zeek_type = types[index] if types else "string"
            container = False
            element = zeek_type
            for prefix in ("set[", "vector[", "table["):
                if zeek_type.startswith(prefix) and zeek_type.endswith("]"):
                    container, element = True, zeek_type[len(prefix):-1]
                    break
            convert = _scalar(element)
            columns.append(_Column(name, zeek_type, convert, container, convert is _text))
        self._columns = columns
        return columns
