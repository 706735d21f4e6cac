"""Fault injection: SIGKILL at random moments, and a broker outage, while real Zeek records flow."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.infra import topics
from tests.infra.kafka import KafkaBroker
from tests.infra.zeek_data import json_logs
from tests.integration.test_normalizer_support import (
    FAST_GROUP,
    Pipeline,
    Service,
    assert_exactly_once,
    open_transaction_partitions,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_progress(pipe: Pipeline, since: int, service: Service, timeout: float = 60.0) -> int:
    """Until the group committed more than `since` (the restarted instance is working)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.process.poll() is None, service.tail()
        committed = pipe.committed_total()
        if committed > since:
            return committed
        time.sleep(0.2)
    raise AssertionError(f"no progress beyond {since} in {timeout}s\n{service.tail()}")


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=3, name="kill").create()
    total = 120_000
    kills = 6
    with running(pipe):
        # ~60 s of flow, so every kill lands while records are still arriving.
        publisher = pipe.publish(json_logs(), "--rate", "2000", "--count", str(total), "--repeat", "0",
                                 background=True)
        service = pipe.start(ZEEK_PIPELINE_KAFKA__LIBRDKAFKA=FAST_GROUP)
        committed = 0
        killed_at = []
        for _ in range(kills):
            committed = wait_progress(pipe, committed, service)
            time.sleep(rng.uniform(0.0, 2.0))
            service.kill()  # SIGKILL: no commit, no abort, no goodbye to the group
            committed = pipe.committed_total()  # the next instance must get beyond this before its kill
            killed_at.append(committed)
            service = pipe.start(ZEEK_PIPELINE_KAFKA__LIBRDKAFKA=FAST_GROUP)
        assert publisher.wait(180) == 0
        assert pipe.input_total() == total
        assert killed_at[-1] < total, f"the last kill came after the stream ended (seed {seed})"
        pipe.wait_all_committed(timeout=120, alive=service)
        assert service.terminate() == 0, service.tail()

    outputs, letters = assert_exactly_once(pipe)
    assert len(outputs) + len(letters) == total
    assert open_transaction_partitions(kafka_bootstrap, pipe.output, pipe.dlq) == []
    aborted = len(topics.consume_all(kafka_bootstrap, pipe.output, isolation="read_uncommitted")) - len(outputs)
    print(f"seed {seed}: killed at committed={killed_at}; {aborted} outputs of killed transactions were aborted")


def test_broker_outage_of_20s_is_survived_without_loss_or_duplicates(tmp_path: Path) -> None:
    # Its own broker: stopping the session broker would disturb every other test.
    with KafkaBroker(workdir=tmp_path / "kafka") as broker:
        pipe = Pipeline(broker.bootstrap, tmp_path, input_partitions=3, name="outage").create()
        total = 100_000
        with running(pipe):
            publisher = pipe.publish(json_logs(), "--rate", "2500", "--count", str(total), "--repeat", "0",
                                     background=True)
            service = pipe.start()
            wait_progress(pipe, 10_000, service)
            broker.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < 20:
                assert service.process.poll() is None, f"the service exited during the outage\n{service.tail()}"
                time.sleep(0.5)
            broker.start()
            assert publisher.wait(300) == 0
            assert pipe.input_total() == total
            pipe.wait_all_committed(timeout=150, alive=service)
            assert service.process.poll() is None  # it recovered by itself, never restarted
            assert service.terminate() == 0, service.tail()

        outputs, letters = assert_exactly_once(pipe)
        assert len(outputs) + len(letters) == total
        assert open_transaction_partitions(broker.bootstrap, pipe.output, pipe.dlq) == []
