"""Property tests: no input makes the transformer raise, and accepted output is always a valid document."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.infra.zeek_data import PROJECT_ROOT
from zeek_pipeline.core.decode import REASONS
from zeek_pipeline.core.transform import Accepted, Rejected, Transformer
from zeek_pipeline.core.tsv import TsvReader

TRANSFORMER = Transformer.from_config_dir(PROJECT_ROOT / "config", key_field="community_id")
LOG_TYPES = ["conn", "dns", "files", "x509", "weird", "notice", "known_services", "loaded_scripts", "unknown_x"]
FIELDS = ["ts", "uid", "fuid", "id.orig_h", "id.resp_h", "id.orig_p", "id.resp_p", "proto", "service",
          "local_orig", "local_resp", "_write_ts", "_path", "certificate.not_valid_after", "host", "port_num"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["10.0.0.1", "::1", "fe80::1", "8.8.8.8", "2018-03-24T17:15:20.865716Z", "tcp", "udp",
                     "icmp", "1713484795.943239", "-", ""]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
records = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), json_values, max_size=12)


def check(result: Accepted | Rejected) -> None:
    if isinstance(result, Rejected):
        assert result.reason in REASONS and result.reason != "internal_error", result
        return
    doc = orjson.loads(result.value)
    assert set(doc) == {"source", "log_type", "raw", "normalized", "enriched"}
    assert isinstance(doc["normalized"]["ingest_time"], int)


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    check(TRANSFORMER.transform(body))


@settings(max_examples=600, deadline=None, database=None)
@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    check(TRANSFORMER.transform(orjson.dumps(value)))


@settings(max_examples=600, deadline=None, database=None)
@given(st.sampled_from(LOG_TYPES), records, st.booleans())
def test_arbitrary_records_in_both_forms_never_raise(log_type: str, record: dict[str, Any], tagged: bool) -> None:
    message = {log_type: record} if tagged else {**record, "_path": log_type}
    check(TRANSFORMER.transform(orjson.dumps(message), topic="t"))
    check(TRANSFORMER.transform_record(log_type, dict(record)))


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.binary(max_size=80), max_size=12))
def test_arbitrary_tsv_lines_never_raise(lines: list[bytes]) -> None:
    reader = TsvReader()
    header = [b"#separator \\x09", b"#fields\tts\tuid\tid.orig_p\tset", b"#types\ttime\tstring\tport\tset[addr]"]
    for number, line in enumerate(header + lines, 1):
        item = reader.feed(number, line)
        if item is not None and hasattr(item, "record"):
            check(TRANSFORMER.transform_record(item.log_type, item.record))  # type: ignore[union-attr]
