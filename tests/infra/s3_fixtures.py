"""Pytest fixtures for the real S3 server (tests/infra/s3.py).

Import them where needed, e.g. in a conftest.py or a test module::

    from tests.infra import s3_fixtures

    s3_server = s3_fixtures.s3_server
    s3_filesystem = s3_fixtures.s3_filesystem
    s3_bucket = s3_fixtures.s3_bucket

(Binding them by assignment, rather than ``from ... import s3_server``, keeps
linters from flagging test arguments as redefinitions of an import.)
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.infra.s3 import S3Server

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.fs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole session (log kept in pytest's tmp dir)."""
    server = S3Server(base_dir=tmp_path_factory.mktemp("s3-server"))
    try:
        server.start()
        sys.stderr.write(
            f"\ns3 server {server.endpoint} ready in {server.startup_seconds:.1f}s (log {server.log_path})\n"
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_filesystem(s3_server: S3Server) -> pyarrow.fs.S3FileSystem:
    """A pyarrow S3FileSystem for the session server; paths are ``bucket/key``."""
    return s3_server.filesystem()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test."""
    return s3_server.create_bucket(f"t-{uuid.uuid4().hex[:20]}")
