"""GeoIP/ASN enrichment end to end: real Zeek records -> normalizer-enricher with enrich.geoip on (databases the
test builds) -> parquet-writer (both real subprocesses on the real broker) -> Parquet read back by DuckDB and
pyarrow.dataset: the geo columns are typed, filled for public non-local addresses and null for private ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.infra import topics
from tests.infra.geoip import KNOWN, write_asn_db, write_city_db
from tests.infra.zeek_data import json_logs, read_lines
from tests.integration.test_normalizer_support import Pipeline
from tests.integration.test_normalizer_support import running as normalizer_running
from tests.integration.test_writer_support import Lake, last_data_offsets, running
from zeek_pipeline.core.network import NetworkClassifier
from zeek_pipeline.core.rules import DEFAULT_LOCAL_NETWORKS
from zeek_pipeline.settings import env_name

pytestmark = pytest.mark.integration

# Real logs with public addresses on both sides (NTP to public servers, notices about outside hosts) and the
# RITA lab's http log (all public) when the shared corpus is there.
LOG_TYPES = ("ntp", "notice", "http")
GEO_TYPES = {"geo_country": pa.string(), "geo_city": pa.string(), "geo_lat": pa.float64(),
             "geo_lon": pa.float64(), "asn": pa.int64(), "as_org": pa.string()}


def expected_public(files: list[Path]) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Per log type: records, and per side the records whose address there is public and not local (what must
    get a country)."""
    classify = NetworkClassifier(DEFAULT_LOCAL_NETWORKS).lookup
    records: Counter[str] = Counter()
    public: dict[str, Counter[str]] = {"src": Counter(), "dst": Counter()}
    for path in files:
        log_type = path.name.split(".")[0]
        for line in read_lines(path):
            record = orjson.loads(line)
            records[log_type] += 1
            for side, field, flag in (("src", "id.orig_h", "local_orig"), ("dst", "id.resp_h", "local_resp")):
                info = classify(record[field]) if isinstance(record.get(field), str) else None
                local = record.get(flag)
                if info is not None and not info.is_private and not (
                        local if isinstance(local, bool) else info.is_local):
                    public[side][log_type] += 1
    return records, public


def test_geo_columns_reach_parquet_typed_for_real_records(kafka_bootstrap: str, tmp_path: Path) -> None:
    files = [path for path in json_logs() if path.name.split(".")[0] in LOG_TYPES]
    records, public = expected_public(files)
    total = sum(records.values())
    assert sum(public["dst"].values()) > 100, public  # the input really has public addresses

    city = write_city_db(tmp_path / "GeoLite2-City.mmdb", world=True)
    asn = write_asn_db(tmp_path / "GeoLite2-ASN.mmdb", world=True)
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=1, name="geo").create()  # every partition fed
    lake = Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake")).create(topic=pipe.output)
    with normalizer_running(pipe), running(lake):
        pipe.publish(files)
        normalizer = pipe.start(**{env_name("enrich", "geoip", "city_db"): str(city),
                                   env_name("enrich", "geoip", "asn_db"): str(asn)})
        writer = lake.start(ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS="2")
        pipe.wait_all_committed(timeout=240, alive=normalizer)
        lake.wait_written(last_data_offsets(kafka_bootstrap, pipe.output, total), timeout=240, alive=writer)
        assert writer.terminate() == 0, writer.tail()
        assert normalizer.terminate() == 0, normalizer.tail()
    assert topics.consume_all(kafka_bootstrap, pipe.dlq, timeout=10, idle=2) == []
    assert topics.consume_all(kafka_bootstrap, lake.dlq, timeout=10, idle=2) == []

    base = Path(lake.base)
    for log_type, count in records.items():
        dataset = ds.dataset(base / log_type, format="parquet", partitioning="hive")
        for side in ("src", "dst"):
            for name, arrow_type in GEO_TYPES.items():
                assert dataset.schema.field(f"{side}_{name}").type == arrow_type, (log_type, side, name)
        table = dataset.to_table()
        assert table.num_rows == count, log_type
        for side in ("src", "dst"):
            # a country and an AS exactly where the address is public and not local; never for a private one
            for name in ("geo_country", "asn"):
                filled = table.filter(table.column(f"{side}_{name}").is_valid()).num_rows
                assert filled == public[side][log_type], (log_type, side, name)
            private = table.filter(table.column(f"{side}_ip_is_private").fill_null(False))
            assert private.column(f"{side}_geo_country").null_count == private.num_rows
            assert private.column(f"{side}_as_org").null_count == private.num_rows

    # DuckDB over the lake: the same counts and types, and the answers of the test's databases
    rel = f"read_parquet('{base}/**/*.parquet', hive_partitioning=true, union_by_name=true)"
    con = duckdb.connect()
    assert con.sql(f"select count(*), count(src_geo_country), count(dst_geo_country) from {rel}").fetchall() == [
        (total, sum(public["src"].values()), sum(public["dst"].values()))]
    described = dict(con.sql(f"select column_name, column_type from (describe select * from {rel})").fetchall())
    assert (described["src_geo_lat"], described["dst_geo_lon"], described["src_asn"], described["dst_as_org"]) == (
        "DOUBLE", "DOUBLE", "BIGINT", "VARCHAR")
    rows = con.sql(f"select dst_ip, dst_geo_country, dst_geo_city, dst_asn, dst_as_org, dst_geo_lat from {rel} "
                   "where dst_geo_country is not null").fetchall()
    assert len(rows) == sum(public["dst"].values())
    for address, country, city_name, number, org, lat in rows:
        known = next((place for cidr, place in KNOWN.items() if _inside(address, cidr)), None)
        if known is not None:
            assert (country, city_name, number, org, lat) == (known.country, known.city, known.asn,
                                                              known.as_org, known.latitude)
        else:
            octet = int(address.split(".")[0]) if "." in address else 0
            assert (city_name, number, org) == (f"City-{octet}", 64_512 + octet, f"AS-ORG-{octet}"), address


def _inside(address: str, cidr: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)
