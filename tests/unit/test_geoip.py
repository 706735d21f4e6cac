"""GeoIP/ASN enrichment (enrich.geoip) with MaxMind DB files the tests build: fields for public source and
destination, nothing for private or local ones, a bounded cache, typed Parquet columns, and a clear one-line
error at start for a missing, corrupt or swapped database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from tests.infra.geoip import KNOWN, write_asn_db, write_city_db
from tests.infra.zeek_data import PROJECT_ROOT
from zeek_pipeline.core.arrow import convert_documents
from zeek_pipeline.core.geoip import GeoIpError, GeoIpLookup
from zeek_pipeline.core.rules import EnrichSettings, GeoIpSettings, load_rules
from zeek_pipeline.core.schema import load_schema
from zeek_pipeline.core.transform import Accepted, Transformer
from zeek_pipeline.settings import env_name, load_settings

RULES = load_rules(PROJECT_ROOT / "config" / "normalization.json")
SCHEMA = load_schema(PROJECT_ROOT / "config" / "schema.json")
GEO_KEYS = ("geo_country", "geo_city", "geo_lat", "geo_lon", "asn", "as_org")
ALL_GEO = {f"{side}_{key}" for side in ("src", "dst") for key in GEO_KEYS}

CONN = {  # a real rita-missing-host conn record (TSV) with its addresses swapped for the test's networks
    "ts": 1713484795.943239, "uid": "CYl7H53iN6mY9NyXJ8", "id.orig_h": "8.8.8.8", "id.orig_p": 25320,
    "id.resp_h": "1.1.1.1", "id.resp_p": 443, "proto": "tcp", "duration": 0.000064, "orig_bytes": 0,
    "resp_bytes": 0, "conn_state": "REJ", "missed_bytes": 0, "history": "Sr", "orig_pkts": 1,
    "orig_ip_bytes": 60, "resp_pkts": 1, "resp_ip_bytes": 40,
}


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("geoip")
    return write_city_db(folder / "city.mmdb", world=True), write_asn_db(folder / "asn.mmdb", world=True)


def geo_settings(databases: tuple[Path, Path]) -> EnrichSettings:
    city, asn = databases
    return EnrichSettings(geoip=GeoIpSettings(city_db=str(city), asn_db=str(asn)))


def enriched(settings: EnrichSettings, record: dict[str, Any], log_type: str = "conn") -> dict[str, Any]:
    result = Transformer(RULES, settings).transform_record(log_type, dict(record), ingest_time_ms=0)
    assert isinstance(result, Accepted), result
    return orjson.loads(result.value)["enriched"]  # type: ignore[no-any-return]


def test_public_source_and_destination_get_country_city_location_and_asn(databases: tuple[Path, Path]) -> None:
    out = enriched(geo_settings(databases), CONN)
    google, cloudflare = KNOWN["8.8.8.0/24"], KNOWN["1.1.1.0/24"]
    assert {k: out[f"src_{k}"] for k in GEO_KEYS} == {
        "geo_country": "US", "geo_city": "Mountain View", "geo_lat": google.latitude,
        "geo_lon": google.longitude, "asn": 15169, "as_org": "GOOGLE"}
    assert {k: out[f"dst_{k}"] for k in GEO_KEYS} == {
        "geo_country": "AU", "geo_city": "Sydney", "geo_lat": cloudflare.latitude,
        "geo_lon": cloudflare.longitude, "asn": 13335, "as_org": "CLOUDFLARENET"}
    assert type(out["src_geo_lat"]) is float and type(out["src_asn"]) is int
    # the rest of the enriched layer is unchanged
    assert out["direction"] == "external" and out["community_id"].startswith("1:")


def test_ipv6_and_a_city_database_alone(databases: tuple[Path, Path]) -> None:
    settings = EnrichSettings(geoip=GeoIpSettings(city_db=str(databases[0])))
    out = enriched(settings, dict(CONN, **{"id.orig_h": "2001:4860::8888", "id.resp_h": "2a00:1450::1"}))
    assert out["src_geo_country"] == "US" and out["src_geo_city"] == "Mountain View"
    assert out["dst_geo_country"] == "DE" and out["dst_geo_city"] == "City-0"
    assert not {"src_asn", "src_as_org", "dst_asn", "dst_as_org"} & set(out)


def test_private_and_local_addresses_are_not_looked_up(databases: tuple[Path, Path]) -> None:
    # the test databases answer for 10.0.0.0/8 too: skipping private addresses is the enricher's job
    assert GeoIpLookup(GeoIpSettings(city_db=str(databases[0]))).lookup("10.1.2.3")[0] is not None
    settings = geo_settings(databases)
    out = enriched(settings, dict(CONN, **{"id.orig_h": "10.1.2.3", "id.resp_h": "fe80::1"}))
    assert out["src_ip_is_private"] is True and out["dst_ip_is_private"] is True
    assert not ALL_GEO & set(out)
    # Zeek's own locality (a public address inside Site::local_nets) and the configured local_networks
    out = enriched(settings, dict(CONN, local_orig=True, local_resp=False))
    assert "src_geo_country" not in out and out["dst_geo_country"] == "AU"
    local = EnrichSettings(local_networks=["1.1.1.0/24"], geoip=settings.geoip)
    out = enriched(local, CONN)
    assert out["src_geo_country"] == "US" and "dst_geo_country" not in out and "dst_asn" not in out


def test_geoip_is_off_by_default_and_for_types_without_network_enrichment(databases: tuple[Path, Path]) -> None:
    assert not EnrichSettings().geoip.enabled
    out = enriched(EnrichSettings(), CONN)
    assert not ALL_GEO & set(out)
    shipped = load_settings(PROJECT_ROOT / "config" / "config.json", environ={})
    assert not shipped.enrich.geoip.enabled


def test_unknown_public_addresses_and_non_addresses_give_no_fields(tmp_path: Path) -> None:
    city = write_city_db(tmp_path / "city.mmdb")  # only the KNOWN networks
    out = enriched(EnrichSettings(geoip=GeoIpSettings(city_db=str(city))), dict(CONN, **{"id.resp_h": "9.9.9.9"}))
    assert out["src_geo_country"] == "US" and "dst_geo_country" not in out
    lookup = GeoIpLookup(GeoIpSettings(city_db=str(city)))
    assert lookup.lookup("not-an-address") == (None,) * 6


def test_cache_is_bounded_and_keeps_the_recently_used(databases: tuple[Path, Path]) -> None:
    lookup = GeoIpLookup(GeoIpSettings(city_db=str(databases[0]), asn_db=str(databases[1]), cache_size=3))
    first = lookup.lookup("8.8.8.8")
    for octet in range(20, 40):
        lookup.lookup(f"{octet}.1.2.3")
        lookup.lookup("8.8.8.8")  # used again after every miss: stays
    assert lookup.cache_len() == 3
    info = lookup.lookup.cache_info()  # type: ignore[attr-defined]
    assert info.misses == 21 and info.hits == 20
    assert lookup.lookup("8.8.8.8") is first  # the cached answer itself
    uncached = GeoIpLookup(GeoIpSettings(city_db=str(databases[0]), cache_size=0))
    uncached.lookup("8.8.8.8")
    assert uncached.cache_len() == 0


def test_geo_columns_are_typed_in_parquet(databases: tuple[Path, Path]) -> None:
    transformer = Transformer(RULES, geo_settings(databases))
    values = []
    for src, dst in (("8.8.8.8", "1.1.1.1"), ("10.0.0.1", "64.225.56.201"), ("192.168.1.1", "10.0.0.2")):
        result = transformer.transform_record("conn", dict(CONN, **{"id.orig_h": src, "id.resp_h": dst}),
                                              ingest_time_ms=0)
        assert isinstance(result, Accepted)
        values.append(result.value)
    conversion = convert_documents("conn", values, [0, 0, 0], [0, 1, 2], schema=SCHEMA, rules=RULES)
    table = conversion.table
    assert not conversion.rejects and table.num_rows == 3
    for side in ("src", "dst"):
        assert table.schema.field(f"{side}_geo_lat").type == pa.float64()
        assert table.schema.field(f"{side}_geo_lon").type == pa.float64()
        assert table.schema.field(f"{side}_asn").type == pa.int64()
        for name in ("geo_country", "geo_city", "as_org"):
            assert table.schema.field(f"{side}_{name}").type == pa.string()
    assert table.column("src_geo_country").to_pylist() == ["US", None, None]
    assert table.column("dst_asn").to_pylist() == [13335, 14061, None]
    assert table.column("dst_geo_lat").to_pylist() == [KNOWN["1.1.1.0/24"].latitude,
                                                       KNOWN["64.225.56.0/24"].latitude, None]


# ------------------------------------------------------------------------------------------ bad databases


def corrupt_copy(good: Path, target: Path) -> Path:
    """The database with its search tree overwritten: the metadata still reads, lookups cannot."""
    data = bytearray(good.read_bytes())
    data[0:4096] = b"\xff" * 4096
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("case", ["missing", "directory", "not_mmdb", "truncated", "corrupt_tree", "swapped"])
def test_an_unusable_database_is_one_clear_error_at_start(case: str, databases: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    city, asn = databases
    key = "city_db"
    if case == "missing":
        path, expected = tmp_path / "GeoLite2-City.mmdb", "file not found"
    elif case == "directory":
        path, expected = tmp_path, "is a directory"
    elif case == "not_mmdb":
        path, expected = tmp_path / "city.mmdb", "not a readable MaxMind DB file"
        path.write_bytes(b"<html>404 Not Found</html>\n" * 10)
    elif case == "truncated":
        path, expected = tmp_path / "city.mmdb", "not a readable MaxMind DB file"
        path.write_bytes(city.read_bytes()[: city.stat().st_size // 2])
    elif case == "corrupt_tree":
        path, expected = corrupt_copy(city, tmp_path / "city.mmdb"), "corrupt MaxMind DB"
    else:
        path, expected = asn, "is a GeoLite2-ASN database; it belongs in enrich.geoip.asn_db"
    with pytest.raises(GeoIpError) as info:
        Transformer(RULES, EnrichSettings(geoip=GeoIpSettings(**{key: str(path)})))
    message = str(info.value)
    assert message.startswith(f"enrich.geoip.{key}: {path}: ") and expected in message
    assert "\n" not in message


def test_an_asn_path_holding_a_city_database_is_refused(databases: tuple[Path, Path]) -> None:
    with pytest.raises(GeoIpError, match=r"^enrich\.geoip\.asn_db: .*is a GeoLite2-City database; it belongs in "
                                         r"enrich\.geoip\.city_db$"):
        GeoIpLookup(GeoIpSettings(asn_db=str(databases[0])))


def test_the_service_exits_with_the_config_error_code_and_one_line(tmp_path: Path) -> None:
    """The real command, as a pod runs it: exit 2 and one stderr line (the container's termination message)."""
    config = orjson.loads((PROJECT_ROOT / "config" / "config.json").read_bytes())
    config["enrich"] = {"geoip": {"city_db": str(tmp_path / "missing.mmdb")}}
    (tmp_path / "config.json").write_bytes(orjson.dumps(config))
    for name in ("normalization.json", "schema.json"):
        (tmp_path / name).write_bytes((PROJECT_ROOT / "config" / name).read_bytes())
    done = subprocess.run([sys.executable, "-m", "zeek_pipeline.cli", "normalizer-enricher", "--config",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"zeek-pipeline normalizer-enricher: enrich.geoip.city_db: {tmp_path / 'missing.mmdb'}: file not found"]


def test_environment_sets_the_database_paths(databases: tuple[Path, Path]) -> None:
    city, asn = databases
    settings = load_settings(PROJECT_ROOT / "config" / "config.json", environ={
        env_name("enrich", "geoip", "city_db"): str(city), env_name("enrich", "geoip", "asn_db"): str(asn)})
    assert settings.enrich.geoip.city_db == str(city) and settings.enrich.geoip.asn_db == str(asn)
    assert enriched(settings.enrich, CONN)["src_asn"] == 15169


def test_validate_config_opens_the_geoip_databases(databases: tuple[Path, Path], tmp_path: Path) -> None:
    config = orjson.loads((PROJECT_ROOT / "config" / "config.json").read_bytes())
    for name in ("normalization.json", "schema.json"):
        (tmp_path / name).write_bytes((PROJECT_ROOT / "config" / name).read_bytes())

    def validate(geoip: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        (tmp_path / "config.json").write_bytes(orjson.dumps({**config, "enrich": {"geoip": geoip}}))
        return subprocess.run([sys.executable, "-m", "zeek_pipeline.cli", "validate-config", "--config",
                               str(tmp_path)], capture_output=True, text=True, timeout=120, check=False,
                              env={"PATH": "/usr/bin:/bin"})

    good = validate({"city_db": str(databases[0]), "asn_db": str(databases[1])})
    assert good.returncode == 0 and "ok  GeoIP databases" in good.stdout, good.stderr
    bad = validate({"city_db": str(databases[1])})
    assert bad.returncode == 1
    assert f"enrich.geoip.city_db: {databases[1]}: is a GeoLite2-ASN database" in bad.stderr
