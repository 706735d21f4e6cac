"""Session-wide fixtures: one real Kafka broker for the whole run (or the one named by KAFKA_BOOTSTRAP), and the
real Iceberg catalog servers (PostgreSQL, the Iceberg REST catalog), started on first use."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from tests.infra import catalog_fixtures
from tests.infra.kafka import KafkaBroker

postgres_server = catalog_fixtures.postgres_server
postgres_catalog_uri = catalog_fixtures.postgres_catalog_uri
iceberg_rest_catalog = catalog_fixtures.iceberg_rest_catalog


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker | None]:
    """The broker process, for tests that restart it; None when an external KAFKA_BOOTSTRAP is used."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield None
        return
    broker = KafkaBroker(workdir=tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
        sys.stderr.write(f"\nkafka broker {broker.bootstrap} ready in {broker.startup_seconds:.1f}s\n")
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | None) -> str:
    """Bootstrap address of a real broker: ours, or an existing one (Redpanda, a cluster) via KAFKA_BOOTSTRAP."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        return external
    assert kafka_broker is not None
    return kafka_broker.bootstrap


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On an integration failure, attach the broker's log tail to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "kafka_broker" in getattr(item, "fixturenames", ()):
        broker = item.funcargs.get("kafka_broker") if hasattr(item, "funcargs") else None
        if isinstance(broker, KafkaBroker):
            report.sections.append(("kafka broker log", broker.tail_log()))
