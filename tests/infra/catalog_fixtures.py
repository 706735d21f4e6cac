"""Pytest fixtures for the real Iceberg catalog servers: PostgreSQL (tests/infra/postgres.py) and the Iceberg REST
catalog (tests/infra/iceberg_rest.py).

tests/conftest.py registers the ones that need nothing else (`postgres_server`, `postgres_catalog_uri`,
`iceberg_rest_catalog`). The REST catalog with an S3 warehouse needs the S3 server, so a test module that wants
it binds it next to the S3 fixtures, as tests/infra/s3_fixtures.py describes::

    s3_server = s3_fixtures.s3_server
    iceberg_rest_s3_catalog = catalog_fixtures.iceberg_rest_s3_catalog
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.infra.iceberg_rest import IcebergRestCatalog, s3_warehouse_properties
from tests.infra.postgres import PostgresServer
from tests.infra.s3 import S3Server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; each test takes its own database from it."""
    server = PostgresServer()
    try:
        server.start()
        sys.stderr.write(f"\npostgres 127.0.0.1:{server.port} ready in {server.startup_seconds:.1f}s\n")
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_catalog_uri(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URI (`postgresql+psycopg2://...`) of a fresh, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    uri = postgres_server.create_database(name)
    try:
        yield uri
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def iceberg_rest_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IcebergRestCatalog]:
    """One REST catalog server for the session, warehouse on local disk (`.warehouse` is its file: URI)."""
    server = IcebergRestCatalog(tmp_path_factory.mktemp("iceberg-rest"))
    try:
        server.start()
        sys.stderr.write(f"\niceberg rest catalog {server.uri} ready in {server.startup_seconds:.1f}s\n")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def iceberg_rest_s3_catalog(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[IcebergRestCatalog]:
    """One REST catalog server for the session, warehouse in its own bucket on the loopback S3 server."""
    bucket = s3_server.create_bucket(f"iceberg-{uuid.uuid4().hex[:12]}")
    server = IcebergRestCatalog(
        tmp_path_factory.mktemp("iceberg-rest-s3"), properties=s3_warehouse_properties(s3_server, bucket)
    )
    try:
        server.start()
        sys.stderr.write(f"\niceberg rest catalog (s3) {server.uri} ready in {server.startup_seconds:.1f}s\n")
        yield server
    finally:
        server.stop()
