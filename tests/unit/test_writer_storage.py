"""Local storage: durable atomic publish, exclusive commit records, ENOSPC surfaced as 'disk full'."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from zeek_pipeline.settings import S3Settings
from zeek_pipeline.writer.storage import LocalStorage, S3Storage, StorageError, as_storage_error, open_storage


def test_publish_renames_into_place_creating_hive_folders(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with storage.open_output("_zeek_staging/t/p0/_1.tmp") as out:
        out.write(b"PAR1 data")
    storage.sync("_zeek_staging/t/p0/_1.tmp")
    storage.publish("_zeek_staging/t/p0/_1.tmp", "dns/year=2018/month=03/day=24/hour=17/f.parquet")
    assert (tmp_path / "dns/year=2018/month=03/day=24/hour=17/f.parquet").read_bytes() == b"PAR1 data"
    assert not (tmp_path / "_zeek_staging/t/p0/_1.tmp").exists()


def test_publish_is_idempotent_for_roll_forward(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("s/a.tmp", b"x")
    storage.publish("s/a.tmp", "d/a.parquet")
    storage.publish("s/a.tmp", "d/a.parquet")  # a second roll-forward finds it done
    assert (tmp_path / "d/a.parquet").read_bytes() == b"x"
    with pytest.raises(StorageError):
        storage.publish("s/missing.tmp", "d/missing.parquet")


def test_exclusive_put_lets_only_the_first_writer_win(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert storage.put_bytes("c/000001.json", b"first", exclusive=True)
    assert not storage.put_bytes("c/000001.json", b"second", exclusive=True)
    assert storage.read_bytes("c/000001.json") == b"first"
    assert storage.list_names("c") == ["000001.json"]  # no temp file left behind


def test_listing_and_reading_missing_things_is_empty_not_an_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert storage.list_names("nowhere") == []
    assert storage.read_bytes("nowhere/x") is None
    storage.delete("nowhere/x")


def test_a_full_device_raises_a_storage_error_marked_no_space() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    storage = LocalStorage("/dev")
    with pytest.raises(OSError) as caught:  # noqa: PT012 - the write or the close reports ENOSPC
        out = storage.open_output("full")
        try:
            out.write(b"x" * (1 << 20))
        finally:
            out.close()
    error = as_storage_error("write", "/dev/full", caught.value)
    assert error.no_space and "No space left" in str(error)
    assert not as_storage_error("write", "x", PermissionError(13, "Permission denied")).no_space


def test_s3_urls_open_s3_storage_with_endpoint_and_credentials() -> None:
    from pydantic import SecretStr

    storage = open_storage("s3://lake/zeek/", S3Settings(endpoint="http://127.0.0.1:9", region="eu-west-1",
                                                           access_key=SecretStr("AK"), secret_key=SecretStr("SK"),
                                                           scheme="https"))
    assert isinstance(storage, S3Storage)
    assert storage.root == "lake/zeek" and storage.path("dns/x.parquet") == "lake/zeek/dns/x.parquet"
    assert isinstance(storage.fs, pafs.S3FileSystem)
    assert storage.fs.region == "eu-west-1"


def test_other_paths_open_local_storage(tmp_path: Path) -> None:
    assert isinstance(open_storage(str(tmp_path), S3Settings()), LocalStorage)
    with pytest.raises(ValueError, match="no bucket"):
        open_storage("s3:///prefix", S3Settings())
