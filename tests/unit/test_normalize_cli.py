"""`zeek-pipeline normalize` and `validate-config`: the CLI contract (I/O, order, rejects, exit codes)."""

from __future__ import annotations

import base64
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.infra.zeek_data import PROJECT_ROOT, SAMPLE_ZEEK
from zeek_pipeline.cli import main

CONFIG = PROJECT_ROOT / "config"


def sample_lines(log_type: str, tagged: bool = False) -> list[bytes]:
    with gzip.open(SAMPLE_ZEEK / ("tagged" if tagged else "") / f"{log_type}.json.gz", "rb") as handle:
        return [line.rstrip(b"\n") for line in handle]


def read_ndjson(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_ndjson_in_documents_out_in_input_order_with_rejects(tmp_path: Path) -> None:
    good = sample_lines("dns")[:5] + sample_lines("ssl", tagged=True)[:5]
    bad = [b"{not json", b"\xff\xfe{}", b'{"_path": "dns", "ts": "soon"}']
    lines = [good[0], bad[0], *good[1:5], b"", bad[1], *good[5:], bad[2]]
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out, rejects = tmp_path / "out.ndjson", tmp_path / "rejects.ndjson"
    code = main(["normalize", "--config", str(CONFIG), "--input", str(source), "--output", str(out),
                 "--rejects", str(rejects)])
    assert code == 0
    docs = read_ndjson(out)
    assert [d["raw"]["uid"] for d in docs] == [  # type: ignore[index]
        (orjson.loads(g).get("uid") or orjson.loads(g)["ssl"]["uid"]) for g in good]
    assert [d["log_type"] for d in docs] == ["dns"] * 5 + ["ssl"] * 5
    entries = read_ndjson(rejects)
    assert [(e["line"], e["error"]) for e in entries] == [(2, "invalid_json"), (8, "invalid_utf8"),
                                                          (14, "invalid_time")]
    assert entries[0]["text"] == "{not json" and entries[0]["detail"]
    assert base64.b64decode(entries[1]["base64"]) == bad[1]  # type: ignore[arg-type]
    assert "text" not in entries[1]


def test_gzip_input_and_output(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson.gz"
    code = main(["normalize", "--config", str(CONFIG), "--input", str(SAMPLE_ZEEK / "x509.json.gz"),
                 "--output", str(out), "--rejects", str(tmp_path / "r")])
    assert code == 0
    docs = [orjson.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert len(docs) == len(sample_lines("x509"))
    assert docs[0]["normalized"]["cert_fingerprint"] == orjson.loads(sample_lines("x509")[0])["fingerprint"]
    assert (tmp_path / "r").read_bytes() == b""


def test_tsv_input_is_detected_and_typed(tmp_path: Path) -> None:
    tsv = tmp_path / "conn.log"
    tsv.write_bytes(b"\n".join([
        b"#separator \\x09", b"#set_separator\t,", b"#empty_field\t(empty)", b"#unset_field\t-",
        b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tlocal_orig\tlocal_resp",
        b"#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tbool\tbool",
        b"1713484795.943239\tCYl7H53iN6mY9NyXJ8\t167.94.138.145\t25320\t64.225.56.201\t6008\ttcp\tF\tT",
        b"1713484795.943239\tC2\t1.2.3.4\tnotaport\t5.6.7.8\t1\ttcp\tF\tF",
        b"#close\t2024-04-19-14-00-00",
    ]) + b"\n")
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    assert main(["normalize", "--config", str(CONFIG), "--input", str(tsv), "--output", str(out),
                 "--rejects", str(rejects)]) == 0
    [doc] = read_ndjson(out)
    assert doc["log_type"] == "conn"  # from the file name: this log has no #path
    assert doc["raw"]["id.orig_p"] == 25320 and doc["raw"]["local_orig"] is False  # type: ignore[index]
    assert doc["enriched"]["direction"] == "inbound"  # type: ignore[index]
    [entry] = read_ndjson(rejects)
    assert entry["line"] == 8 and entry["error"] == "tsv_bad_value"


def test_stdin_to_stdout_with_rejects_on_stderr() -> None:
    body = b"\n".join([sample_lines("rdp")[0], b"[]", sample_lines("rdp")[1]]) + b"\n"
    proc = subprocess.run([sys.executable, "-m", "zeek_pipeline.cli", "normalize", "--config", str(CONFIG)],
                          input=body, capture_output=True, check=False, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    assert orjson.loads(proc.stderr.splitlines()[0]) == {
        "line": 2, "error": "not_an_object", "detail": "message is an array, not a JSON object", "text": "[]"}


def test_config_and_usage_errors_exit_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["normalize", "--config", str(tmp_path / "missing")]) == 2
    assert main(["normalize", "--config", str(CONFIG), "--input", str(tmp_path / "none.json")]) == 2
    (tmp_path / "normalization.json").write_text('{"dns": {"promote": {"ts": 5}}}')
    assert main(["normalize", "--config", str(tmp_path), "--input", str(SAMPLE_ZEEK / "dns.json.gz")]) == 2
    err = capsys.readouterr().err
    assert "normalization.json" in err and "dns.promote.ts" in err and "got 5" in err
    with pytest.raises(SystemExit) as info:
        main(["normalize", "--bogus"])
    assert info.value.code == 2


def test_truncated_gzip_stops_with_status_1_after_writing_what_was_read(tmp_path: Path) -> None:
    data = (SAMPLE_ZEEK / "dns.json.gz").read_bytes()
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["normalize", "--config", str(CONFIG), "--input", str(broken), "--output", str(out),
                 "--rejects", str(tmp_path / "r")]) == 1
    assert len(out.read_bytes().splitlines()) > 10


def copy_config(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def test_validate_config_accepts_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-config", "--config", str(CONFIG)]) == 0
    assert "configuration is valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("normalization.json", '{"dns": {"static": {"event_type": ["x"]}}}',
         ["normalization.json", "dns.static.event_type", '["x"]', "must be a string, number or boolean"]),
        ("normalization.json", "{", ["normalization.json", "not valid JSON"]),
        ("config.json", '{"enrich": {"service_ports": {"http/80": "http"}}}',
         ["config.json", "enrich.service_ports", "http/80", "'<proto>/<port>'"]),
        ("schema.json", '{"dns": {"fields": {"ts": "timestamp"}}}', ["schema.json", "dns", "timestamp"]),
    ],
)
def test_validate_config_names_file_key_value_and_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          file: str, content: str, expected: list[str]) -> None:
    config = copy_config(tmp_path)
    (config / file).write_text(content)
    assert main(["validate-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    for text in expected:
        assert text in err


def test_validate_config_without_directory_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["validate-config", "--config", str(tmp_path / "nope")]) == 2
