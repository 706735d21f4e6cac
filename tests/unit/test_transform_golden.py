"""The transform's output, byte for byte, against digests taken from the code before its hot path was
rewritten for speed (tests/data/transform-golden.json).

Every record of the shipped sample (flat and tagged forms) and a list of edge cases (addresses, protocols,
ports, time forms, Zeek's own locality and service, rejects) go through Transformers of three
configurations; the digest covers each result's kind, log type, key, event time and document bytes, or
its reject reason and detail. A digest that differs names the file or case; `python -m
tests.unit.test_transform_golden --write` rewrites the file (only after checking the difference is meant).
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK
from zeek_pipeline.core.rules import EnrichSettings
from zeek_pipeline.core.transform import Accepted, Rejected, Transformer

GOLDEN = PROJECT_ROOT / "tests" / "data" / "transform-golden.json"
CONFIG = PROJECT_ROOT / "config"
INGEST_MS = 1_700_000_000_123

# Edge cases the sample lacks; each is one message body.
EDGE_CASES: list[bytes] = [
    # addresses: IPv6, IPv4-mapped IPv6, invalid, empty, equal endpoints, a non-string
    b'{"_path":"conn","ts":1.5,"uid":"C1","id.orig_h":"fe80::1","id.orig_p":5353,"id.resp_h":"2001:db8::2",'
    b'"id.resp_p":53,"proto":"udp"}',
    b'{"_path":"conn","ts":1.5,"uid":"C2","id.orig_h":"::ffff:10.1.2.3","id.orig_p":1,"id.resp_h":"8.8.8.8",'
    b'"id.resp_p":443,"proto":"tcp","service":["ssl","HTTP"]}',
    b'{"_path":"conn","ts":1.5,"uid":"C3","id.orig_h":"not-an-ip","id.orig_p":1,"id.resp_h":"","id.resp_p":2,'
    b'"proto":"tcp"}',
    b'{"_path":"conn","ts":1.5,"uid":"C4","id.orig_h":"10.0.0.1","id.orig_p":80,"id.resp_h":"10.0.0.1",'
    b'"id.resp_p":80,"proto":"tcp","service":"-","local_orig":false,"local_resp":true}',
    b'{"_path":"conn","ts":1.5,"id.orig_h":7,"id.resp_h":null,"id.orig_p":"80","id.resp_p":70000}',
    # protocols: ICMP two-way and one-way, ICMPv6, SCTP, unknown, missing ports
    b'{"_path":"conn","ts":1.5,"uid":"C5","id.orig_h":"192.168.0.1","id.orig_p":8,"id.resp_h":"1.1.1.1",'
    b'"id.resp_p":0,"proto":"icmp"}',
    b'{"_path":"conn","ts":1.5,"uid":"C6","id.orig_h":"192.168.0.1","id.orig_p":3,"id.resp_h":"1.1.1.1",'
    b'"id.resp_p":1,"proto":"icmp"}',
    b'{"_path":"conn","ts":1.5,"uid":"C7","id.orig_h":"fd00::1","id.orig_p":128,"id.resp_h":"fd00::2",'
    b'"id.resp_p":0,"proto":"icmp"}',
    b'{"_path":"conn","ts":1.5,"uid":"C8","id.orig_h":"1.2.3.4","id.orig_p":9,"id.resp_h":"5.6.7.8",'
    b'"id.resp_p":9,"proto":"sctp"}',
    b'{"_path":"conn","ts":1.5,"uid":"C9","id.orig_h":"1.2.3.4","id.resp_h":"5.6.7.8","proto":"gre"}',
    b'{"_path":"conn","ts":1.5,"uid":"C10","id.orig_h":"1.2.3.4","id.resp_h":"5.6.7.8","proto":"tcp"}',
    b'{"_path":"http","ts":1.5,"uid":"C11","id.orig_h":"1.2.3.4","id.orig_p":1234,"id.resp_h":"5.6.7.8",'
    b'"id.resp_p":8080}',
    # times: ISO forms, integer and string epochs, negative, far future, fraction digits, _write_ts
    b'{"_path":"dns","ts":"2018-03-24T17:15:20.865716Z","_write_ts":"2018-03-24T17:15:21Z","uid":"D1"}',
    b'{"_path":"dns","ts":"2018-03-24T17:15:20+01:30","uid":"D2"}',
    b'{"_path":"dns","ts":"2018-03-24 17:15:20.123456789","uid":"D3"}',
    b'{"_path":"dns","ts":1521911720,"uid":"D4"}',
    b'{"_path":"dns","ts":"1521911720.5","uid":"D5"}',
    b'{"_path":"dns","ts":-1.25,"uid":"D6"}',
    b'{"_path":"dns","ts":9999999999.999999,"uid":"D7"}',
    b'{"_path":"dns","ts":1e300,"uid":"D8"}',
    b'{"_path":"dns","ts":"yesterday","uid":"D9"}',
    b'{"_path":"dns","ts":"2018-13-24T17:15:20.865716Z","uid":"D11"}',
    b'{"_path":"dns","ts":"2018-03-24T17:15:20.865716Q","uid":"D12"}',
    b'{"_path":"dns","ts":1.5,"_write_ts":"2018-02-30T00:00:00Z","uid":"D13"}',
    b'{"_path":"x509","ts":1.5,"id":"X3","certificate.not_valid_after":"2018-03-24T25:00:00Z"}',
    b'{"_path":"dns","ts":true,"uid":"D10"}',
    b'{"_path":"files","ts":1.5,"fuid":"F1","tx_hosts":["1.2.3.4"],"rx_hosts":["5.6.7.8"]}',
    b'{"_path":"x509","ts":1.5,"id":"X1","certificate.not_valid_before":"bad"}',
    b'{"_path":"x509","ts":1.5,"id":"X2","certificate.not_valid_before":1.0,"certificate.not_valid_after":2}',
    # forms and log types: tagged, tagged with _path, unknown type, rejects of every kind
    b'{"ssh":{"ts":1.5,"uid":"S1","id.orig_h":"10.0.0.1","id.orig_p":22,"id.resp_h":"10.0.0.2","id.resp_p":22}}',
    b'{"dns":{"_path":"other","_write_ts":2.5,"ts":1.5,"uid":"S2"}}',
    b'{"_path":"my_custom_log","ts":1.5,"uid":"U1","id.orig_h":"10.0.0.1","id.resp_h":"8.8.4.4"}',
    b'{"_path":"conn","uid":"N1"}',
    b"", b"   ", b"[1,2]", b'"text"', b"{}", b'{"a":{},"b":{}}', b'{"a":1,"b":2}', b'{"dns":[1]}',
    b'{"_path":"../etc","ts":1}', b'{"_path":["dns"],"ts":1}', b'{"_path":{"a":1},"ts":1}',
    b'{"_path":"conn","ts":1.5', b'\xff\xfe{"_path":"conn"}',
    b'{"_path":"conn","ts":1.5,"uid":"C\\u00e9","note":"\\ud83d\\ude00"}',
]

Outcome = Callable[[bytes], Accepted | Rejected]


def transformers() -> dict[str, Transformer]:
    """The default configuration, Community ID keys with a seed, and locality from configured networks."""
    default = Transformer.from_config_dir(CONFIG)
    seeded = Transformer(default.rules, EnrichSettings(community_id_seed=7), key_field="community_id",
                         time_fields={"x509": ["certificate.not_valid_before", "certificate.not_valid_after"]})
    local = Transformer(default.rules, EnrichSettings(local_networks=["10.0.0.0/8", "2001:db8::/32"]),
                        topic_log_types={"zeek-dns": "dns"})
    return {"default": default, "community_id": seeded, "local_networks": local}


def describe(result: Accepted | Rejected) -> bytes:
    if type(result) is Accepted:
        return b"A|%s|%r|%r|%s" % (result.log_type.encode(), result.key, result.event_time_ms, result.value)
    assert type(result) is Rejected
    return f"R|{result.reason}|{result.log_type}|{result.detail}".encode()


def sample_files() -> Iterator[tuple[str, Path]]:
    for path in sorted(SAMPLE_ZEEK.glob("*.json.gz")):
        yield f"flat/{path.name}", path
    for path in sorted((SAMPLE_ZEEK / "tagged").glob("*.json.gz")):
        yield f"tagged/{path.name}", path


def digest(transformer: Transformer, bodies: list[bytes], topic: str | None = None) -> str:
    sha = hashlib.sha256()
    for body in bodies:
        sha.update(describe(transformer.transform(body, topic=topic, ingest_time_ms=INGEST_MS)))
        sha.update(b"\n")
    return sha.hexdigest()


def digests() -> dict[str, str]:
    found: dict[str, str] = {}
    for config, transformer in transformers().items():
        for name, path in sample_files():
            with gzip.open(path, "rb") as handle:
                bodies = [line.rstrip(b"\n") for line in handle if line.strip()]
            found[f"{config}:{name}"] = digest(transformer, bodies)
        for index, body in enumerate(EDGE_CASES):
            found[f"{config}:edge/{index}"] = digest(transformer, [body])
            found[f"{config}:edge/{index}@zeek-dns"] = digest(transformer, [body], topic="zeek-dns")
        for index, body in enumerate(EDGE_CASES):  # the same again: now every cache is warm
            found[f"{config}:edge/{index}/warm"] = digest(transformer, [body])
    return found


@pytest.fixture(scope="module")
def golden() -> dict[str, str]:
    return orjson.loads(GOLDEN.read_bytes())  # type: ignore[no-any-return]


def test_transform_output_is_byte_identical_to_the_reference(golden: dict[str, str]) -> None:
    found = digests()
    assert set(found) == set(golden)
    changed = sorted(name for name, value in found.items() if golden[name] != value)
    assert not changed, f"output differs from the reference for {changed[:20]}"


def test_golden_covers_the_sample_and_accepts_and_rejects() -> None:
    default = transformers()["default"]
    kinds = {type(default.transform(body)) for body in EDGE_CASES}
    assert kinds == {Accepted, Rejected}
    assert len(list(sample_files())) >= 60  # both forms of every sampled log type


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        GOLDEN.write_bytes(orjson.dumps(digests(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        print(f"wrote {GOLDEN}")
