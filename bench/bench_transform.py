"""Transformer throughput on the real mix: messages/s for decode + normalize + enrich + serialize, one core.

The mix is every record of the shared JSON logs (the 32 WRCCDC types, flat with ISO times, and the RITA
http log, flat with epoch times), once as they are (flat) and once converted to the zeek-kafka tagged form
(epoch floats), shuffled with a fixed seed so log types interleave as on a real topic. A naive baseline
(stdlib json, datetime and ipaddress per record, no caches) runs on the same mix for comparison. Prints
a table and writes bench/results/transform.json. Target: >= 100k msg/s per core.

GeoIP/ASN (enrich.geoip): the same mix through a Transformer with City and ASN databases the bench builds
(GeoLite2-sized records for every public IPv4 /14, tests/infra/geoip.py), with the default address cache and
with none (every lookup decoded from the database), as microseconds per record against GeoIP off.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import sys
import time
from base64 import b64encode
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.infra.zeek_data import json_logs, read_lines  # noqa: E402

from zeek_pipeline.core.forms import to_tagged  # noqa: E402
from zeek_pipeline.core.rules import EnrichSettings, GeoIpSettings  # noqa: E402
from zeek_pipeline.core.transform import Accepted, Transformer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ROUNDS = 3


def load_mix() -> tuple[list[bytes], list[bytes]]:
    flat: list[bytes] = []
    for path in json_logs():
        flat.extend(read_lines(path))
    tagged = [orjson.dumps(to_tagged(orjson.loads(line))) for line in flat]
    rng = random.Random(42)
    rng.shuffle(flat)
    rng.shuffle(tagged)
    return flat, tagged


def measure(transformer: Transformer, bodies: list[bytes]) -> tuple[float, int, int]:
    """Best of ROUNDS: (messages/s, accepted, output bytes)."""
    best = 0.0
    accepted = size = 0
    transform = transformer.transform
    for _ in range(ROUNDS):
        accepted = size = 0
        started = time.perf_counter()
        for body in bodies:
            result = transform(body)
            if type(result) is Accepted:
                accepted += 1
                size += len(result.value)
        best = max(best, len(bodies) / (time.perf_counter() - started))
    return best, accepted, size


_PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]


def naive(body: bytes) -> bytes | None:
    """What a first version does: json, fromisoformat, ipaddress and a fresh hash for every record."""
    try:
        obj: dict[str, Any] = json.loads(body)
    except ValueError:
        return None
    if "_path" in obj:
        log_type, record = obj.pop("_path"), obj
    else:
        log_type, record = next(iter(obj.items()))
    ts = record.get("ts", 0.0)
    when = datetime.fromisoformat(ts.replace("Z", "+00:00")) if isinstance(ts, str) else datetime.fromtimestamp(ts)
    normalized = {"event_time": int(when.timestamp() * 1000), "flow_id": record.get("uid"),
                  "src_ip": record.get("id.orig_h"), "dst_ip": record.get("id.resp_h")}
    enriched: dict[str, Any] = {"event_year": when.year, "event_month": when.month, "event_day": when.day,
                                "event_hour": when.hour, "event_weekday": when.isoweekday()}
    if normalized["src_ip"] and normalized["dst_ip"]:
        src, dst = ipaddress.ip_address(normalized["src_ip"]), ipaddress.ip_address(normalized["dst_ip"])
        src_local, dst_local = any(src in n for n in _PRIVATE), any(dst in n for n in _PRIVATE)
        enriched.update(src_ip_is_private=src.is_private, dst_ip_is_private=dst.is_private,
                        direction={(True, True): "internal", (True, False): "outbound",
                                   (False, True): "inbound"}.get((src_local, dst_local), "external"))
        digest = hashlib.sha1(src.packed + dst.packed + str(record.get("id.orig_p")).encode()).digest()
        enriched["community_id"] = "1:" + b64encode(digest).decode()
    return json.dumps({"source": "zeek", "log_type": log_type, "raw": record, "normalized": normalized,
                       "enriched": enriched}).encode()


def measure_naive(bodies: list[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        naive(body)
    return len(bodies) / (time.perf_counter() - started)


def measure_geoip(bodies: list[bytes]) -> dict[str, float]:
    """µs per record with GeoIP off, on with the default cache, and on without a cache; plus how many
    records got a geo field (a public, non-local address)."""
    import tempfile

    from tests.infra.geoip import write_realistic_dbs

    with tempfile.TemporaryDirectory(prefix="bench-geoip-") as folder:
        city, asn = write_realistic_dbs(Path(folder))
        out: dict[str, float] = {}
        for name, geoip in (("off", GeoIpSettings()),
                            ("cached", GeoIpSettings(city_db=str(city), asn_db=str(asn))),
                            ("uncached", GeoIpSettings(city_db=str(city), asn_db=str(asn), cache_size=0))):
            transformer = Transformer.from_config_dir(ROOT / "config", enrich=EnrichSettings(geoip=geoip))
            rate, accepted, _ = measure(transformer, bodies)
            assert accepted == len(bodies)
            out[f"us_per_record_{name}"] = round(1e6 / rate, 3)
        transformer = Transformer.from_config_dir(ROOT / "config", enrich=EnrichSettings(
            geoip=GeoIpSettings(city_db=str(city), asn_db=str(asn))))
        results = [transformer.transform(body) for body in bodies]
        looked_up = sum(1 for result in results if type(result) is Accepted and b'_geo_country"' in result.value)
    out["records_with_geo"] = looked_up
    out["geoip_cost_us_cached"] = round(out["us_per_record_cached"] - out["us_per_record_off"], 3)
    out["geoip_cost_us_uncached"] = round(out["us_per_record_uncached"] - out["us_per_record_off"], 3)
    return out


def main() -> int:
    flat, tagged = load_mix()
    transformer = Transformer.from_config_dir(ROOT / "config")
    types = Counter(orjson.loads(body)["_path"] for body in flat)
    rows: list[tuple[str, int, float, int]] = []
    for name, bodies in (("flat (ISO times)", flat), ("tagged (epoch floats)", tagged),
                         ("both forms", flat + tagged)):
        rate, accepted, size = measure(transformer, bodies)
        rows.append((name, len(bodies), rate, size // max(accepted, 1)))
        assert accepted == len(bodies), f"{len(bodies) - accepted} rejects in the real mix"
    naive_rate = measure_naive(flat[:50_000])
    geoip = measure_geoip(flat)

    print(f"real mix: {len(flat):,} records, {len(types)} log types "
          f"(top: {', '.join(f'{t} {n:,}' for t, n in types.most_common(4))})")
    print(f"{'input':<24}{'messages':>10}{'msg/s (1 core)':>16}{'bytes/doc':>11}")
    for name, count, rate, avg in rows:
        print(f"{name:<24}{count:>10,}{rate:>16,.0f}{avg:>11,}")
    print(f"{'naive baseline (flat)':<24}{50_000:>10,}{naive_rate:>16,.0f}")
    print(f"GeoIP/ASN on the flat mix ({geoip['records_with_geo']:,.0f} of {len(flat):,} records have a public, "
          f"non-local address): {geoip['us_per_record_off']:.2f} µs/record off, "
          f"{geoip['us_per_record_cached']:.2f} on (+{geoip['geoip_cost_us_cached']:.2f} µs, address cache), "
          f"{geoip['us_per_record_uncached']:.2f} without cache (+{geoip['geoip_cost_us_uncached']:.2f} µs)")

    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "unit": "messages/s, one core, decode+normalize+enrich+serialize",
        "records": len(flat), "log_types": len(types),
        "flat": round(rows[0][2]), "tagged": round(rows[1][2]), "both": round(rows[2][2]),
        "naive_flat": round(naive_rate), "target": 100_000,
        "geoip": geoip,
    }
    (RESULTS / "transform.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
