"""One Kafka message body -> (log type, Zeek record) or a Rejected with a precise reason; never raises.

Two message forms exist in real deployments:
- tagged, as the zeek-kafka plugin writes: {"dns": {...record...}} (exactly one key, an object value);
- flat, as json-streaming-logs writes: {"_path": "dns", "_write_ts": ..., ...record...}.
A flat record without `_path` is accepted when its topic maps to a log type (`topic_log_types`).
`_path` is removed from the record and `_write_ts` is handed back separately (it becomes the normalized
`zeek_write_ts`), in both forms; every other field stays exactly as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from zeek_pipeline.core.rules import is_valid_name

# Reject reason codes (the `reason` of Rejected; `detail` is the human text).
EMPTY = "empty"
TOO_LARGE = "too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
NO_TAG = "no_tag"
SEVERAL_TAGS = "several_tags"
TAG_NOT_OBJECT = "tag_not_object"
MISSING_PATH = "missing_path"
INVALID_LOG_TYPE = "invalid_log_type"
INVALID_TIME = "invalid_time"
INTERNAL_ERROR = "internal_error"  # a bug, never expected: the transformer still does not raise
REASONS = (EMPTY, TOO_LARGE, INVALID_UTF8, INVALID_JSON, NOT_AN_OBJECT, NO_TAG, SEVERAL_TAGS, TAG_NOT_OBJECT,
           MISSING_PATH, INVALID_LOG_TYPE, INVALID_TIME, INTERNAL_ERROR)

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    log_type: str = ""  # set when the record's type was read before it was refused (dashboards count by it)


Decoded = tuple[str, dict[str, Any], Any]  # (log type, record, _write_ts value or None)

_valid_log_types: set[str] = set()


def check_log_type(value: object) -> Rejected | None:
    """None when `value` is a usable log type (cached: the set of real log types is small)."""
    if type(value) is str and value in _valid_log_types:
        return None
    if type(value) is not str or not is_valid_name(value):
        shown = orjson.dumps(value, default=str)[:80].decode("utf-8", "replace")
        return Rejected(INVALID_LOG_TYPE, f"log type {shown} is not 1-100 of A-Z a-z 0-9 _ -")
    if len(_valid_log_types) < 10_000:
        _valid_log_types.add(value)
    return None


def decode(body: bytes | bytearray | memoryview, *, max_bytes: int = 8 * 1024 * 1024,
           topic_log_type: str | None = None) -> Decoded | Rejected:
    """Decode one message body; the record dict is owned by the caller (fields `_path`/`_write_ts` removed)."""
    size = len(body)
    if size == 0:
        return Rejected(EMPTY, "empty message body")
    if size > max_bytes:
        return Rejected(TOO_LARGE, f"message body of {size} bytes exceeds max_message_bytes={max_bytes}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _bad_json(body, exc)
    if type(obj) is not dict:
        return Rejected(NOT_AN_OBJECT, f"message is {_JSON_TYPES.get(type(obj), 'not an object')}, "
                        "not a JSON object")
    if "_path" in obj:
        log_type = obj.pop("_path")
        record: dict[str, Any] = obj
    elif len(obj) == 1:
        log_type, record = next(iter(obj.items()))
        if type(record) is not dict:
            if topic_log_type is None:
                return Rejected(TAG_NOT_OBJECT, f"the value of tag {str(log_type)[:80]!r} is "
                                f"{_JSON_TYPES.get(type(record), 'not an object')}, not a Zeek record object")
            log_type, record = topic_log_type, obj
    elif not obj:
        return Rejected(NO_TAG, "empty object: neither a tagged record {\"<log_type>\": {...}} nor a flat one")
    elif topic_log_type is not None:
        log_type, record = topic_log_type, obj
    elif all(type(value) is dict for value in obj.values()):
        return Rejected(SEVERAL_TAGS, f"{len(obj)} tags ({', '.join(list(obj)[:5])[:120]}); "
                        "a tagged message has exactly one")
    else:
        return Rejected(MISSING_PATH, "flat record without \"_path\" (and no topic -> log type mapping)")
    if type(log_type) is not str or log_type not in _valid_log_types:  # a hit in the set saves the call
        bad = check_log_type(log_type)
        if bad is not None:
            return bad
    write_ts = record.pop("_write_ts", None) if "_write_ts" in record else None
    if "_path" in record:  # a tagged record that also carries _path: the tag names the type
        del record["_path"]
    return log_type, record, write_ts


def _bad_json(body: bytes | bytearray | memoryview, exc: orjson.JSONDecodeError) -> Rejected:
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected(INVALID_UTF8, f"not valid UTF-8 at byte {err.start}: {err.reason}")
    return Rejected(INVALID_JSON, f"not valid JSON: {exc}"[:300])
