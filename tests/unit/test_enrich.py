"""The enriched layer: time parts, private/local flags with Zeek's locality winning, direction, service
precedence and Community ID, on real records and variations of them."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK
from zeek_pipeline.core.rules import EnrichSettings, load_rules
from zeek_pipeline.core.transform import Accepted, Transformer

RULES = load_rules(PROJECT_ROOT / "config" / "normalization.json")

CONN = {  # a real rita-missing-host conn record (TSV), as typed values
    "ts": 1713484795.943239, "uid": "CYl7H53iN6mY9NyXJ8", "id.orig_h": "167.94.138.145", "id.orig_p": 25320,
    "id.resp_h": "64.225.56.201", "id.resp_p": 6008, "proto": "tcp", "duration": 0.000064, "orig_bytes": 0,
    "resp_bytes": 0, "conn_state": "REJ", "local_orig": False, "local_resp": True, "missed_bytes": 0,
    "history": "Sr", "orig_pkts": 1, "orig_ip_bytes": 60, "resp_pkts": 1, "resp_ip_bytes": 40,
}


def enriched(log_type: str, record: dict[str, Any], settings: EnrichSettings | None = None) -> dict[str, Any]:
    transformer = Transformer(RULES, settings or EnrichSettings())
    result = transformer.transform_record(log_type, dict(record), ingest_time_ms=0)
    assert isinstance(result, Accepted), result
    return orjson.loads(result.value)["enriched"]  # type: ignore[no-any-return]


def sample(log_type: str) -> dict[str, Any]:
    with gzip.open(SAMPLE_ZEEK / f"{log_type}.json.gz", "rb") as handle:
        record = orjson.loads(handle.readline())
    record.pop("_path")
    return record  # type: ignore[no-any-return]


def test_time_parts_in_utc_with_iso_weekday() -> None:
    out = enriched("dns", sample("dns"))  # 2018-03-24T17:15:20Z, a Saturday
    assert [out[k] for k in ("event_year", "event_month", "event_day", "event_hour", "event_weekday")] == \
        [2018, 3, 24, 17, 6]


def test_zeek_local_flags_win_over_local_networks() -> None:
    out = enriched("conn", CONN)  # 64.225.56.201 is public but Zeek says local_resp=T
    assert out["src_ip_is_private"] is False and out["dst_ip_is_private"] is False
    assert out["src_is_local"] is False and out["dst_is_local"] is True
    assert out["direction"] == "inbound"
    flipped = dict(CONN, **{"id.orig_h": "10.0.0.5", "local_orig": False, "local_resp": False})
    out = enriched("conn", flipped)
    assert out["src_ip_is_private"] is True and out["src_is_local"] is False
    assert out["direction"] == "external"


def test_local_networks_decide_without_zeek_flags() -> None:
    record = {k: v for k, v in CONN.items() if k not in ("local_orig", "local_resp")}
    assert enriched("conn", record)["direction"] == "external"
    settings = EnrichSettings(local_networks=["64.225.56.0/24"])
    out = enriched("conn", record, settings)
    assert (out["src_is_local"], out["dst_is_local"], out["direction"]) == (False, True, "inbound")


@pytest.mark.parametrize(
    ("src", "dst", "direction"),
    [("10.0.0.1", "10.0.0.2", "internal"), ("10.0.0.1", "8.8.8.8", "outbound"),
     ("8.8.8.8", "192.168.1.1", "inbound"), ("8.8.8.8", "1.1.1.1", "external"),
     ("fd00::1", "2607:f8b0:400c:c03::1a", "outbound"), ("2001:470::1", "fe80::1", "inbound"),
     ("::1", "fc00::2", "internal")],
)
def test_direction_from_locality(src: str, dst: str, direction: str) -> None:
    record = {"ts": 1.0, "uid": "C1", "id.orig_h": src, "id.orig_p": 1234, "id.resp_h": dst, "id.resp_p": 53,
              "proto": "udp"}
    assert enriched("dns", record)["direction"] == direction


def test_files_local_orig_is_not_connection_locality() -> None:
    record = {"ts": 1.0, "fuid": "F1", "uid": "C1", "id.orig_h": "8.8.8.8", "id.orig_p": 80,
              "id.resp_h": "10.0.0.1", "id.resp_p": 5555, "local_orig": True, "is_orig": False}
    out = enriched("files", record)
    assert out["src_is_local"] is False and out["dst_is_local"] is True


def test_no_addresses_no_network_keys() -> None:
    out = enriched("dns", {"ts": 1.0, "uid": "C1"})
    assert not {"src_ip_is_private", "direction", "community_id"} & set(out)
    assert out["service"] == "dns"


def test_one_address_gives_its_flags_but_no_direction() -> None:
    out = enriched("weird", {"ts": 1.0, "id.orig_h": "10.0.0.1"})
    assert out["src_ip_is_private"] is True and out["src_is_local"] is True
    assert "direction" not in out and "dst_is_local" not in out


def test_service_prefers_zeeks_own_field() -> None:
    assert enriched("conn", dict(CONN, service="ssl,http"))["service"] == "ssl,http"
    assert enriched("conn", dict(CONN, **{"id.resp_p": 80}))["service"] == "http"  # port map fallback
    assert enriched("conn", dict(CONN, service="", **{"id.resp_p": 443}))["service"] == "ssl"
    assert "service" not in enriched("conn", CONN)  # tcp/6008 is not in the map


def test_service_map_is_configurable() -> None:
    settings = EnrichSettings(service_ports={"tcp/6008": "x11-alt"})
    assert enriched("conn", CONN, settings)["service"] == "x11-alt"


def test_log_type_implies_service_before_the_port_map() -> None:
    record = sample("dns")
    record["id.resp_p"] = 5353
    assert enriched("dns", record)["service"] == "dns"
    # kerberos' own `service` field is a principal name, not the network service
    assert enriched("kerberos", sample("kerberos"))["service"] == "krb"


def test_known_services_service_set_is_joined_lower_case() -> None:
    assert enriched("known_services", sample("known_services"))["service"] == "http"


def test_community_id_of_a_real_conn_record_matches_the_spec_computation() -> None:
    out = enriched("conn", CONN)
    assert out["community_id"].startswith("1:") and len(out["community_id"]) == 30
    reverse = dict(CONN, **{"id.orig_h": CONN["id.resp_h"], "id.resp_h": CONN["id.orig_h"],
                            "id.orig_p": CONN["id.resp_p"], "id.resp_p": CONN["id.orig_p"]})
    assert enriched("conn", reverse)["community_id"] == out["community_id"]


def test_community_id_from_default_protocol_and_icmp6() -> None:
    http = {"ts": 1.0, "uid": "C1", "id.orig_h": "128.232.110.120", "id.orig_p": 34855,
            "id.resp_h": "66.35.250.204", "id.resp_p": 80}
    assert enriched("http", http)["community_id"] == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    icmp6 = {"ts": 1.0, "uid": "C1", "id.orig_h": "fe80::200:86ff:fe05:80da", "id.orig_p": 135,
             "id.resp_h": "fe80::260:97ff:fe07:69ea", "id.resp_p": 136, "proto": "icmp"}
    assert enriched("conn", icmp6)["community_id"] == "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="
    seeded = EnrichSettings(community_id_seed=1)
    assert enriched("http", http, seeded)["community_id"] == "1:3V71V58M3Ksw/yuFALMcW0LAHvc="


def test_no_community_id_without_a_protocol() -> None:
    out = enriched("weird", sample("weird"))  # weird has ports but no proto
    assert "community_id" not in out and "direction" in out


def test_enrich_flags_switch_parts_off() -> None:
    out = enriched("x509", sample("x509"))  # x509: time on, network off
    assert "event_year" in out and "service" not in out



def test_community_id_cache_is_bounded_and_answers_like_a_fresh_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    from zeek_pipeline.core import enrich

    monkeypatch.setattr(enrich, "FLOW_CACHE_SIZE", 5)
    cached = Transformer(RULES, EnrichSettings())
    for port in range(1, 40):
        record = dict(CONN, **{"id.orig_p": port})
        first = cached.transform_record("conn", dict(record), ingest_time_ms=0)
        again = cached.transform_record("conn", dict(record), ingest_time_ms=0)
        fresh = Transformer(RULES, EnrichSettings()).transform_record("conn", dict(record), ingest_time_ms=0)
        assert isinstance(first, Accepted) and isinstance(again, Accepted) and isinstance(fresh, Accepted)
        assert first.value == again.value == fresh.value
        assert len(cached._enricher._flows) <= 5  # noqa: SLF001
