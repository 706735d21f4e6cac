"""Routing by a byte scan, and typing with dead letters instead of crashes or silent loss."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.test_writer_support import CONFIG, documents
from zeek_pipeline.writer import convert
from zeek_pipeline.writer.convert import INTERNAL_ERROR, UNROUTABLE, Converter, route


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter.from_config_dir(CONFIG)


def test_routes_real_documents_by_their_top_level_log_type() -> None:
    for log_type in ("dns", "ssl", "known_services"):
        assert {route(doc) for doc in documents(log_type, 200)} == {(log_type, None)}


def test_a_log_type_key_inside_raw_does_not_fool_routing() -> None:
    doc = orjson.loads(documents("dns", 1)[0])
    tricky = {"raw": {"log_type": "conn", **doc["raw"]}, "source": "zeek", "log_type": "dns",
              "normalized": doc["normalized"], "enriched": doc["enriched"]}
    assert route(orjson.dumps(tricky)) == ("dns", None)


def test_a_log_type_inside_a_string_value_does_not_fool_routing() -> None:
    doc = {"source": "zeek", "note": 'x "log_type":"conn" y', "log_type": "dns", "raw": {}}
    assert route(orjson.dumps(doc)) == ("dns", None)


def test_spaced_json_still_routes() -> None:
    assert route(b'{"source": "zeek", "log_type": "dns", "raw": {}}') == ("dns", None)


@pytest.mark.parametrize(("value", "reason"), [
    (None, convert.EMPTY),
    (b"", convert.EMPTY),
    (b"{not json", convert.INVALID_JSON),
    (b"[1, 2]", convert.NOT_AN_OBJECT),
    (b'{"raw": {}}', convert.INVALID_LOG_TYPE),
    (b'{"log_type": "../../etc", "raw": {}}', convert.INVALID_LOG_TYPE),
    (b'{"log_type": 7}', convert.INVALID_LOG_TYPE),
])
def test_unroutable_messages_get_a_reason(value: bytes | None, reason: str) -> None:
    assert route(value) == (UNROUTABLE, reason)


def test_converts_a_real_batch_without_rejects(converter: Converter) -> None:
    docs = documents("dns", 3000)
    result = converter.convert("dns", docs, [2] * len(docs), list(range(100, 100 + len(docs))))
    assert result.rejects == ()
    assert result.table.num_rows == len(docs)
    assert result.table.column("_kafka_offset").to_pylist() == list(range(100, 100 + len(docs)))
    assert set(result.table.column("_kafka_partition").to_pylist()) == {2}


def test_untypable_documents_are_rejected_with_reason_and_the_rest_kept(converter: Converter) -> None:
    docs = list(documents("dns", 50))
    bad = orjson.loads(docs[7])
    bad["raw"]["trans_id"] = "not a count"
    docs[7] = orjson.dumps(bad)
    result = converter.convert("dns", docs, [0] * 50, list(range(50)))
    assert [r.index for r in result.rejects] == [7]
    assert result.table.num_rows == 49
    assert 7 not in result.table.column("_kafka_offset").to_pylist()


def test_a_converter_that_raises_is_bisected_to_the_bad_document(converter: Converter,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = convert.convert_documents

    def flaky(log_type, values, partitions, offsets, **kw):  # type: ignore[no-untyped-def]
        if any(b"BOOM" in v for v in values):
            raise RuntimeError("converter bug")
        return real(log_type, values, partitions, offsets, **kw)

    monkeypatch.setattr(convert, "convert_documents", flaky)
    docs = list(documents("ssl", 40))
    docs[13] = docs[13].replace(b'"source":"zeek"', b'"source":"zeek","BOOM":1', 1)
    result = converter.convert("ssl", docs, [0] * 40, list(range(40)))
    assert [(r.index, r.reason) for r in result.rejects] == [(13, INTERNAL_ERROR)]
    assert "converter bug" in result.rejects[0].detail
    assert result.table.column("_kafka_offset").to_pylist() == [i for i in range(40) if i != 13]
