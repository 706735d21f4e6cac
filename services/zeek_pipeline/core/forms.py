"""Convert one Zeek record between the two message forms (for the publish tool and for tests).

- "tagged": {"<log_type>": {...}} as the zeek-kafka plugin writes it: `_path`/`_write_ts` dropped and
  every ISO 8601 time turned into epoch seconds (a float, the plugin's default JSON::TS_EPOCH);
- "flat": {"_path": "<log_type>", ...} as json-streaming-logs writes it (times left as they are);
- "as-is": the input unchanged.

Which fields are times: `time_fields` when given (e.g. from schema.json), else every string value of the
json-streaming-logs ISO shape "YYYY-MM-DDTHH:MM:SS[.f]Z" (vectors of such strings too).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

import orjson

from zeek_pipeline.core.timefmt import iso_to_us, us_to_epoch

Form = Literal["tagged", "flat", "as-is"]
FORMS: tuple[Form, ...] = ("tagged", "flat", "as-is")


class FormError(ValueError):
    """The input is not one Zeek record in either form."""


def split(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(log type, record) of a flat or tagged message; the record is a shallow copy."""
    if "_path" in message:
        log_type = message["_path"]
        record = {key: value for key, value in message.items() if key != "_path"}
    elif len(message) == 1:
        log_type, inner = next(iter(message.items()))
        if not isinstance(inner, dict):
            raise FormError(f"tag {log_type!r} does not hold a record object")
        record = dict(inner)
    else:
        raise FormError("neither a flat record with _path nor a tagged {\"<log_type>\": {...}} message")
    if not isinstance(log_type, str) or not log_type:
        raise FormError(f"log type {log_type!r} is not a non-empty string")
    return log_type, record


def _looks_iso(value: str) -> bool:
    return 20 <= len(value) <= 30 and value[-1] == "Z" and value[4] == "-" and value[10] == "T"


def _epoch(value: Any) -> Any:
    if isinstance(value, str) and _looks_iso(value):
        us = iso_to_us(value)
        if us is not None:
            return us_to_epoch(us)
    return value


def iso_times_to_epoch(record: dict[str, Any], time_fields: Collection[str] | None = None) -> dict[str, Any]:
    """A copy of `record` with its ISO 8601 times as epoch float seconds (µs exact on the way back)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if time_fields is not None and key not in time_fields:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [_epoch(item) for item in value]
        else:
            out[key] = _epoch(value)
    return out


def to_tagged(message: dict[str, Any], time_fields: Collection[str] | None = None) -> dict[str, Any]:
    log_type, record = split(message)
    record.pop("_write_ts", None)
    return {log_type: iso_times_to_epoch(record, time_fields)}


def to_flat(message: dict[str, Any]) -> dict[str, Any]:
    if "_path" in message:
        return message
    log_type, record = split(message)
    return {"_path": log_type, **record}


def convert(message: dict[str, Any], form: Form, time_fields: Collection[str] | None = None) -> dict[str, Any]:
    """`message` (either form) in the requested form; FormError when it is not one Zeek record."""
    if form == "tagged":
        return to_tagged(message, time_fields)
    if form == "flat":
        return to_flat(message)
    if form == "as-is":
        return message
    raise FormError(f"unknown form {form!r} (allowed: {', '.join(FORMS)})")


def convert_body(body: bytes, form: Form, time_fields: Collection[str] | None = None) -> bytes:
    """One NDJSON line / message body in the requested form ("as-is" returns it untouched, unparsed).

    Raises FormError when the body is not one Zeek record (not JSON, not an object, no log type)."""
    if form == "as-is":
        return body
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FormError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise FormError("not a JSON object")
    return orjson.dumps(convert(message, form, time_fields))
