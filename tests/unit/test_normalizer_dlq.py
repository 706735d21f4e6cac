"""Dead-letter records and lineage headers (pure)."""

from __future__ import annotations

from zeek_pipeline.normalizer.dlq import MAX_DETAIL_BYTES, dead_letter, output_headers


def _letter(**overrides: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "key": b"CXWv6p3arKYeMETxOg", "value": b'{"dns": ', "original_headers": [("trace", b"abc")],
        "reason": "invalid_json", "detail": "unexpected end of data", "topic": "zeek-raw", "partition": 2,
        "offset": 41, "timestamp_ms": 1521911720865, "max_value_bytes": 1 << 20,
    }
    args.update(overrides)
    return dead_letter(**args)  # type: ignore[arg-type]


def test_dead_letter_keeps_original_key_value_and_headers_first() -> None:
    letter = _letter()
    assert letter.key == b"CXWv6p3arKYeMETxOg"
    assert letter.value == b'{"dns": '
    assert letter.headers[0] == ("trace", b"abc")


def test_dead_letter_appends_reason_detail_and_source_coordinates() -> None:
    headers = dict(_letter().headers)
    assert headers["error.reason"] == b"invalid_json"
    assert headers["error.detail"] == b"unexpected end of data"
    assert headers["source.topic"] == b"zeek-raw"
    assert headers["source.partition"] == b"2"
    assert headers["source.offset"] == b"41"
    assert headers["source.timestamp"] == b"1521911720865"
    assert "error.truncated_from" not in headers


def test_dead_letter_accepts_headers_as_a_mapping_and_none_values() -> None:
    letter = _letter(original_headers={"a": None, "b": "text"})
    assert letter.headers[:2] == [("a", None), ("b", "text")]


def test_dead_letter_without_timestamp_has_no_timestamp_header() -> None:
    assert "source.timestamp" not in dict(_letter(timestamp_ms=None).headers)
    assert "source.timestamp" not in dict(_letter(timestamp_ms=-1).headers)


def test_dead_letter_of_an_empty_message_keeps_none_value() -> None:
    letter = _letter(value=None, key=None, original_headers=None, reason="empty")
    assert letter.value is None and letter.key is None
    assert dict(letter.headers)["error.reason"] == b"empty"


def test_dead_letter_detail_is_cut_on_a_character_boundary() -> None:
    detail = "é" * MAX_DETAIL_BYTES  # two bytes each
    cut = dict(_letter(detail=detail).headers)["error.detail"]
    assert isinstance(cut, bytes)
    assert len(cut) <= MAX_DETAIL_BYTES
    assert cut.decode("utf-8") == "é" * (MAX_DETAIL_BYTES // 2)


def test_dead_letter_value_over_the_topic_limit_is_cut_and_says_its_size() -> None:
    letter = _letter(value=b"x" * 5000, reason="too_large", max_value_bytes=1024)
    assert letter.value == b"x" * 1024
    assert dict(letter.headers)["error.truncated_from"] == b"5000"


def test_output_headers_carry_log_type_and_source_coordinates() -> None:
    assert output_headers(b"dns", b"zeek-raw", b"0", 123456789012) == [
        ("log_type", b"dns"), ("source.topic", b"zeek-raw"), ("source.partition", b"0"),
        ("source.offset", b"123456789012")]
