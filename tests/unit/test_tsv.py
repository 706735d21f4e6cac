"""Zeek TSV reading: headers, typed values, unset/empty markers, escapes, several header blocks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.infra.zeek_data import tsv_logs
from zeek_pipeline.core.decode import INVALID_TIME, MISSING_PATH
from zeek_pipeline.core.tsv import (
    TSV_BAD_VALUE,
    TSV_FIELD_COUNT,
    TSV_NO_HEADER,
    TsvReader,
    TsvRecord,
    TsvReject,
    unescape,
)

HEADER = [
    b"#separator \\x09",
    b"#set_separator\t,",
    b"#empty_field\t(empty)",
    b"#unset_field\t-",
    b"#path\tconn",
    b"#open\t2024-04-19-00-00-01",
    b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tproto\tduration\torig_bytes\tlocal_orig\ttunnel_parents\tcount_i\tname",
    b"#types\ttime\tstring\taddr\tport\tenum\tinterval\tcount\tbool\tset[string]\tint\tstring",
]


def read(lines: list[bytes], reader: TsvReader | None = None) -> list[TsvRecord | TsvReject]:
    reader = reader or TsvReader()
    out = []
    for number, line in enumerate(lines, 1):
        item = reader.feed(number, line)
        if item is not None:
            out.append(item)
    return out


def test_types_values_like_zeeks_json_writer() -> None:
    line = b"1713484795.943239\tCYl7H53iN6mY9NyXJ8\t167.94.138.145\t25320\ttcp\t0.000064\t18446744073709551615\tF" \
           b"\tCa,Cb\t-42\tx"
    [item] = read([*HEADER, line])
    assert item == TsvRecord(9, "conn", {
        "ts": 1713484795.943239, "uid": "CYl7H53iN6mY9NyXJ8", "id.orig_h": "167.94.138.145", "id.orig_p": 25320,
        "proto": "tcp", "duration": 0.000064, "orig_bytes": 2**64 - 1, "local_orig": False,
        "tunnel_parents": ["Ca", "Cb"], "count_i": -42, "name": "x",
    })


def test_unset_is_absent_and_empty_is_empty() -> None:
    [item] = read([*HEADER, b"1.5\t-\t-\t-\t-\t-\t-\t-\t(empty)\t-\t(empty)"])
    assert isinstance(item, TsvRecord)
    assert item.record == {"ts": 1.5, "tunnel_parents": [], "name": ""}


def test_escapes_are_undone() -> None:
    [item] = read([*HEADER, b"1.5\t\\x2d\t-\t-\t-\t-\t-\t-\ta\\x2cb,c\t-\ttab\\x09nl\\x0ab\\x5cx41\\xc3\\xa9\\xff"])
    assert isinstance(item, TsvRecord)
    assert item.record["uid"] == "-"  # an escaped dash is the string "-", not unset
    assert item.record["tunnel_parents"] == ["a,b", "c"]  # the set separator is split before unescaping
    assert item.record["name"] == "tab\tnl\nb\\x41é\\xff"  # invalid UTF-8 reads as the text \xff


def test_unescape_leaves_non_escapes() -> None:
    assert unescape(b"a\\xZZ\\x4") == b"a\\xZZ\\x4"
    assert unescape(b"\\x41\\x42") == b"AB"


def test_several_header_blocks_and_close_lines() -> None:
    second = [b"#separator \\x7c", b"#set_separator|;", b"#empty_field|(empty)", b"#unset_field|-", b"#path|dns",
              b"#fields|ts|query|answers|TTLs", b"#types|time|string|vector[string]|vector[interval]"]
    lines = [*HEADER, b"1.5\tC1\t-\t-\t-\t-\t-\t-\t-\t-\t-", b"#close\t2024-04-19-01-00-00", *second,
             b"2.5|example.org|a;b|1.0;-", b"#close|2024-04-19-02-00-00"]
    first, dns = read(lines)
    assert first.log_type == "conn" and first.record == {"ts": 1.5, "uid": "C1"}  # type: ignore[union-attr]
    assert dns == TsvRecord(18, "dns", {"ts": 2.5, "query": "example.org", "answers": ["a", "b"],
                                        "TTLs": [1.0, None]})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"1.5\tC1", TSV_FIELD_COUNT),
        (b"soon\tC1\t-\t-\t-\t-\t-\t-\t-\t-\t-", INVALID_TIME),
        (b"1.5\tC1\t-\t70000\t-\t-\t-\t-\t-\t-\t-", TSV_BAD_VALUE),
        (b"1.5\tC1\t-\t-\t-\t-\t18446744073709551616\t-\t-\t-\t-", TSV_BAD_VALUE),
        (b"1.5\tC1\t-\t-\t-\t-\t1_0\t-\t-\t-\t-", TSV_BAD_VALUE),
        (b"1.5\tC1\t-\t-\t-\t-\t-\tyes\t-\t-\t-", TSV_BAD_VALUE),
        (b"1.5\tC1\t-\t-\t-\tfast\t-\t-\t-\t-\t-", TSV_BAD_VALUE),
        (b"1.5\tC1\t-\t-\t-\t-\t-\t-\t-\t9223372036854775808\t-", TSV_BAD_VALUE),
    ],
)
def test_rejects_bad_lines_with_a_reason(line: bytes, reason: str) -> None:
    [item] = read([*HEADER, line])
    assert isinstance(item, TsvReject) and item.reason == reason and item.line == 9 and item.detail


def test_data_before_header_and_missing_path() -> None:
    assert read([b"1.5\tC1"]) == [TsvReject(1, TSV_NO_HEADER, "data line before the #fields header")]
    no_path = [line for line in HEADER if not line.startswith(b"#path")]
    [item] = read([*no_path, b"1.5\tC1\t-\t-\t-\t-\t-\t-\t-\t-\t-"])
    assert isinstance(item, TsvReject) and item.reason == MISSING_PATH
    [item] = read([*no_path, b"1.5\tC1\t-\t-\t-\t-\t-\t-\t-\t-\t-"], TsvReader(default_log_type="conn"))
    assert isinstance(item, TsvRecord) and item.log_type == "conn"


def test_iso_times_stay_text() -> None:
    [item] = read([*HEADER, b"2018-03-24T17:15:20.865716Z\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-"])
    assert item.record == {"ts": "2018-03-24T17:15:20.865716Z"}  # type: ignore[union-attr]


@pytest.mark.skipif(not tsv_logs(), reason="the shared TSV logs are not beside the project")
@pytest.mark.parametrize("path", tsv_logs(), ids=lambda p: p.name)
def test_reads_real_tsv_logs_without_rejects(path: Path) -> None:
    reader = TsvReader()
    count = 0
    with gzip.open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            item = reader.feed(number, line.rstrip(b"\n"))
            assert not isinstance(item, TsvReject), item
            count += item is not None
    assert count > 0
