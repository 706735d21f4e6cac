"""Decoding one message body: both forms, the topic mapping, and every reject reason."""

from __future__ import annotations

import gzip

import orjson
import pytest

from tests.infra.zeek_data import SAMPLE_ZEEK
from zeek_pipeline.core import decode as d
from zeek_pipeline.core.decode import Rejected, decode


def first_line(log_type: str, tagged: bool = False) -> bytes:
    path = SAMPLE_ZEEK / ("tagged" if tagged else "") / f"{log_type}.json.gz"
    with gzip.open(path, "rb") as handle:
        return handle.readline().rstrip(b"\n")


def test_decodes_flat_record_and_moves_path_and_write_ts_out_of_it() -> None:
    line = first_line("dns")
    log_type, record, write_ts = decode(line)  # type: ignore[misc]
    assert log_type == "dns"
    assert "_path" not in record and "_write_ts" not in record
    assert write_ts == orjson.loads(line)["_write_ts"]
    expected = {k: v for k, v in orjson.loads(line).items() if k not in ("_path", "_write_ts")}
    assert record == expected


def test_decodes_tagged_record_unchanged() -> None:
    line = first_line("ssl", tagged=True)
    log_type, record, write_ts = decode(line)  # type: ignore[misc]
    assert log_type == "ssl"
    assert record == orjson.loads(line)["ssl"]
    assert write_ts is None


def test_flat_record_with_path_last_is_flat() -> None:
    log_type, record, _ = decode(b'{"ts": 1517336154.078555, "uid": "C1", "_path": "http"}')  # type: ignore[misc]
    assert (log_type, record) == ("http", {"ts": 1517336154.078555, "uid": "C1"})


def test_tagged_record_carrying_path_uses_the_tag() -> None:
    log_type, record, _ = decode(b'{"conn": {"_path": "other", "ts": 1.5}}')  # type: ignore[misc]
    assert (log_type, record) == ("conn", {"ts": 1.5})


def test_topic_mapping_types_a_flat_record_without_path() -> None:
    body = b'{"ts": 1.5, "uid": "C1", "id.orig_h": "10.0.0.1"}'
    assert decode(body, topic_log_type="conn")[0] == "conn"  # type: ignore[index]
    assert decode(body) == Rejected(d.MISSING_PATH, decode(body).detail)  # type: ignore[union-attr]


def test_topic_mapping_does_not_override_an_explicit_form() -> None:
    assert decode(b'{"_path": "dns", "ts": 1.5}', topic_log_type="conn")[0] == "dns"  # type: ignore[index]
    assert decode(b'{"ssl": {"ts": 1.5}}', topic_log_type="conn")[0] == "ssl"  # type: ignore[index]
    # a single non-object field on a mapped topic is a flat record, not a bad tag
    assert decode(b'{"ts": 1.5}', topic_log_type="conn")[:2] == ("conn", {"ts": 1.5})  # type: ignore[index]


def test_keeps_uint64_counts_exact() -> None:
    _, record, _ = decode(b'{"_path": "conn", "orig_bytes": 18446744073709551615, '  # type: ignore[misc]
                          b'"resp_bytes": 9007199254740993}')
    assert record["orig_bytes"] == 2**64 - 1
    assert record["resp_bytes"] == 2**53 + 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", d.EMPTY),
        (b"x" * 1001, d.TOO_LARGE),
        (b'{"_path": "dns", "query": "\xff\xfe"}', d.INVALID_UTF8),
        (b'{"_path": "dns", "ts": ', d.INVALID_JSON),
        (b"   ", d.INVALID_JSON),
        (b'{"_path": "dns", "q": "\\ud800"}', d.INVALID_JSON),  # lone surrogate escape
        (b"NaN", d.INVALID_JSON),
        (b"[1, 2]", d.NOT_AN_OBJECT),
        (b'"dns"', d.NOT_AN_OBJECT),
        (b"null", d.NOT_AN_OBJECT),
        (b"{}", d.NO_TAG),
        (b'{"dns": {"ts": 1.0}, "conn": {"ts": 2.0}}', d.SEVERAL_TAGS),
        (b'{"dns": [1, 2]}', d.TAG_NOT_OBJECT),
        (b'{"dns": "x"}', d.TAG_NOT_OBJECT),
        (b'{"ts": 1.0, "uid": "C1"}', d.MISSING_PATH),
        (b'{"_path": "", "ts": 1.0}', d.INVALID_LOG_TYPE),
        (b'{"_path": 7, "ts": 1.0}', d.INVALID_LOG_TYPE),
        (b'{"_path": "../etc", "ts": 1.0}', d.INVALID_LOG_TYPE),
        (b'{"dns/x": {"ts": 1.0}}', d.INVALID_LOG_TYPE),
        (b'{"_path": "' + b"a" * 101 + b'"}', d.INVALID_LOG_TYPE),
    ],
)
def test_rejects_with_precise_reason(body: bytes, reason: str) -> None:
    result = decode(body, max_bytes=1000)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.detail


def test_every_reason_code_is_listed() -> None:
    assert set(d.REASONS) == {
        "empty", "too_large", "invalid_utf8", "invalid_json", "not_an_object", "no_tag", "several_tags",
        "tag_not_object", "missing_path", "invalid_log_type", "invalid_time", "internal_error",
    }


def test_accepts_memoryview_and_bytearray_bodies() -> None:
    body = first_line("weird")
    assert decode(memoryview(body))[0] == "weird"  # type: ignore[index]
    assert decode(bytearray(body))[0] == "weird"  # type: ignore[index]
