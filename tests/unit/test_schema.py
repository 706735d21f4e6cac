"""config/schema.json and core/schema.py: loading, validation errors, the derived Arrow layout, and the
types checked against every record of the shared real Zeek logs (JSON values and TSV `#types`)."""

from __future__ import annotations

import gzip
import ipaddress
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, json_logs, read_lines, shared_available, tsv_logs
from zeek_pipeline.core.rules import ENRICHED_KEYS, ConfigError, load_rules, parse_rules
from zeek_pipeline.core.schema import (
    ENRICHED_COLUMNS,
    META_LOG_TYPE,
    META_SCHEMA_VERSION,
    SchemaError,
    ZeekType,
    arrow_schema,
    arrow_type,
    load_schema,
    parse_schema,
    table_layout,
)

CONFIG = PROJECT_ROOT / "config"
SEED_TYPES = ("conn dns http ssl ssh ftp smtp dhcp x509 files notice weird dpd rdp smb_files smb_mapping "
              "ntlm kerberos").split()
needs_shared = pytest.mark.skipif(not shared_available(), reason="shared Zeek corpus not present")


@pytest.fixture(scope="module")
def schema():  # type: ignore[no-untyped-def]
    return load_schema(CONFIG / "schema.json")


@pytest.fixture(scope="module")
def rules():  # type: ignore[no-untyped-def]
    return load_rules(CONFIG / "normalization.json")


def _shared_json_types() -> list[str]:
    if not shared_available():
        return []
    return sorted({path.name.split(".")[0] for path in json_logs()})


# ---------------------------------------------------------------------------------------------------
# schema.json content


def test_schema_lists_at_least_40_log_types_including_the_seeds_18(schema) -> None:
    assert len(schema.log_types) >= 40
    assert set(SEED_TYPES) <= set(schema.log_types)


def test_schema_covers_every_log_type_of_normalization_json(schema, rules) -> None:
    assert set(rules.types) <= set(schema.log_types)


@needs_shared
def test_schema_covers_every_shared_log_type(schema) -> None:
    shared = set(_shared_json_types()) | {path.name.split(".")[0] for path in tsv_logs()}
    assert len(shared) == 35
    assert shared <= set(schema.log_types)


def _fits(value: Any, zeek_type: ZeekType) -> bool:
    """Whether a JSON value of a real record is a valid value of the Zeek type."""
    if zeek_type.container:
        return isinstance(value, list) and all(_fits(item, ZeekType(zeek_type.scalar)) for item in value)
    scalar = zeek_type.scalar
    if scalar == "time":
        return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))
    if scalar in ("interval", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if scalar in ("count", "int", "port"):
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        return {"count": 0 <= value < 2**64, "int": -(2**63) <= value < 2**63, "port": 0 <= value <= 65535}[scalar]
    if scalar == "bool":
        return isinstance(value, bool)
    if scalar == "addr":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    if scalar == "subnet":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return True
    return isinstance(value, str)


@needs_shared
@pytest.mark.parametrize("path", json_logs(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_field_of_every_shared_json_record_is_typed_compatibly(schema, path: Path) -> None:
    log_type = path.name.split(".")[0]
    fields = schema.fields_for(log_type)
    missing: dict[str, int] = defaultdict(int)
    misfit: dict[str, list[Any]] = defaultdict(list)
    records = 0
    for line in read_lines(path):
        record = orjson.loads(line)
        records += 1
        assert record.pop("_path") == log_type
        record.pop("_write_ts", None)  # moved to normalized.zeek_write_ts by the transformer
        for name, value in record.items():
            if name not in fields:
                missing[name] += 1
            elif not _fits(value, fields[name]):
                misfit[name].append(value)
    assert records > 0
    assert not missing, f"{log_type}: fields not in schema.json: {dict(missing)}"
    assert not misfit, f"{log_type}: values not of the schema's type: { {k: v[:3] for k, v in misfit.items()} }"


@needs_shared
@pytest.mark.parametrize("path", tsv_logs(), ids=lambda path: path.name)
def test_tsv_header_types_equal_the_schema_types(schema, path: Path) -> None:
    """Zeek's own `#fields`/`#types` lines are the authority for the TSV log types."""
    header: dict[str, list[str]] = {}
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            key, _, rest = line.rstrip("\n").partition("\t")
            header.setdefault(key[1:], rest.split("\t"))
    log_type = header["path"][0]
    fields = schema.fields_for(log_type)
    declared = dict(zip(header["fields"], header["types"], strict=True))
    assert {name: str(fields.get(name)) for name in declared} == declared


# ---------------------------------------------------------------------------------------------------
# loading and validation errors


def test_load_schema_accepts_a_config_directory(schema) -> None:
    assert load_schema(CONFIG) == schema
    assert schema.version == "1"


def test_unknown_zeek_type_error_names_file_key_path_value_and_allowed_types(tmp_path: Path) -> None:
    file = tmp_path / "schema.json"
    file.write_text(json.dumps({"conn": {"fields": {"ts": "time", "duration": "intervall"}}}))
    with pytest.raises(SchemaError) as caught:
        load_schema(file)
    message = str(caught.value)
    assert str(file) in message
    assert "conn.fields.duration" in message
    assert "'intervall'" in message
    assert "time, interval, count, int, double, bool, string, addr, subnet, port, enum" in message
    assert "set[T] / vector[T]" in message
    assert isinstance(caught.value, ConfigError)  # validate-config catches one error type


@pytest.mark.parametrize("bad", ["vector[vector[string]]", "set[]", "table[string]", "Count", "", "list[int]"])
def test_rejects_types_zeek_cannot_log(bad: str) -> None:
    with pytest.raises(SchemaError, match="is not a Zeek type"):
        parse_schema({"x": {"fields": {"a": bad}}})


@pytest.mark.parametrize("text", ["time", "count", "set[addr]", "vector[interval]", "set[enum]"])
def test_parses_every_zeek_type_form(text: str) -> None:
    assert str(ZeekType.parse(text)) == text


def test_rejects_a_field_name_that_is_not_a_zeek_identifier() -> None:
    with pytest.raises(SchemaError, match=r"dns\.fields.*'bad name'.*not a Zeek field name"):
        parse_schema({"dns": {"fields": {"bad name": "string"}}})


def test_rejects_a_log_type_name_unsafe_as_a_directory() -> None:
    with pytest.raises(SchemaError, match=r"log type '\.\./etc' is not a valid name"):
        parse_schema({"../etc": {"fields": {"a": "string"}}})


def test_rejects_an_unknown_metadata_key_and_unknown_section_keys() -> None:
    with pytest.raises(SchemaError, match=r"\$version: unknown metadata key"):
        parse_schema({"$version": 2})
    with pytest.raises(SchemaError, match=r"conn\.field.*Extra inputs are not permitted"):
        parse_schema({"conn": {"field": {"ts": "time"}}})


def test_errors_in_metadata_sections_name_the_dollar_key() -> None:
    with pytest.raises(SchemaError, match=r"\$all_logs\.fields\._node_name: .*'strng'"):
        parse_schema({"$all_logs": {"fields": {"_node_name": "strng"}}})


def test_file_problems_are_schema_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="file not found"):
        load_schema(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SchemaError, match=f"{broken}: not valid JSON"):
        load_schema(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(SchemaError, match="top level must be a JSON object"):
        load_schema(listed)


def test_numeric_schema_version_is_read_as_text() -> None:
    assert parse_schema({"$schema_version": 3}).version == "3"


# ---------------------------------------------------------------------------------------------------
# Arrow types and layout


@pytest.mark.parametrize(("zeek", "arrow"), [
    ("time", pa.timestamp("us", tz="UTC")), ("interval", pa.float64()), ("count", pa.uint64()),
    ("int", pa.int64()), ("double", pa.float64()), ("bool", pa.bool_()), ("string", pa.string()),
    ("addr", pa.string()), ("subnet", pa.string()), ("port", pa.uint16()), ("enum", pa.string()),
    ("set[addr]", pa.list_(pa.string())), ("vector[count]", pa.list_(pa.uint64())),
    ("vector[time]", pa.list_(pa.timestamp("us", tz="UTC"))),
])
def test_maps_each_zeek_type_to_its_arrow_type(zeek: str, arrow: pa.DataType) -> None:
    assert arrow_type(ZeekType.parse(zeek)) == arrow


def test_enriched_columns_are_the_contracts_enriched_keys() -> None:
    assert {name for name, _ in ENRICHED_COLUMNS} == ENRICHED_KEYS


def test_promoted_fields_are_stored_once_under_the_canonical_name(schema, rules) -> None:
    result = arrow_schema("dns", schema, rules)
    for raw_name in ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "query"):
        assert raw_name not in result.names
    assert result.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert result.field("src_port").type == pa.uint16()
    assert result.field("dns_query").type == pa.string()
    assert result.field("dns_query").metadata[b"zeek.source"] == b"query"
    assert result.field("answers").type == pa.list_(pa.string())
    assert result.field("TTLs").type == pa.list_(pa.float64())
    assert result.field("trans_id").type == pa.uint64()


def test_normalized_pipeline_columns_and_lineage_have_their_types(schema, rules) -> None:
    result = arrow_schema("conn", schema, rules)
    assert result.field("ingest_time").type == pa.timestamp("ms", tz="UTC")
    assert result.field("zeek_write_ts").type == pa.timestamp("ms", tz="UTC")
    assert result.field("event_type").type == pa.string()
    assert result.field("event_year").type == pa.int16()
    assert result.field("event_weekday").type == pa.int8()
    assert result.field("_extra").type == pa.string()
    assert result.field("_kafka_partition").type == pa.int32()
    assert result.field("_kafka_offset").type == pa.int64()
    assert result.names[-3:] == ["_extra", "_kafka_partition", "_kafka_offset"]


def test_raw_field_colliding_with_an_enriched_column_gets_the_raw_prefix(schema, rules) -> None:
    conn = arrow_schema("conn", schema, rules)
    assert conn.field("raw_service").metadata[b"zeek.source"] == b"service"
    assert conn.field("service").metadata[b"zeek.layer"] == b"enriched"
    assert conn.field("raw_community_id").metadata[b"zeek.source"] == b"community_id"
    assert arrow_schema("known_services", schema, rules).field("raw_service").type == pa.list_(pa.string())
    assert "raw_direction" in arrow_schema("ssh", schema, rules).names


def test_raw_field_named_like_a_promoted_target_is_renamed_not_overwritten() -> None:
    tiny = parse_schema({"t": {"fields": {"ts": "time", "a": "count", "b": "string", "raw_b": "int"}}})
    tiny_rules = parse_rules({"t": {"promote": {"ts": "event_time", "a": "b"}}})
    result = arrow_schema("t", tiny, tiny_rules)
    assert result.field("b").type == pa.uint64()  # the promoted `a`
    assert result.field("raw_b").type == pa.int64()  # a raw field that collides with nothing keeps its name
    assert result.field("raw_raw_b").type == pa.string()  # raw `b`: `b` and `raw_b` are both taken
    assert len(set(result.names)) == len(result.names)


def test_promoted_field_missing_from_the_schema_gives_no_column(schema) -> None:
    http_rules = parse_rules({"http": {"promote": {"ts": "event_time", "proto": "protocol"}}})
    assert "proto" not in schema.fields_for("http")  # http records carry no proto
    assert "protocol" not in arrow_schema("http", schema, http_rules).names


def test_event_time_comes_from_normalized_when_the_type_has_no_time_field(schema, rules) -> None:
    layout = table_layout("loaded_scripts", schema, rules)
    event_time = next(column for column in layout.columns if column.name == "event_time")
    assert event_time.source is None
    assert event_time.layer == "normalized"
    assert event_time.type == pa.timestamp("us", tz="UTC")


def test_static_fields_are_typed_by_their_value() -> None:
    tiny_rules = parse_rules({"t": {"static": {"event_type": "t", "severity": 3, "alert": True, "w": 0.5}}})
    result = arrow_schema("t", parse_schema({"t": {"fields": {"ts": "time"}}}), tiny_rules)
    assert result.field("severity").type == pa.int64()
    assert result.field("alert").type == pa.bool_()
    assert result.field("w").type == pa.float64()
    assert result.field("event_type").type == pa.string()


def test_unknown_log_type_gets_the_common_columns_and_extra_only(schema, rules) -> None:
    result = arrow_schema("my_custom_log", schema, rules)
    assert result.metadata[META_LOG_TYPE] == b"my_custom_log"
    raw_columns = [f.name for f in result if f.metadata[b"zeek.layer"] == b"raw"]
    assert raw_columns == ["_node_name"]
    for name in ("event_time", "flow_id", "src_ip", "dst_ip", "src_port", "dst_port", "protocol", "_extra"):
        assert name in result.names
    assert result.field("event_type").type == pa.string()


def test_schema_metadata_names_log_type_and_schema_version(schema, rules) -> None:
    result = arrow_schema("ssl", schema, rules)
    assert result.metadata[META_LOG_TYPE] == b"ssl"
    assert result.metadata[META_SCHEMA_VERSION] == schema.version.encode()


def test_every_configured_log_type_has_unique_column_names(schema, rules) -> None:
    for log_type in schema.log_types:
        names = arrow_schema(log_type, schema, rules).names
        assert len(names) == len(set(names)), log_type
