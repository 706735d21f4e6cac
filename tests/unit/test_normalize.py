"""The normalized layer and config/normalization.json: promotions, statics, unknown types, time checks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.infra.zeek_data import PROJECT_ROOT
from zeek_pipeline.core.decode import INVALID_TIME, Rejected
from zeek_pipeline.core.normalize import Normalizer
from zeek_pipeline.core.rules import (
    COMMON_PROMOTIONS,
    ConfigError,
    NormalizationRules,
    load_rules,
    parse_rules,
)

CONFIG = PROJECT_ROOT / "config"
RULES = load_rules(CONFIG / "normalization.json")
WRCCDC_TYPES = {
    "analyzer", "capture_loss", "dce_rpc", "dns", "dpd", "ftp", "kerberos", "known_certs", "known_hosts",
    "known_services", "ldap_search", "loaded_scripts", "modbus", "notice", "ntlm", "ntp", "ocsp",
    "packet_filter", "pe", "rdp", "rfb", "smb_files", "smb_mapping", "smtp", "snmp", "software", "ssh", "ssl",
    "stats", "syslog", "weird", "x509",
}
SEED_TYPES = {"conn", "dns", "http", "ssl", "ssh", "ftp", "smtp", "dhcp", "x509", "files", "notice", "weird",
              "dpd", "rdp", "smb_files", "smb_mapping", "ntlm", "kerberos"}


def normalize(log_type: str, record: dict[str, Any], rules: NormalizationRules = RULES,
              time_fields: dict[str, list[str]] | None = None, write_ts: Any = None) -> dict[str, Any] | Rejected:
    normalizer = Normalizer(rules, time_fields)
    result = normalizer.normalize(normalizer.plan(log_type), record, write_ts, 42)
    return result if isinstance(result, Rejected) else result[0]


def test_config_covers_every_shared_and_seed_log_type() -> None:
    types = set(RULES.types)
    assert WRCCDC_TYPES | {"conn", "http", "files"} | SEED_TYPES <= types
    assert len(types) >= 40


def test_every_configured_type_has_event_type_and_class() -> None:
    for name, rule in RULES.types.items():
        assert rule.static.get("event_type") == name
        assert rule.static.get("event_class") in {"network", "protocol", "file", "detection", "inventory", "sensor"}


def test_schema_types_have_rules() -> None:
    schema = orjson.loads((CONFIG / "schema.json").read_bytes())
    assert {name for name in schema if not name.startswith("$")} <= set(RULES.types)


def test_common_promotions_of_a_dns_record() -> None:
    record = {"ts": "2018-03-24T17:15:20.865716Z", "uid": "CqKst53mF3det3eDV9", "id.orig_h": "10.47.1.100",
              "id.orig_p": 41772, "id.resp_h": "10.0.0.100", "id.resp_p": 53, "proto": "udp",
              "query": "ise.wrccdc.org", "qtype_name": "A", "rcode_name": "NOERROR"}
    assert normalize("dns", record) == {
        "event_time": 1521911720865, "flow_id": "CqKst53mF3det3eDV9", "src_ip": "10.47.1.100",
        "dst_ip": "10.0.0.100", "src_port": 41772, "dst_port": 53, "protocol": "udp",
        "dns_query": "ise.wrccdc.org", "dns_qtype": "A", "dns_rcode": "NOERROR", "ingest_time": 42,
        "event_type": "dns", "event_class": "protocol",
    }


def test_files_promote_fuid_as_file_id_and_x509_the_fingerprint() -> None:
    files = normalize("files", {"ts": 1.0, "fuid": "FwSVkw2xz3avAxsa", "mime_type": "text/html"})
    assert files["file_id"] == "FwSVkw2xz3avAxsa" and "flow_id" not in files  # type: ignore[index]
    x509 = normalize("x509", {"ts": 1.0, "fingerprint": "b2da"})
    assert x509["cert_fingerprint"] == "b2da"  # type: ignore[index]


def test_unknown_log_type_gets_common_promotions_and_its_name() -> None:
    record = {"ts": 1.5, "uid": "C1", "id.orig_h": "10.0.0.1", "id.resp_p": 80, "proto": "tcp", "x": 1}
    assert normalize("my_custom_log", record) == {
        "event_time": 1500, "flow_id": "C1", "src_ip": "10.0.0.1", "dst_port": 80, "protocol": "tcp",
        "ingest_time": 42, "event_type": "my_custom_log", "event_class": "other",
    }


def test_builtin_default_applies_without_a_default_entry() -> None:
    rules = parse_rules({"dns": {"promote": {"ts": "event_time"}}})
    out = normalize("conn", {"ts": 2.0, "uid": "C9"}, rules)
    assert out == {"event_time": 2000, "flow_id": "C9", "ingest_time": 42, "event_type": "conn",
                   "event_class": "other"}
    assert set(COMMON_PROMOTIONS) == {"ts", "uid", "id.orig_h", "id.resp_h", "id.orig_p", "id.resp_p", "proto"}


def test_ill_typed_values_are_not_promoted() -> None:
    record = {"ts": 1.0, "uid": "C1", "id.orig_h": 12, "id.resp_h": "", "id.orig_p": "80", "id.resp_p": 70000,
              "proto": "tcp"}
    out = normalize("conn", record)
    assert not {"src_ip", "dst_ip", "src_port", "dst_port"} & set(out)  # type: ignore[arg-type]
    assert record["id.orig_h"] == 12  # raw untouched


def test_null_values_are_absent() -> None:
    assert "flow_id" not in normalize("conn", {"ts": 1.0, "uid": None})  # type: ignore[operator]


def test_no_ts_no_event_time() -> None:
    out = normalize("loaded_scripts", {"name": "/opt/zeek/share/zeek/base/init-bare.zeek"})
    assert "event_time" not in out and out["script_name"].endswith("init-bare.zeek")  # type: ignore[index]


@pytest.mark.parametrize("ts", ["yesterday", "2018-02-30T00:00:00Z", True, [1.0], {"s": 1}, float("nan")])
def test_rejects_a_ts_that_is_not_a_time(ts: Any) -> None:
    result = normalize("dns", {"ts": ts, "uid": "C1"})
    assert isinstance(result, Rejected) and result.reason == INVALID_TIME and "ts=" in result.detail


def test_ts_is_checked_even_when_not_promoted() -> None:
    rules = parse_rules({"x": {"promote": {"uid": "flow_id"}}})
    assert isinstance(normalize("x", {"ts": "soon"}, rules), Rejected)


def test_other_zeek_time_fields_are_checked_and_promoted_as_ms() -> None:
    times = {"x509": ["ts", "certificate.not_valid_before", "certificate.not_valid_after"]}
    bad = normalize("x509", {"ts": 1.0, "certificate.not_valid_before": "never"}, time_fields=times)
    assert isinstance(bad, Rejected) and "certificate.not_valid_before" in bad.detail
    rules = parse_rules({"x509": {"promote": {"ts": "event_time", "certificate.not_valid_after": "cert_not_after"}}})
    iso = normalize("x509", {"ts": 1.0, "certificate.not_valid_after": "2021-09-10T12:15:02.000000Z"}, rules, times)
    epoch = normalize("x509", {"ts": 1.0, "certificate.not_valid_after": 1631276102.0}, rules, times)
    assert iso["cert_not_after"] == epoch["cert_not_after"] == 1631276102000  # type: ignore[index]


def test_write_ts_becomes_zeek_write_ts_ms() -> None:
    out = normalize("dns", {"ts": 1.0}, write_ts="2018-03-24T17:15:20.866586Z")
    assert out["zeek_write_ts"] == 1521911720866  # type: ignore[index]
    assert isinstance(normalize("dns", {"ts": 1.0}, write_ts="garbage"), Rejected)


def test_static_log_type_placeholder() -> None:
    rules = parse_rules({"default": {"static": {"event_type": "zeek_{log_type}"}}})
    assert normalize("foo", {}, rules)["event_type"] == "zeek_foo"  # type: ignore[index]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"dns": {"promote": {"ts": "service"}}}, "dns.promote.ts: Value error, 'service' collides"),
        ({"dns": {"promote": {"uid": "ingest_time"}}}, "dns.promote.uid: Value error, 'ingest_time' is set by"),
        ({"dns": {"promote": {"a": "x", "b": "x"}}}, "both promote to 'x'"),
        ({"dns": {"static": {"event_time": 1}}}, "dns.static.event_time"),
        ({"dns": {"static": {"event_type": [1]}}}, "dns.static.event_type: Value error, a static value must be"),
        ({"dns": {"enrich": {"tim": True}}}, "dns.enrich.tim: Extra inputs are not permitted"),
        ({"dns": {"default_protocol": "gre"}}, "dns.default_protocol: Input should be 'tcp'"),
        ({"bad type": {}}, "log type 'bad type' is not a valid name"),
        ([], "the top level must be a JSON object"),
    ],
)
def test_rule_errors_name_the_file_key_path_and_value(data: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(data, "config/normalization.json")
    assert str(info.value).startswith("config/normalization.json: ")
    assert expected in str(info.value)


def test_normalized_fields_lists_every_possible_key() -> None:
    fields = RULES.normalized_fields("dns")
    assert fields[:3] == ["event_time", "ingest_time", "flow_id"]
    assert fields[-1] == "zeek_write_ts" and "event_class" in fields
