"""Real S3 (SeaweedFS on loopback) as seen through pyarrow: what the parquet writer relies on.

Findings pinned here (pyarrow 26, SeaweedFS 4.53):
- ``S3FileSystem.move(src, dst)`` on a file is CopyObject + DeleteObject: not atomic, the
  destination is overwritten, a missing source or a "directory" source raises OSError, and
  pyarrow leaves a zero-byte ``prefix/`` marker object for the parent it emptied.
- An object is invisible until its output stream is closed, both while pyarrow still
  buffers it and while a multipart upload is in progress.
- Closing is publishing: leaving a ``with open_output_stream(...)`` block by an exception, or
  dropping the stream, completes the upload with the partial bytes. Hence: write to a temp
  key under a ``_``-prefixed directory (ignored by ``pyarrow.dataset`` discovery), then move.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import http.client
import re

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.infra import s3_fixtures
from tests.infra.s3 import S3Server, sigv4_request

pytestmark = pytest.mark.s3

s3_server = s3_fixtures.s3_server
s3_filesystem = s3_fixtures.s3_filesystem
s3_bucket = s3_fixtures.s3_bucket

MiB = 1 << 20

CONN_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("uid", pa.string()),
        ("orig_h", pa.string()),
        ("orig_p", pa.int32()),
        ("resp_bytes", pa.int64()),
        ("duration", pa.float64()),
        ("local_orig", pa.bool_()),
        ("services", pa.list_(pa.string())),
    ]
)


def conn_table(n: int, day: dt.date) -> pa.Table:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return pa.table(
        {
            "ts": [start + dt.timedelta(seconds=i) for i in range(n)],
            "uid": [f"C{day:%m%d}{i:06d}" for i in range(n)],
            "orig_h": [f"10.0.{i // 256 % 256}.{i % 256}" for i in range(n)],
            "orig_p": [1024 + i % 60000 for i in range(n)],
            "resp_bytes": [None if i % 7 == 0 else i * 10 for i in range(n)],
            "duration": [i / 1000 for i in range(n)],
            "local_orig": [i % 2 == 0 for i in range(n)],
            "services": [["dns"] if i % 3 == 0 else ["http", "ssl"] for i in range(n)],
        },
        schema=CONN_SCHEMA,
    )


def raw_keys(server: S3Server, bucket: str) -> list[str]:
    """Keys exactly as the server's ListObjectsV2 returns them (no pyarrow interpretation)."""
    r = server.request("GET", f"/{bucket}", query={"list-type": "2"})
    assert r.status == 200, r.body
    return [k.decode() for k in re.findall(rb"<Key>(.*?)</Key>", r.body)]


def pending_uploads(server: S3Server, bucket: str) -> list[str]:
    """Keys of multipart uploads started but neither completed nor aborted."""
    r = server.request("GET", f"/{bucket}", query={"uploads": ""})
    assert r.status == 200, r.body
    return [k.decode() for k in re.findall(rb"<Upload>.*?<Key>(.*?)</Key>", r.body, re.S)]


def write_bytes(fs: pafs.S3FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_bytes(fs: pafs.S3FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        data: bytes = f.read()
    return data


def file_paths(fs: pafs.S3FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


# --------------------------------------------------------------------------- server and auth


def test_auth_is_enforced(s3_server: S3Server, s3_bucket: str) -> None:
    assert s3_server.endpoint.startswith("http://127.0.0.1:")
    assert s3_server.request("GET", "/").status == 200

    assert s3_server.request("GET", f"/{s3_bucket}").status == 200
    bad_secret = sigv4_request(
        s3_server.endpoint, s3_server.access_key, "not-the-secret", s3_server.region, "GET", f"/{s3_bucket}"
    )
    assert bad_secret.status == 403, bad_secret.body
    unknown_key = sigv4_request(
        s3_server.endpoint, "AKIDUNKNOWN", s3_server.secret_key, s3_server.region, "GET", f"/{s3_bucket}"
    )
    assert unknown_key.status == 403, unknown_key.body
    conn = http.client.HTTPConnection("127.0.0.1", int(s3_server.endpoint.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", f"/{s3_bucket}")  # anonymous
        assert conn.getresponse().status == 403
    finally:
        conn.close()

    bad_fs = s3_server.filesystem(secret_key="not-the-secret")
    with pytest.raises(OSError):
        bad_fs.get_file_info(pafs.FileSelector(s3_bucket))


# --------------------------------------------------------------------------- parquet round trip


def test_parquet_roundtrip_via_s3filesystem(
    s3_server: S3Server, s3_filesystem: pafs.S3FileSystem, s3_bucket: str
) -> None:
    fs = s3_filesystem
    days = {dt.date(2024, 1, 1): 1500, dt.date(2024, 1, 2): 700}
    for day, n in days.items():
        pq.write_table(conn_table(n, day), f"{s3_bucket}/conn/date={day:%Y-%m-%d}/part-0.parquet", filesystem=fs)

    assert file_paths(fs, f"{s3_bucket}/conn") == [
        f"{s3_bucket}/conn/date=2024-01-01/part-0.parquet",
        f"{s3_bucket}/conn/date=2024-01-02/part-0.parquet",
    ]
    info = fs.get_file_info(f"{s3_bucket}/conn/date=2024-01-01/part-0.parquet")
    assert info.type == pafs.FileType.File and info.size > 0
    assert pq.read_metadata(info.path, filesystem=fs).num_rows == 1500

    dataset = ds.dataset(
        f"{s3_bucket}/conn",
        filesystem=fs,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
    )
    assert dataset.count_rows() == sum(days.values())
    for field in CONN_SCHEMA:
        assert dataset.schema.field(field.name).type == field.type, field.name
    assert dataset.schema.field("date").type == pa.string()

    day2 = dataset.to_table(filter=pc.field("date") == "2024-01-02")
    assert day2.num_rows == 700
    expected = conn_table(700, dt.date(2024, 1, 2))
    day2 = day2.select(CONN_SCHEMA.names).sort_by("uid")
    assert day2.equals(expected.sort_by("uid"))
    assert day2.column("resp_bytes").null_count == expected.column("resp_bytes").null_count > 0

    # DuckDB reads the same S3 data through the Arrow dataset (its own httpfs extension
    # is not available offline, so S3 access stays with pyarrow).
    con = duckdb.connect()
    con.register("conn", dataset)
    row = con.execute("SELECT count(*), count(*) - count(resp_bytes), count(DISTINCT date) FROM conn").fetchone()
    assert row is not None
    rows, nulls, distinct_days = row
    assert (rows, distinct_days) == (2200, 2)
    assert nulls == sum(len(range(0, n, 7)) for n in days.values())


# --------------------------------------------------------------------------- move / copy / delete


def test_move_is_copy_then_delete(s3_server: S3Server, s3_filesystem: pafs.S3FileSystem, s3_bucket: str) -> None:
    fs = s3_filesystem
    tmp = f"{s3_bucket}/conn/_tmp/part-0.parquet.inprogress"
    final = f"{s3_bucket}/conn/date=2024-01-01/part-0.parquet"
    table = conn_table(100, dt.date(2024, 1, 1))
    pq.write_table(table, tmp, filesystem=fs)
    payload = read_bytes(fs, tmp)

    fs.move(tmp, final)

    assert fs.get_file_info(tmp).type == pafs.FileType.NotFound
    assert read_bytes(fs, final) == payload
    assert file_paths(fs, f"{s3_bucket}/conn") == [final]
    # pyarrow keeps the emptied parent "directory" alive with a zero-byte marker object.
    assert raw_keys(s3_server, s3_bucket) == ["conn/_tmp/", final.split("/", 1)[1]]
    assert fs.get_file_info(f"{s3_bucket}/conn/_tmp").type == pafs.FileType.Directory

    # A stale temp file next to the published one is not picked up by dataset discovery
    # ("_"-prefixed paths are ignored), so readers never see half-written data.
    write_bytes(fs, f"{s3_bucket}/conn/_tmp/part-1.parquet.inprogress", payload[: len(payload) // 2])
    dataset = ds.dataset(f"{s3_bucket}/conn", filesystem=fs, format="parquet", partitioning="hive")
    assert dataset.files == [final]
    assert dataset.count_rows() == 100


def test_move_overwrites_destination(s3_filesystem: pafs.S3FileSystem, s3_bucket: str) -> None:
    fs = s3_filesystem
    write_bytes(fs, f"{s3_bucket}/a.bin", b"new contents")
    write_bytes(fs, f"{s3_bucket}/b.bin", b"old")
    fs.move(f"{s3_bucket}/a.bin", f"{s3_bucket}/b.bin")
    assert read_bytes(fs, f"{s3_bucket}/b.bin") == b"new contents"
    assert fs.get_file_info(f"{s3_bucket}/a.bin").type == pafs.FileType.NotFound


def test_move_errors(s3_filesystem: pafs.S3FileSystem, s3_bucket: str) -> None:
    fs = s3_filesystem
    with pytest.raises(OSError, match="NO_SUCH_KEY|does not exist"):
        fs.move(f"{s3_bucket}/missing.bin", f"{s3_bucket}/x.bin")
    assert fs.get_file_info(f"{s3_bucket}/x.bin").type == pafs.FileType.NotFound

    write_bytes(fs, f"{s3_bucket}/dir/one.bin", b"1")
    with pytest.raises(OSError):  # directories are not moved on S3
        fs.move(f"{s3_bucket}/dir", f"{s3_bucket}/dir2")
    assert file_paths(fs, s3_bucket) == [f"{s3_bucket}/dir/one.bin"]


def test_copy_keeps_source_and_delete_removes(s3_filesystem: pafs.S3FileSystem, s3_bucket: str) -> None:
    fs = s3_filesystem
    data = bytes(range(256)) * 4096  # 1 MiB
    write_bytes(fs, f"{s3_bucket}/src.bin", data)
    fs.copy_file(f"{s3_bucket}/src.bin", f"{s3_bucket}/dst.bin")
    assert read_bytes(fs, f"{s3_bucket}/src.bin") == data
    assert read_bytes(fs, f"{s3_bucket}/dst.bin") == data
    fs.delete_file(f"{s3_bucket}/src.bin")
    assert file_paths(fs, s3_bucket) == [f"{s3_bucket}/dst.bin"]
    with pytest.raises(FileNotFoundError):
        fs.open_input_stream(f"{s3_bucket}/src.bin")


# --------------------------------------------------------------------------- visibility of uploads


def test_small_stream_invisible_until_closed(
    s3_server: S3Server, s3_filesystem: pafs.S3FileSystem, s3_bucket: str
) -> None:
    fs = s3_filesystem
    path = f"{s3_bucket}/pending/small.bin"
    out = fs.open_output_stream(path)
    try:
        out.write(b"x" * 4096)
        out.flush()
        assert fs.get_file_info(path).type == pafs.FileType.NotFound
        assert file_paths(fs, s3_bucket) == []
        assert raw_keys(s3_server, s3_bucket) == []
    finally:
        out.close()
    info = fs.get_file_info(path)
    assert (info.type, info.size) == (pafs.FileType.File, 4096)


def test_multipart_upload_invisible_until_closed(
    s3_server: S3Server, s3_filesystem: pafs.S3FileSystem, s3_bucket: str
) -> None:
    fs = s3_filesystem
    path = f"{s3_bucket}/pending/big.bin"
    chunk = hashlib.sha256(b"seed").digest() * (MiB // 32)
    digest = hashlib.sha256()
    out = fs.open_output_stream(path)
    try:
        for _ in range(12):  # > pyarrow's part size: parts are uploaded while the stream is open
            out.write(chunk)
            digest.update(chunk)
        out.flush()  # waits for the background part uploads
        assert pending_uploads(s3_server, s3_bucket) == ["pending/big.bin"]
        assert fs.get_file_info(path).type == pafs.FileType.NotFound
        assert file_paths(fs, s3_bucket) == []
        assert raw_keys(s3_server, s3_bucket) == []  # no ".uploads" staging area leaks out
    finally:
        out.close()
    info = fs.get_file_info(path)
    assert (info.type, info.size) == (pafs.FileType.File, 12 * MiB)
    assert hashlib.sha256(read_bytes(fs, path)).digest() == digest.digest()
    assert pending_uploads(s3_server, s3_bucket) == []


def test_closing_publishes_partial_data(s3_filesystem: pafs.S3FileSystem, s3_bucket: str) -> None:
    """pyarrow completes (never aborts) an upload: an exception or a dropped stream publishes it."""
    fs = s3_filesystem
    with pytest.raises(RuntimeError), fs.open_output_stream(f"{s3_bucket}/crashed.bin") as out:
        out.write(b"partial")
        raise RuntimeError("writer crashed mid-file")
    assert read_bytes(fs, f"{s3_bucket}/crashed.bin") == b"partial"

    dropped = fs.open_output_stream(f"{s3_bucket}/dropped.bin")
    dropped.write(b"half")
    del dropped
    gc.collect()
    assert read_bytes(fs, f"{s3_bucket}/dropped.bin") == b"half"
