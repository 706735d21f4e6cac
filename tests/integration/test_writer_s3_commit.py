"""The writer's commit records on a real S3 server (SeaweedFS): created only if absent, with a conditional
PUT (`If-None-Match: *`), so a zombie writer cannot commit over, or under, its successor."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from tests.infra import s3_fixtures
from tests.infra.s3 import S3Server
from zeek_pipeline.settings import S3Settings
from zeek_pipeline.writer.commitlog import CommitConflict, CommitLog
from zeek_pipeline.writer.s3_conditional import conditional_put
from zeek_pipeline.writer.storage import S3Storage, open_storage

pytestmark = pytest.mark.s3

s3_server = s3_fixtures.s3_server


def settings_of(server: S3Server) -> S3Settings:
    return S3Settings(endpoint=server.endpoint, region=server.region, access_key=SecretStr(server.access_key),
                      secret_key=SecretStr(server.secret_key), scheme="http")


def test_the_s3_server_honours_if_none_match(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket(f"cond-{uuid.uuid4().hex[:12]}")
    put = conditional_put(bucket, settings_of(s3_server))
    assert put.put_if_absent("zeek/_zeek_commits/t/p0/000000000001.json", b"first")
    assert not put.put_if_absent("zeek/_zeek_commits/t/p0/000000000001.json", b"second")  # 412
    with s3_server.filesystem().open_input_stream(f"{bucket}/zeek/_zeek_commits/t/p0/000000000001.json") as f:
        assert f.read() == b"first"


def test_a_zombie_cannot_commit_on_s3_after_a_takeover_or_into_a_pruned_seq(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket(f"fence-{uuid.uuid4().hex[:12]}")
    storage = open_storage(f"s3://{bucket}/zeek", settings_of(s3_server))
    assert isinstance(storage, S3Storage)
    zombie = CommitLog(storage, "norm", "writer-0")
    state = zombie.recover(0)
    pending = zombie.new_record(state, log_type="dns", first=0, last=9, next_offset=10, files=[])  # SIGSTOP
    successor = CommitLog(open_storage(f"s3://{bucket}/zeek", settings_of(s3_server)), "norm", "writer-0")
    theirs = successor.recover(0)
    with pytest.raises(CommitConflict, match="another writer"):
        zombie.commit(pending)  # its seq is the successor's takeover record
    for n in range(20):
        record = successor.new_record(theirs, log_type="dns", first=n * 10, last=n * 10 + 9,
                                      next_offset=n * 10 + 10, files=[])
        successor.commit(record)
        theirs.apply(record)
    successor.prune(0)
    assert storage.read_bytes(f"{zombie.commits_dir(0)}/{pending.seq:012d}.json") is None  # the seq is free again
    with pytest.raises(CommitConflict, match="newer"):
        zombie.commit(pending)
    assert storage.read_bytes(f"{zombie.commits_dir(0)}/{pending.seq:012d}.json") is None
    assert successor.recover(0).next_offset == 200
