"""The `publish` replay tool's pure parts: rates, input reading, message forms (no broker)."""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import orjson
import pytest

from tests.infra.zeek_data import json_logs, read_lines, tsv_logs
from zeek_pipeline.commands.publish import Progress, _rate, add_arguments, log_type_of, open_lines, records
from zeek_pipeline.core.transform import Accepted, Transformer

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_rate_accepts_plain_and_per_second_forms() -> None:
    assert _rate("5000") == 5000.0
    assert _rate("2500/s") == 2500.0
    with pytest.raises(argparse.ArgumentTypeError):
        _rate("fast")
    with pytest.raises(argparse.ArgumentTypeError):
        _rate("0")


def test_arguments_need_a_topic_and_files() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--topic", "zeek-raw", "--form", "tagged", "--repeat", "3", "a.log"])
    assert (args.topic, args.form, args.repeat, args.files) == ("zeek-raw", "tagged", 3, [Path("a.log")])
    with pytest.raises(SystemExit):
        parser.parse_args(["a.log"])


def test_gzip_and_plain_files_read_alike(tmp_path: Path) -> None:
    lines = [b'{"_path":"dns","ts":1.5}', b'{"_path":"ssl","ts":2.5}']
    plain, packed = tmp_path / "x.json", tmp_path / "x.json.gz"
    plain.write_bytes(b"\n".join(lines) + b"\n\n")
    packed.write_bytes(gzip.compress(b"\r\n".join(lines)))
    assert list(open_lines(plain)) == list(open_lines(packed)) == lines


def test_as_is_sends_ndjson_lines_byte_for_byte() -> None:
    path = json_logs()[0]
    progress = Progress()
    sent = list(records([path], "as-is", {}, progress))
    assert [body for _, body in sent] == list(read_lines(path))
    assert {log_type for log_type, _ in sent} == {path.name.split(".")[0]}
    assert progress.unconverted == 0


def test_tagged_form_has_one_tag_and_epoch_times() -> None:
    path = next(p for p in json_logs() if p.name.startswith("dns"))
    log_type, body = next(records([path], "tagged", {}, Progress()))
    message = orjson.loads(body)
    assert list(message) == ["dns"] and log_type == "dns"
    assert isinstance(message["dns"]["ts"], float)
    assert "_path" not in message["dns"] and "_write_ts" not in message["dns"]


def test_lines_that_are_not_records_are_sent_unchanged_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b"not json\n[1, 2]\n")
    progress = Progress()
    sent = list(records([path], "tagged", {}, progress))
    assert [body for _, body in sent] == [b"not json", b"[1, 2]"]
    assert progress.unconverted == 2


@pytest.mark.skipif(not tsv_logs(), reason="the shared TSV logs are not beside the project")
@pytest.mark.parametrize("form", ["as-is", "flat", "tagged"])
def test_tsv_records_become_messages_the_transform_accepts(form: str) -> None:
    transformer = Transformer.from_config_dir(CONFIG)
    path = next(p for p in tsv_logs() if p.name.startswith("conn"))
    sent = [item for _, item in zip(range(500), records([path], form, {}, Progress()), strict=False)]
    assert len(sent) == 500
    for log_type, body in sent:
        assert log_type == "conn"
        message = orjson.loads(body)
        assert ("_path" in message) is (form != "tagged")
        assert type(transformer.transform(body)) is Accepted


def test_log_type_of_both_forms() -> None:
    assert log_type_of({"_path": "dns", "ts": 1}) == "dns"
    assert log_type_of({"ssl": {"ts": 1}}) == "ssl"
    assert log_type_of({"a": 1, "b": 2}) == "?"
    assert log_type_of([1]) == "?"
