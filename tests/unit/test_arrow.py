"""core/arrow.py on hand-made three-layer documents: fast path, fallback, rejects, exactness, edge cases."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.infra.zeek_data import PROJECT_ROOT
from zeek_pipeline.core.arrow import (
    REJECT_INVALID_DOCUMENT,
    REJECT_LOG_TYPE_MISMATCH,
    REJECT_UNTYPABLE_VALUE,
    ConversionError,
    convert_documents,
    documents_to_table,
)
from zeek_pipeline.core.rules import NormalizationRules, load_rules, parse_rules
from zeek_pipeline.core.schema import ZeekSchema, load_schema, parse_schema
from zeek_pipeline.core.timefmt import to_us

CONFIG = PROJECT_ROOT / "config"
SCHEMA = load_schema(CONFIG / "schema.json")
RULES = load_rules(CONFIG / "normalization.json")
INGEST_MS = 1_700_000_000_123
UTC_US = pa.timestamp("us", tz="UTC")


def document(log_type: str, raw: dict[str, Any], *, rules: NormalizationRules = RULES,
             normalized: dict[str, Any] | None = None, enriched: dict[str, Any] | None = None,
             write_ts_ms: int | None = None) -> bytes:
    """A three-layer document shaped like the normalizer's: promoted copies, ms times, statics."""
    rule = rules.rule_for(log_type)
    layer: dict[str, Any] = {}
    for raw_name, target in rule.promote.items():
        if raw_name in raw:
            value = raw[raw_name]
            if target == "event_time":
                us = to_us(value)
                if us is None:  # hand-made bad times: the document carries no event_time
                    continue
                value = us // 1000
            layer[target] = value
    layer["ingest_time"] = INGEST_MS
    layer.update({k: v.replace("{log_type}", log_type) if isinstance(v, str) else v
                  for k, v in rule.static.items()})
    if write_ts_ms is not None:
        layer["zeek_write_ts"] = write_ts_ms
    layer.update(normalized or {})
    return orjson.dumps({"source": "zeek", "log_type": log_type, "raw": raw, "normalized": layer,
                         "enriched": enriched if enriched is not None else {}})


def convert(log_type: str, values: list[bytes], schema: ZeekSchema = SCHEMA,
            rules: NormalizationRules = RULES):  # type: ignore[no-untyped-def]
    return convert_documents(log_type, values, [3] * len(values), list(range(100, 100 + len(values))),
                             schema=schema, rules=rules)


def us_of(value: Any) -> int:
    """Microseconds of a timestamp read back from Arrow (tz-aware datetime)."""
    return int(pa.scalar(value, type=UTC_US).cast(pa.int64()).as_py())


CONN_ISO = {
    "ts": "2018-03-24T17:15:20.865716Z", "uid": "CqKst53mF3det3eDV9", "id.orig_h": "10.47.1.100",
    "id.orig_p": 41772, "id.resp_h": "fe80::1", "id.resp_p": 53, "proto": "udp", "service": "dns",
    "duration": 0.0008699893951416016, "orig_bytes": 34, "resp_bytes": 50, "conn_state": "SF",
    "local_orig": True, "local_resp": False, "missed_bytes": 0, "history": "Dd", "orig_pkts": 1,
    "orig_ip_bytes": 62, "resp_pkts": 1, "resp_ip_bytes": 78, "tunnel_parents": [],
}


# ---------------------------------------------------------------------------------------------------
# fast path


def test_converts_an_iso_batch_on_the_fast_path_keeping_microseconds() -> None:
    second = {**CONN_ISO, "ts": "2018-03-24T17:15:21Z", "uid": "C2", "tunnel_parents": ["Cx", "Cy"]}
    result = convert("conn", [document("conn", CONN_ISO), document("conn", second)])
    assert result.fast_path and not result.rejects
    table = result.table
    assert table.schema.field("event_time").type == UTC_US
    assert [us_of(v) for v in table.column("event_time").to_pylist()] == [1521911720865716, 1521911721000000]
    row = table.to_pylist()[0]
    assert row["flow_id"] == "CqKst53mF3det3eDV9"
    assert row["src_port"] == 41772 and row["dst_ip"] == "fe80::1"
    assert row["raw_service"] == "dns"
    assert row["src_bytes"] == 34 and table.schema.field("src_bytes").type == pa.uint64()
    assert row["duration"] == 0.0008699893951416016
    assert row["local_orig"] is True
    assert table.column("tunnel_parents").to_pylist() == [[], ["Cx", "Cy"]]
    assert row["_extra"] is None
    assert row["event_type"] == "conn"


def test_converts_epoch_seconds_exactly_to_the_microsecond() -> None:
    rng = random.Random(7)
    micros = [rng.randrange(0, 4_102_444_800_000_000) for _ in range(3000)]
    micros += [0, 1, 999_999, 1_517_336_154_078_555, 1_713_484_795_943_239, 4_102_444_799_999_999]
    texts = [f"{us // 1_000_000}.{us % 1_000_000:06d}" for us in micros]
    values = [f'{{"log_type":"http","raw":{{"ts":{text},"uid":"C{i}"}},"normalized":{{}},"enriched":{{}}}}'
              .encode() for i, text in enumerate(texts)]
    result = convert("http", values)
    assert result.fast_path
    got = result.table.column("event_time").cast(pa.int64()).to_pylist()
    expected = [int(Decimal(text) * 1_000_000) for text in texts]
    assert got == expected


def test_keeps_uint64_counts_beyond_2_53_exact() -> None:
    big = [2**64 - 1, 2**53 + 1, 2**63, 0]
    values = [document("conn", {**CONN_ISO, "orig_bytes": n, "missed_bytes": n}) for n in big]
    result = convert("conn", values)
    assert result.fast_path
    assert result.table.column("src_bytes").to_pylist() == big
    assert result.table.column("missed_bytes").to_pylist() == big
    assert result.table.schema.field("missed_bytes").type == pa.uint64()


def test_unknown_raw_fields_go_to_extra_as_json_on_the_fast_path() -> None:
    extra = {"my_field": 5, "nested": {"a": [1, 2]}, "ratio": 0.1}
    values = [document("conn", CONN_ISO), document("conn", {**CONN_ISO, **extra})]
    result = convert("conn", values)
    assert result.fast_path
    texts = result.table.column("_extra").to_pylist()
    assert texts[0] is None
    assert orjson.loads(texts[1]) == extra
    assert "my_field" not in result.table.schema.names


def test_unknown_fields_pyarrow_cannot_infer_still_reach_extra_exactly() -> None:
    extra = {"huge": 2**64 - 1, "mixed": [1, "x"]}
    values = [document("conn", {**CONN_ISO, **extra}), document("conn", {**CONN_ISO, "mixed": "text"})]
    result = convert("conn", values)
    assert not result.rejects
    assert [orjson.loads(text) for text in result.table.column("_extra").to_pylist()] == \
        [extra, {"mixed": "text"}]


def test_extra_keeps_an_unknown_field_whose_only_value_is_null() -> None:
    result = convert("conn", [document("conn", {**CONN_ISO, "odd": None})])
    assert orjson.loads(result.table.column("_extra")[0].as_py()) == {"odd": None}


def test_unknown_log_type_gets_common_columns_and_the_rest_in_extra() -> None:
    raw = {"ts": 1521911720.865716, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 5,
           "id.resp_h": "10.0.0.2", "id.resp_p": 6, "proto": "tcp", "widgets": [1, 2], "label": "x"}
    result = convert("my_custom_log", [document("my_custom_log", raw)])
    row = result.table.to_pylist()[0]
    assert us_of(row["event_time"]) == 1521911720865716
    assert (row["flow_id"], row["src_ip"], row["src_port"], row["dst_port"], row["protocol"]) == \
        ("C1", "10.0.0.1", 5, 6, "tcp")
    assert orjson.loads(row["_extra"]) == {"widgets": [1, 2], "label": "x"}
    assert row["event_type"] == "my_custom_log"


def test_lineage_columns_carry_partition_and_offset() -> None:
    values = [document("conn", CONN_ISO)] * 3
    table = convert_documents("conn", values, [0, 1, 2], [2**40, 5, 6], schema=SCHEMA, rules=RULES).table
    assert table.column("_kafka_partition").to_pylist() == [0, 1, 2]
    assert table.column("_kafka_offset").to_pylist() == [2**40, 5, 6]
    assert table.schema.field("_kafka_partition").type == pa.int32()


def test_pipeline_times_are_millisecond_timestamps() -> None:
    table = convert("conn", [document("conn", CONN_ISO, write_ts_ms=1521911720866)]).table
    assert table.schema.field("ingest_time").type == pa.timestamp("ms", tz="UTC")
    assert table.column("ingest_time").cast(pa.int64()).to_pylist() == [INGEST_MS]
    assert table.column("zeek_write_ts").cast(pa.int64()).to_pylist() == [1521911720866]


def test_enriched_values_become_compact_typed_columns() -> None:
    enriched = {"event_year": 2018, "event_month": 3, "event_day": 24, "event_hour": 17, "event_weekday": 6,
                "src_ip_is_private": True, "dst_ip_is_private": False, "src_is_local": True,
                "dst_is_local": False, "direction": "outbound", "service": "dns", "community_id": "1:abc="}
    row = convert("conn", [document("conn", CONN_ISO, enriched=enriched)]).table.to_pylist()[0]
    assert {key: row[key] for key in enriched} == enriched


def test_event_time_is_null_for_a_type_without_time_fields() -> None:
    table = convert("loaded_scripts", [document("loaded_scripts", {"name": "/opt/zeek/base/init.zeek"})]).table
    assert table.column("event_time").to_pylist() == [None]
    assert table.column("script_name").to_pylist() == ["/opt/zeek/base/init.zeek"]


def test_event_time_falls_back_to_normalized_ms_without_a_time_source() -> None:
    tiny = parse_schema({"t": {"fields": {"stamp": "string"}}})
    tiny_rules = parse_rules({"t": {"promote": {"stamp": "event_time"}}})
    value = orjson.dumps({"log_type": "t", "raw": {"stamp": "x"}, "normalized": {"event_time": 1500},
                          "enriched": {}})
    table = convert("t", [value], tiny, tiny_rules).table
    assert table.column("event_time").cast(pa.int64()).to_pylist() == [1_500_000]
    assert table.column("stamp").to_pylist() == ["x"]


def test_promoted_non_ts_time_field_keeps_microseconds_from_raw() -> None:
    tiny_rules = parse_rules({"x509": {"promote": {"ts": "event_time",
                                                   "certificate.not_valid_before": "cert_not_before"}}})
    raw = {"ts": "2018-03-24T17:15:20.624556Z", "fingerprint": "ab",
           "certificate.not_valid_before": "2011-09-10T12:15:02.000001Z"}
    result = convert("x509", [document("x509", raw, rules=tiny_rules,
                                       normalized={"cert_not_before": 1315656902000})], rules=tiny_rules)
    assert result.fast_path
    assert us_of(result.table.column("cert_not_before")[0].as_py()) == 1315656902000001


def test_vectors_of_times_convert_element_wise_in_both_forms() -> None:
    tiny = parse_schema({"t": {"fields": {"ts": "time", "seen": "vector[time]"}}})
    tiny_rules = parse_rules({"t": {"promote": {"ts": "event_time"}}})
    iso = [orjson.dumps({"log_type": "t", "raw": raw, "normalized": {}, "enriched": {}}) for raw in (
        {"ts": "2018-03-24T17:15:20Z", "seen": ["2018-03-24T17:15:20.000001Z", "1970-01-01T00:00:00Z"]},
        {"ts": "2018-03-24T17:15:20Z", "seen": []}, {"ts": "2018-03-24T17:15:20Z"})]
    epoch = [orjson.dumps({"log_type": "t", "raw": raw, "normalized": {}, "enriched": {}}) for raw in (
        {"ts": 1521911720.0, "seen": [1521911720.000001, 0]}, {"ts": 1521911720, "seen": []},
        {"ts": 1521911720})]
    for values in (iso, epoch):
        result = convert("t", values, tiny, tiny_rules)
        assert result.fast_path
        seen = result.table.column("seen")
        assert seen.type == pa.list_(UTC_US)
        assert [[us_of(v) for v in row] if row is not None else None for row in seen.to_pylist()] == \
            [[1521911720000001, 0], [], None]


# ---------------------------------------------------------------------------------------------------
# fallback and rejects


def test_mixed_iso_and_epoch_batch_is_converted_per_form_in_input_order() -> None:
    epoch = {**CONN_ISO, "ts": 1521911720.865717, "uid": "C2"}
    values = [document("conn", CONN_ISO), document("conn", epoch), document("conn", CONN_ISO),
              document("conn", {"uid": "C-no-time"})]
    result = convert("conn", values)
    assert result.path == "grouped" and not result.rejects and result.kept is None
    assert [None if v is None else us_of(v) for v in result.table.column("event_time").to_pylist()] == \
        [1521911720865716, 1521911720865717, 1521911720865716, None]
    assert result.table.column("flow_id").to_pylist() == ["CqKst53mF3det3eDV9", "C2", "CqKst53mF3det3eDV9",
                                                          "C-no-time"]
    assert result.table.column("_kafka_offset").to_pylist() == [100, 101, 102, 103]


def test_after_a_mixed_batch_interleaved_forms_are_grouped_and_uniform_batches_stay_fast() -> None:
    epoch = {**CONN_ISO, "ts": 1521911720.865717, "uid": "C2"}
    convert("conn", [document("conn", CONN_ISO), document("conn", epoch)])  # conn has shown mixed forms
    interleaved = [document("conn", CONN_ISO if i % 2 == 0 else epoch) for i in range(41)]  # first, last ISO
    result = convert("conn", interleaved)
    assert result.path == "grouped" and not result.rejects
    assert [us_of(v) for v in result.table.column("event_time").to_pylist()] == \
        [1521911720865716 if i % 2 == 0 else 1521911720865717 for i in range(41)]
    assert convert("conn", [document("conn", CONN_ISO)] * 41).path == "fast"
    assert convert("conn", [document("conn", epoch)] * 41).path == "fast"


def test_mixed_batch_rejects_keep_their_input_index() -> None:
    values = [document("conn", {**CONN_ISO, "ts": 1521911720.5}), document("conn", CONN_ISO),
              document("conn", {**CONN_ISO, "ts": 1521911721.5, "orig_bytes": -1}),
              document("conn", {**CONN_ISO, "ts": 1521911722.5, "uid": "C3"})]
    result = convert("conn", values)
    assert result.path == "grouped"
    assert [(r.index, r.reason) for r in result.rejects] == [(2, REJECT_UNTYPABLE_VALUE)]
    assert result.kept == (0, 1, 3)
    assert result.table.column("_kafka_offset").to_pylist() == [100, 101, 103]
    assert [us_of(v) for v in result.table.column("event_time").to_pylist()] == \
        [1521911720500000, 1521911720865716, 1521911722500000]


def test_documents_mixing_both_forms_inside_themselves_convert_exactly() -> None:
    mixed = {"ts": "2018-03-24T17:15:20.624556Z", "certificate.not_valid_before": 1315656902.000001}
    uniform = {"ts": 1521911720.5, "certificate.not_valid_before": 1315656902.25}
    alone = convert("x509", [document("x509", mixed)])
    assert alone.path == "fast"  # forms are peeked per field
    together = convert("x509", [document("x509", mixed), document("x509", uniform)])
    assert together.path == "grouped" and not together.rejects
    for result in (alone, together):
        row = result.table.to_pylist()[0]
        assert us_of(row["event_time"]) == 1521911720624556
        assert us_of(row["certificate.not_valid_before"]) == 1315656902000001
    assert us_of(together.table.column("certificate.not_valid_before")[1].as_py()) == 1315656902250000


def test_grouped_and_per_document_paths_give_the_same_rows_as_the_fast_path() -> None:
    rows = [CONN_ISO, {**CONN_ISO, "orig_bytes": 2**64 - 1, "x_unknown": {"k": 1}},
            {**CONN_ISO, "tunnel_parents": ["a"], "service": None}]
    values = [document("conn", raw, write_ts_ms=5, enriched={"event_year": 2018, "direction": "internal"})
              for raw in rows]
    fast = convert("conn", values)
    grouped = convert("conn", [*values, document("conn", {**CONN_ISO, "ts": 1521911720.865716})])
    per_document = convert("conn", [*values, document("conn", {**CONN_ISO, "orig_bytes": "7"})])
    assert (fast.path, grouped.path, per_document.path) == ("fast", "grouped", "per_document")
    for other in (grouped, per_document):
        assert other.table.slice(0, 3).equals(fast.table)
        assert other.table.schema.equals(fast.table.schema, check_metadata=True)


def test_coercible_wrong_types_are_converted_losslessly() -> None:
    raw = {**CONN_ISO, "orig_bytes": "12", "history": 42, "local_orig": "T", "duration": "1.5",
           "id.orig_p": "8080", "tunnel_parents": "Cparent"}
    result = convert("conn", [document("conn", raw, normalized={"src_port": 8080})])
    assert result.path == "per_document" and not result.rejects
    row = result.table.to_pylist()[0]
    assert (row["src_bytes"], row["history"], row["local_orig"], row["duration"], row["src_port"]) == \
        (12, "42", True, 1.5, 8080)
    assert row["tunnel_parents"] == ["Cparent"]


def test_untypable_value_is_rejected_with_its_index_and_reason_and_the_rest_kept() -> None:
    values = [document("conn", CONN_ISO), document("conn", {**CONN_ISO, "orig_bytes": "lots"}),
              document("conn", {**CONN_ISO, "id.resp_p": 70000}), document("conn", {**CONN_ISO, "uid": "C4"})]
    result = convert("conn", values)
    assert [(r.index, r.reason) for r in result.rejects] == [(1, REJECT_UNTYPABLE_VALUE), (2, REJECT_UNTYPABLE_VALUE)]
    assert "raw.orig_bytes" in result.rejects[0].detail and '"lots"' in result.rejects[0].detail
    assert "raw.id.resp_p" in result.rejects[1].detail and "port" in result.rejects[1].detail
    assert result.kept == (0, 3)
    assert result.table.column("flow_id").to_pylist() == ["CqKst53mF3det3eDV9", "C4"]
    assert result.table.column("_kafka_offset").to_pylist() == [100, 103]


def test_documents_to_table_raises_with_the_good_rows_and_the_rejects() -> None:
    values = [document("conn", CONN_ISO), document("conn", {**CONN_ISO, "ts": "yesterday"})]
    with pytest.raises(ConversionError, match="1 document") as caught:
        documents_to_table("conn", values, [0, 0], [1, 2], schema=SCHEMA, rules=RULES)
    conversion = caught.value.conversion
    assert conversion.table.num_rows == 1
    assert conversion.rejects[0].index == 1 and "raw.ts" in conversion.rejects[0].detail


def test_documents_to_table_returns_the_table_when_all_convert() -> None:
    table = documents_to_table("conn", [document("conn", CONN_ISO)], [0], [1], schema=SCHEMA, rules=RULES)
    assert table.num_rows == 1


def test_invalid_documents_and_foreign_log_types_are_rejected() -> None:
    values = [b"{not json", b"[1, 2]", document("dns", {"ts": 1.0}), b'{"log_type": "conn", "raw": 5}',
              document("conn", CONN_ISO), b""]
    result = convert("conn", values)
    assert [(r.index, r.reason) for r in result.rejects] == [
        (0, REJECT_INVALID_DOCUMENT), (1, REJECT_INVALID_DOCUMENT), (2, REJECT_LOG_TYPE_MISMATCH),
        (3, REJECT_INVALID_DOCUMENT), (5, REJECT_INVALID_DOCUMENT)]
    assert result.table.num_rows == 1 and result.kept == (4,)


def test_out_of_range_enriched_value_is_rejected() -> None:
    result = convert("conn", [document("conn", CONN_ISO, enriched={"event_month": 300})])
    assert result.rejects[0].reason == REJECT_UNTYPABLE_VALUE
    assert "enriched.event_month" in result.rejects[0].detail


def test_a_document_spanning_several_lines_still_converts() -> None:
    pretty = json.dumps(json.loads(document("conn", CONN_ISO)), indent=2).encode()
    result = convert("conn", [pretty, document("conn", CONN_ISO)])
    assert not result.rejects and result.table.num_rows == 2
    assert result.table.slice(0, 1).drop_columns(["_kafka_offset"]).equals(
        result.table.slice(1, 1).drop_columns(["_kafka_offset"]))


def test_iso_time_with_offset_and_nanoseconds_is_read_in_utc_truncated_to_microseconds() -> None:
    values = [document("conn", {**CONN_ISO, "ts": "2018-03-24T19:15:20.865716+02:00"}),
              document("conn", {**CONN_ISO, "ts": "2018-03-24T17:15:20.865716999Z"})]
    result = convert("conn", values)
    assert [us_of(v) for v in result.table.column("event_time").to_pylist()] == [1521911720865716] * 2


def test_empty_batch_gives_an_empty_table_with_the_schema() -> None:
    result = convert("dns", [])
    assert result.table.num_rows == 0
    assert result.table.schema.field("event_time").type == UTC_US


def test_lineage_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        convert_documents("conn", [document("conn", CONN_ISO)], [0], [], schema=SCHEMA, rules=RULES)


json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | \
    st.text(max_size=12) | st.sampled_from(["2018-03-24T17:15:20Z", "1521911720.5", "T", "80"])
json_values = json_scalars | st.lists(json_scalars, max_size=3) | st.dictionaries(st.text(max_size=4), json_scalars,
                                                                                  max_size=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(["ts", "uid", "id.orig_p", "orig_bytes", "duration",
                                                 "local_orig", "tunnel_parents", "vlan", "zz"]),
                                json_values, max_size=6), min_size=1, max_size=6))
def test_any_raw_values_either_convert_or_are_rejected_never_raise(raws: list[dict[str, Any]]) -> None:
    values = [orjson.dumps({"log_type": "conn", "raw": raw, "normalized": {}, "enriched": {}})
              if _orjson_ok(raw) else b"{}" for raw in raws]
    result = convert("conn", values)
    kept = result.kept if result.kept is not None else tuple(range(len(values)))
    assert result.table.num_rows == len(kept)
    assert sorted([*kept, *(r.index for r in result.rejects)]) == list(range(len(values)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60) | st.sampled_from([b"{}", b"null", b'{"log_type":"conn"}',
                                                          b'{"log_type":"conn","raw":{}}']), min_size=1, max_size=5))
def test_arbitrary_bytes_are_rejected_or_converted_never_raise(values: list[bytes]) -> None:
    result = convert("conn", values)
    kept = result.kept if result.kept is not None else tuple(range(len(values)))
    assert sorted([*kept, *(r.index for r in result.rejects)]) == list(range(len(values)))


def _orjson_ok(raw: dict[str, Any]) -> bool:
    try:
        orjson.dumps(raw)
    except TypeError:  # integers beyond 64 bits: the normalizer could never have produced them
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Parquet round trip (independent readers)


def test_parquet_round_trip_is_read_back_by_duckdb_with_the_same_types(tmp_path: Path) -> None:
    values = [document("conn", {**CONN_ISO, "orig_bytes": 2**64 - 1, "tunnel_parents": ["a", "b"], "k": 1})]
    table = convert("conn", values).table
    path = tmp_path / "conn.parquet"
    pq.write_table(table, path)
    assert pq.read_table(path).equals(table)
    assert pq.read_schema(path).metadata[b"zeek_pipeline.log_type"] == b"conn"
    con = duckdb.connect()
    row = con.execute(
        "SELECT epoch_us(event_time), src_bytes, tunnel_parents, typeof(src_bytes), typeof(event_time), "
        f"_extra FROM read_parquet('{path}')").fetchone()
    assert row == (1521911720865716, 2**64 - 1, ["a", "b"], "UBIGINT", "TIMESTAMP WITH TIME ZONE", '{"k":1}')
