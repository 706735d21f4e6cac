"""Every real Zeek log, JSON and TSV, through `zeek-pipeline normalize` (a subprocess, no broker needed):
zero rejects, raw kept exactly, spot-checked values per type, and both message forms normalizing alike."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, json_logs, read_lines, tsv_logs
from zeek_pipeline.core.forms import to_tagged
from zeek_pipeline.core.transform import Accepted, Transformer

CONFIG = PROJECT_ROOT / "config"

# file name -> (index of the output document, layer, key, expected value), read off the real files
SPOT_CHECKS: dict[str, list[tuple[int, str, str, Any]]] = {
    "dns.json.gz": [(0, "normalized", "src_ip", "10.47.1.100"), (0, "normalized", "dns_query", "ise.wrccdc.org"),
                    (0, "raw", "TTLs", [2230.0, 41830.0]), (0, "enriched", "service", "dns"),
                    (0, "enriched", "direction", "internal"), (0, "normalized", "zeek_write_ts", 1521911720866)],
    "ssl.json.gz": [(0, "normalized", "flow_id", "CmC9kY1X0u9nP78KZc"), (0, "enriched", "service", "ssl"),
                    (0, "normalized", "event_time", 1521911720615)],
    "x509.json.gz": [(0, "normalized", "cert_fingerprint",
                      "b2dafbcdbc75210672f137f27ce882ccb799887631655d4f11191d5a678e44fe")],
    "ntp.json.gz": [(0, "raw", "ref_id", "\\x00\\x00\\x00\\x00"), (0, "enriched", "direction", "outbound"),
                    (0, "enriched", "service", "ntp")],
    "kerberos.json.gz": [(0, "normalized", "kerberos_service", "krbtgt/NM"), (0, "enriched", "service", "krb")],
    "known_services.json.gz": [(0, "normalized", "host_ip", "10.47.3.200"), (0, "enriched", "service", "http")],
    "loaded_scripts.json.gz": [(0, "normalized", "script_name", "/opt/zeek/share/zeek/base/init-bare.zeek")],
    "stats.json.gz": [(0, "raw", "events_proc", 522), (0, "normalized", "sensor_name", "zeek")],
    "http.json.gz": [(0, "normalized", "event_time", 1517336154078), (0, "normalized", "http_host", "www.alexa.com"),
                     (0, "enriched", "event_weekday", 2), (0, "enriched", "direction", "outbound")],
    "conn.log.gz": [(0, "raw", "_node_name", "worker-eth0-1"), (0, "normalized", "event_time", 1713484795943),
                    (0, "enriched", "direction", "inbound"), (0, "raw", "tunnel_parents", None)],
    "http.log.gz": [(0, "raw", "tags", []), (0, "raw", "proxied", ["X-FORWARDED-FOR -> 38.154.224.126"]),
                    (0, "normalized", "http_status_code", 200), (0, "normalized", "src_port", 15696)],
    "files.log.gz": [(0, "normalized", "file_id", "FwSVkw2xz3avAxsa"), (0, "raw", "conn_uids", ["CyV9iC1qx2Uurfucq8"]),
                     (0, "raw", "local_orig", True)],
    "dns.log.gz": [(0, "raw", "rcode_name", "NXDOMAIN"), (0, "raw", "RD", True), (0, "normalized", "src_port", 43250)],
}


def run_normalize(path: Path, tmp_path: Path) -> tuple[list[dict[str, Any]], list[bytes]]:
    out, rejects = tmp_path / "out.ndjson", tmp_path / "rejects.ndjson"
    proc = subprocess.run(
        [sys.executable, "-m", "zeek_pipeline.cli", "normalize", "--config", str(CONFIG), "--input", str(path),
         "--output", str(out), "--rejects", str(rejects)],
        capture_output=True, check=False, cwd=PROJECT_ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return docs, rejects.read_bytes().splitlines()


def event_ms(ts: Any) -> int:
    """An independent parse of a Zeek ts (datetime for ISO, repr digits for epoch floats)."""
    if isinstance(ts, str):
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return int(moment.timestamp()) * 1000 + moment.microsecond // 1000
    whole, _, frac = repr(float(ts)).partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def get(doc: dict[str, Any], layer: str, key: str) -> Any:
    return doc[layer].get(key)


@pytest.mark.parametrize("path", json_logs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_json_log_normalizes_without_rejects(path: Path, tmp_path: Path) -> None:
    docs, rejects = run_normalize(path, tmp_path)
    assert rejects == []
    records = [orjson.loads(line) for line in read_lines(path)]
    assert len(docs) == len(records)
    for doc, record in zip(docs, records, strict=True):
        assert doc["log_type"] == record["_path"]
        assert doc["raw"] == {k: v for k, v in record.items() if k not in ("_path", "_write_ts")}
        if "ts" in record:
            assert doc["normalized"]["event_time"] == event_ms(record["ts"])
            assert doc["enriched"]["event_year"] == datetime.fromtimestamp(event_ms(record["ts"]) // 1000, UTC).year
        if "_write_ts" in record:
            assert doc["normalized"]["zeek_write_ts"] == event_ms(record["_write_ts"])
    for index, layer, key, expected in SPOT_CHECKS.get(path.name, []):
        assert get(docs[index], layer, key) == expected, (path.name, index, layer, key)


@pytest.mark.skipif(not tsv_logs(), reason="the shared TSV logs are not beside the project")
@pytest.mark.parametrize("path", tsv_logs(), ids=lambda p: p.name)
def test_tsv_log_normalizes_without_rejects(path: Path, tmp_path: Path) -> None:
    docs, rejects = run_normalize(path, tmp_path)
    assert rejects == []
    data_lines = [line for line in read_lines(path) if not line.startswith(b"#")]
    assert len(docs) == len(data_lines)
    fields = next(line for line in read_lines(path) if line.startswith(b"#fields")).split(b"\t")[1:]
    for doc, line in zip(docs, data_lines, strict=True):
        values = dict(zip(fields, line.split(b"\t"), strict=True))
        assert doc["log_type"] == path.name.split(".")[0]
        assert set(doc["raw"]) == {name.decode() for name, value in values.items() if value != b"-"}
        assert doc["normalized"]["event_time"] == event_ms(float(values[b"ts"]))
        assert doc["raw"]["ts"] == float(values[b"ts"])
    for index, layer, key, expected in SPOT_CHECKS.get(path.name, []):
        assert get(docs[index], layer, key) == expected, (path.name, index, layer, key)


def test_uint64_counts_beyond_2_53_stay_exact(tmp_path: Path) -> None:
    """A real conn record with its byte counts raised past 2^53, as TSV and as JSON."""
    conn = next(path for path in tsv_logs() if path.name == "conn.log.gz") if tsv_logs() else None
    if conn is None:
        pytest.skip("the shared TSV logs are not beside the project")
    lines = list(read_lines(conn))
    header = [line for line in lines[:8] if line.startswith(b"#")]
    fields = header[-2].split(b"\t")[1:]
    row = lines[8].split(b"\t")
    row[fields.index(b"orig_bytes")] = b"18446744073709551615"
    row[fields.index(b"resp_bytes")] = b"9007199254740993"
    tsv = tmp_path / "conn.log"
    tsv.write_bytes(b"\n".join([*header, b"\t".join(row)]) + b"\n")
    [doc], rejects = run_normalize(tsv, tmp_path)
    assert rejects == []
    assert doc["raw"]["orig_bytes"] == 2**64 - 1 and doc["raw"]["resp_bytes"] == 2**53 + 1
    assert doc["normalized"]["src_bytes"] == 2**64 - 1
    as_json = tmp_path / "conn.json"
    as_json.write_bytes(orjson.dumps({"_path": "conn", **doc["raw"]}) + b"\n")
    [again], _ = run_normalize(as_json, tmp_path)
    assert again["raw"] == doc["raw"]
    assert b"18446744073709551615" in (tmp_path / "out.ndjson").read_bytes()


def test_both_forms_give_equal_normalized_and_enriched_layers() -> None:
    transformer = Transformer.from_config_dir(CONFIG)
    compared = 0
    for path in json_logs():
        for line in read_lines(path):
            flat = transformer.transform(line, ingest_time_ms=0)
            tagged = transformer.transform(orjson.dumps(to_tagged(orjson.loads(line))), ingest_time_ms=0)
            assert isinstance(flat, Accepted) and isinstance(tagged, Accepted)
            a, b = orjson.loads(flat.value), orjson.loads(tagged.value)
            a["normalized"].pop("zeek_write_ts", None)
            assert a["normalized"] == b["normalized"], line
            assert a["enriched"] == b["enriched"], line
            assert flat.key == tagged.key and flat.event_time_ms == tagged.event_time_ms
            compared += 1
    assert compared >= 9_000  # the shipped sample alone has 9k records; the shared corpus 178k


def test_tsv_and_its_json_twin_normalize_alike(tmp_path: Path) -> None:
    """The same real TSV records, as Zeek's JSON writer would print them, give the same document."""
    if not tsv_logs():
        pytest.skip("the shared TSV logs are not beside the project")
    transformer = Transformer.from_config_dir(CONFIG)
    for path in tsv_logs():
        docs, _ = run_normalize(path, tmp_path)
        for doc in docs[:500]:
            twin = orjson.dumps({doc["log_type"]: doc["raw"]})
            again = transformer.transform(twin, ingest_time_ms=doc["normalized"]["ingest_time"])
            assert isinstance(again, Accepted)
            assert orjson.loads(again.value) == doc


def test_sample_tagged_files_match_their_flat_files() -> None:
    """tests/data/zeek-sample/tagged/ holds exactly the flat sample converted by core/forms.py."""
    sample = PROJECT_ROOT / "tests" / "data" / "zeek-sample"
    for flat in sorted(sample.glob("*.json.gz")):
        with gzip.open(flat, "rb") as a, gzip.open(sample / "tagged" / flat.name, "rb") as b:
            expected = [orjson.dumps(to_tagged(orjson.loads(line))) for line in a]
            assert [line.rstrip(b"\n") for line in b] == expected
