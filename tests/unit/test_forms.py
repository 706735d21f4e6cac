"""Converting real records between the flat and the tagged message forms."""

from __future__ import annotations

import gzip

import orjson
import pytest

from tests.infra.zeek_data import SAMPLE_ZEEK
from zeek_pipeline.core.forms import FormError, convert, convert_body, split, to_flat, to_tagged
from zeek_pipeline.core.timefmt import to_us


def first(log_type: str) -> dict[str, object]:
    with gzip.open(SAMPLE_ZEEK / f"{log_type}.json.gz", "rb") as handle:
        return orjson.loads(handle.readline())  # type: ignore[no-any-return]


def test_tagged_drops_path_and_write_ts_and_makes_times_epoch_floats() -> None:
    flat = first("ntp")
    tagged = to_tagged(flat)
    assert list(tagged) == ["ntp"]
    record = tagged["ntp"]
    assert "_path" not in record and "_write_ts" not in record
    assert record["ts"] == 1521911725.733635
    assert record["xmt_time"] == 1521911713.139938 and record["ref_time"] == 0.0
    assert record["ref_id"] == flat["ref_id"]  # not a time: untouched
    for key in ("ts", "xmt_time"):
        assert to_us(record[key]) == to_us(flat[key])


def test_time_fields_restrict_the_conversion() -> None:
    record = to_tagged(first("ntp"), time_fields={"ts"})["ntp"]
    assert isinstance(record["ts"], float) and isinstance(record["xmt_time"], str)


def test_flat_adds_path_first_and_keeps_flat_input() -> None:
    assert list(to_flat({"dns": {"ts": 1.5, "uid": "C1"}})) == ["_path", "ts", "uid"]
    flat = first("dns")
    assert to_flat(flat) is flat
    assert convert(flat, "as-is") is flat


def test_round_trip_keeps_the_record() -> None:
    flat = first("x509")
    back = convert(convert(flat, "tagged"), "flat")
    assert set(back) == set(flat) - {"_write_ts"}
    for key, value in back.items():
        assert value == flat[key] or to_us(value) == to_us(flat[key])


@pytest.mark.parametrize("message", [{}, {"a": 1, "b": 2}, {"dns": 5}, {"_path": ""}, {"_path": 3}])
def test_not_one_record_is_an_error(message: dict[str, object]) -> None:
    with pytest.raises(FormError):
        split(message)


def test_unknown_form_is_an_error() -> None:
    with pytest.raises(FormError):
        convert(first("dns"), "xml")  # type: ignore[arg-type]


def test_convert_body_works_on_lines() -> None:
    with gzip.open(SAMPLE_ZEEK / "dns.json.gz", "rb") as handle:
        line = handle.readline().rstrip(b"\n")
    assert convert_body(line, "as-is") is line
    tagged = orjson.loads(convert_body(line, "tagged"))
    assert tagged == to_tagged(orjson.loads(line))
    assert orjson.loads(convert_body(orjson.dumps(tagged), "flat"))["_path"] == "dns"
    for bad in (b"{", b"[1]", b"{}"):
        with pytest.raises(FormError):
            convert_body(bad, "tagged")
