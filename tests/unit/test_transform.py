"""The Transformer contract: Accepted/Rejected, the three-layer document, keys, both forms alike."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK
from zeek_pipeline.core.decode import INVALID_JSON, INVALID_TIME, MISSING_PATH, TOO_LARGE
from zeek_pipeline.core.rules import ConfigError
from zeek_pipeline.core.transform import Accepted, Rejected, Transformer, load_time_fields

CONFIG = PROJECT_ROOT / "config"


@pytest.fixture(scope="module")
def transformer() -> Transformer:
    return Transformer.from_config_dir(CONFIG)


def lines(log_type: str, tagged: bool = False) -> list[bytes]:
    with gzip.open(SAMPLE_ZEEK / ("tagged" if tagged else "") / f"{log_type}.json.gz", "rb") as handle:
        return [line.rstrip(b"\n") for line in handle]


def accept(result: Accepted | Rejected) -> dict[str, Any]:
    assert isinstance(result, Accepted), result
    return orjson.loads(result.value)  # type: ignore[no-any-return]


def test_document_has_the_three_layers(transformer: Transformer) -> None:
    line = lines("ssh")[0]
    result = transformer.transform(line, ingest_time_ms=1234)
    doc = accept(result)
    assert list(doc) == ["source", "log_type", "raw", "normalized", "enriched"]
    assert doc["source"] == "zeek" and doc["log_type"] == "ssh"
    original = orjson.loads(line)
    assert doc["raw"] == {k: v for k, v in original.items() if k not in ("_path", "_write_ts")}
    assert list(doc["raw"]) == [k for k in original if k not in ("_path", "_write_ts")]  # order kept
    assert doc["normalized"]["ingest_time"] == 1234
    assert doc["normalized"]["event_time"] == result.event_time_ms == 1521911799739  # type: ignore[union-attr]
    assert result.key == original["uid"].encode()  # type: ignore[union-attr]
    assert result.log_type == "ssh"  # type: ignore[union-attr]


def test_raw_keeps_unknown_fields_and_uint64_exact(transformer: Transformer) -> None:
    body = (b'{"_path":"conn","ts":1713484795.943239,"uid":"C1","orig_bytes":18446744073709551615,'
            b'"resp_bytes":9007199254740993,"my_extension":{"nested":[1,"a",null]},"id.orig_h":"10.0.0.1"}')
    result = transformer.transform(body)
    assert isinstance(result, Accepted)
    assert b'"orig_bytes":18446744073709551615' in result.value
    assert b'"resp_bytes":9007199254740993' in result.value
    doc = orjson.loads(result.value)
    assert doc["raw"]["orig_bytes"] == 2**64 - 1
    assert doc["raw"]["my_extension"] == {"nested": [1, "a", None]}
    assert doc["normalized"]["src_bytes"] == 2**64 - 1


def test_ingest_time_defaults_to_now(transformer: Transformer) -> None:
    before = time.time_ns() // 1_000_000
    doc = accept(transformer.transform(lines("dns")[0]))
    assert before <= doc["normalized"]["ingest_time"] <= time.time_ns() // 1_000_000


def test_key_is_fuid_for_files_and_none_without_flow(transformer: Transformer) -> None:
    files = transformer.transform(b'{"files": {"ts": 1.0, "fuid": "FwSVkw2xz3avAxsa", "conn_uids": ["C1"]}}')
    assert isinstance(files, Accepted) and files.key == b"FwSVkw2xz3avAxsa"
    hosts = transformer.transform(lines("known_hosts")[0])
    assert isinstance(hosts, Accepted) and hosts.key is None


def test_key_can_be_the_community_id() -> None:
    transformer = Transformer.from_config_dir(CONFIG, key_field="community_id")
    conn = (b'{"conn": {"ts": 1.0, "uid": "C1", "id.orig_h": "128.232.110.120", "id.orig_p": 34855,'
            b'"id.resp_h": "66.35.250.204", "id.resp_p": 80, "proto": "tcp"}}')
    result = transformer.transform(conn)
    assert isinstance(result, Accepted) and result.key == b"1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    no_cid = transformer.transform(b'{"dns": {"ts": 1.0, "uid": "C2"}}')
    assert isinstance(no_cid, Accepted) and no_cid.key == b"C2"  # falls back to the flow id


def test_topic_mapping(transformer: Transformer) -> None:
    mapped = Transformer.from_config_dir(CONFIG, topic_log_types={"zeek-dns": "dns"})
    body = b'{"ts": 1.0, "uid": "C1", "query": "example.org"}'
    assert accept(mapped.transform(body, topic="zeek-dns"))["log_type"] == "dns"
    assert mapped.transform(body, topic="other").reason == MISSING_PATH  # type: ignore[union-attr]
    assert transformer.transform(body, topic="zeek-dns").reason == MISSING_PATH  # type: ignore[union-attr]


def test_max_message_bytes() -> None:
    small = Transformer.from_config_dir(CONFIG, max_message_bytes=100)
    result = small.transform(b'{"dns": {"ts": 1.0, "query": "' + b"a" * 100 + b'"}}')
    assert isinstance(result, Rejected) and result.reason == TOO_LARGE


def test_invalid_time_in_any_zeek_time_field(transformer: Transformer) -> None:
    record = orjson.loads(lines("x509")[0])
    record["certificate.not_valid_after"] = "not a date"
    result = transformer.transform(orjson.dumps(record))
    assert isinstance(result, Rejected) and result.reason == INVALID_TIME


@pytest.mark.parametrize("log_type", sorted(p.name.removesuffix(".json.gz") for p in SAMPLE_ZEEK.glob("*.json.gz")))
def test_flat_and_tagged_forms_give_the_same_layers(transformer: Transformer, log_type: str) -> None:
    for flat, tagged in zip(lines(log_type), lines(log_type, tagged=True), strict=True):
        a = accept(transformer.transform(flat, ingest_time_ms=7))
        b = accept(transformer.transform(tagged, ingest_time_ms=7))
        a["normalized"].pop("zeek_write_ts", None)
        assert a["normalized"] == b["normalized"]
        assert a["enriched"] == b["enriched"]


def test_transform_record_for_tsv_input(transformer: Transformer) -> None:
    record = {"ts": 1713484795.943239, "uid": "C1", "id.orig_h": "10.0.0.1", "_path": "x", "_write_ts": 1.0}
    doc = accept(transformer.transform_record("conn", record, ingest_time_ms=0))
    assert doc["raw"] == {"ts": 1713484795.943239, "uid": "C1", "id.orig_h": "10.0.0.1"}
    assert doc["normalized"]["zeek_write_ts"] == 1000
    assert transformer.transform_record("bad/type", {}).reason == "invalid_log_type"  # type: ignore[union-attr]
    bad = transformer.transform_record("conn", {"ts": 1.0, "x": {1, 2}})
    assert isinstance(bad, Rejected) and bad.reason == INVALID_JSON


def test_never_raises_on_non_bytes(transformer: Transformer) -> None:
    assert isinstance(transformer.transform(None), Rejected)  # type: ignore[arg-type]
    assert isinstance(transformer.transform_record("conn", None), Rejected)  # type: ignore[arg-type]


def test_from_config_dir_reads_enrich_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "normalization.json").write_bytes((CONFIG / "normalization.json").read_bytes())
    defaults = Transformer.from_config_dir(tmp_path)  # no config.json, no schema.json
    assert defaults.enrich_settings.community_id_seed == 0
    (tmp_path / "config.json").write_text('{"enrich": {"local_networks": ["64.225.56.0/24"]}}')
    assert Transformer.from_config_dir(tmp_path).enrich_settings.local_networks == ["64.225.56.0/24"]
    (tmp_path / "config.json").write_text('{"enrich": {"local_networks": ["nope"]}}')
    with pytest.raises(ConfigError, match=r"(?s)config.json.*enrich.local_networks.*'nope'"):
        Transformer.from_config_dir(tmp_path)


def test_time_fields_come_from_schema_json(tmp_path: Path) -> None:
    schema = {"$schema_version": "1", "$all_logs": {"fields": {"_sensor_ts": "time"}},
              "$unknown_log": {"fields": {"ts": "time", "started": "time"}},
              "x509": {"fields": {"ts": "time", "certificate.not_valid_after": "time", "fingerprint": "string"}}}
    (tmp_path / "schema.json").write_bytes(orjson.dumps(schema))
    assert load_time_fields(tmp_path / "schema.json") == {
        "x509": ["ts", "certificate.not_valid_after", "_sensor_ts"], "$unknown_log": ["ts", "started", "_sensor_ts"]}
    assert load_time_fields(tmp_path / "absent.json") == {}
    (tmp_path / "normalization.json").write_bytes((CONFIG / "normalization.json").read_bytes())
    transformer = Transformer.from_config_dir(tmp_path)
    unknown = transformer.transform(b'{"brand_new": {"ts": 1.0, "started": "later"}}')
    assert isinstance(unknown, Rejected) and unknown.reason == INVALID_TIME and "started" in unknown.detail
    sensor = transformer.transform(b'{"x509": {"ts": 1.0, "_sensor_ts": "x"}}')
    assert isinstance(sensor, Rejected) and sensor.reason == INVALID_TIME
