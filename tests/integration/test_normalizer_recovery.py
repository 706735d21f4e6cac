"""Recovery of exactly-once when an instance dies or a commit's outcome is unknown (docs/normalizer-exactly-once.md).

- An instance killed mid-transaction and replaced by one with a different name (a new pod): the new owner
  fences the dead one's transactional.id on assignment, so its open transaction does not hold read_committed
  readers, nor the new owner's start offsets, until the broker's transaction timeout. The transaction timeout
  is 10 minutes in these tests: without the fence nothing after the dead transaction becomes visible during
  the test, so the checks fail instead of passing late. How long the stall lasts before and after is measured
  by bench/bench_txn_stall.py, not asserted here.
- A commit_transaction the broker accepted (PREPARE_COMMIT written) that never returns, as librdkafka's
  hang does: the producer is replaced, and the replacement's init_transactions completes the commit. The
  service must continue after the batch (the group's committed offsets), not redo it from its first offsets.
- The broker stopped for longer than the transaction timeout while a commit is in flight: abort_transaction
  would only answer _CONFLICT; the producer is replaced once the broker is back, and the service resumes
  without exiting.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.infra.kafka import KafkaBroker
from tests.infra.waiting import wait_for
from tests.infra.zeek_data import json_logs
from tests.integration.test_normalizer_support import (
    FAST_GROUP,
    Pipeline,
    assert_exactly_once,
    open_transaction_partitions,
    running,
    wait_logged,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# One batch per 3000 records (never cut short by time), so the second commit is the second 3000's.
BATCH_PER_3000 = {"ZEEK_PIPELINE_NORMALIZER__BATCH_SIZE": "3000", "ZEEK_PIPELINE_NORMALIZER__BATCH_TIMEOUT_MS": "20000"}
LONG_TRANSACTIONS = {"ZEEK_PIPELINE_KAFKA__LIBRDKAFKA": FAST_GROUP,
                     "ZEEK_PIPELINE_NORMALIZER__TRANSACTION_TIMEOUT_MS": "600000"}


@pytest.mark.parametrize("point", [
    "before_send_offsets",  # a transaction open with records in the output partitions
    "before_commit_transaction",  # ... and with the input offsets sent: they block the group's offset fetch
])
def test_a_replacement_with_a_new_name_ends_the_dead_instances_open_transaction(
        kafka_bootstrap: str, tmp_path: Path, point: str) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=3, name="takeover").create()
    with running(pipe):
        pipe.publish(json_logs(), "--count", "3000", "--repeat", "0")
        dead = pipe.start("normalizer-a", ZEEK_NORMALIZER_FAILPOINTS=f"{point}@2=hang", **LONG_TRANSACTIONS,
                          **BATCH_PER_3000)
        wait_for("the first commit", lambda: pipe.committed_total() == 3000, timeout=60)  # records the owner
        pipe.publish(json_logs(), "--count", "3000", "--repeat", "0")
        wait_logged(dead, f"failpoint {point}@2")
        dead.kill()  # SIGKILL with its transaction open

        replacement = pipe.start("normalizer-b", **LONG_TRANSACTIONS)
        pipe.publish(json_logs(), "--count", "2000", "--repeat", "0")
        wait_for("all 8000 committed", lambda: pipe.committed_total() == 8000, timeout=120)
        assert replacement.terminate() == 0, replacement.tail()

    outputs, letters = assert_exactly_once(pipe)  # read_committed: everything visible, each once
    assert len(outputs) + len(letters) == 8000
    assert open_transaction_partitions(kafka_bootstrap, pipe.output, pipe.dlq) == []
    assert "fenced the transactional id of a previous owner" in replacement.log.read_text()


def test_a_commit_hung_after_prepare_commit_is_not_produced_twice(kafka_bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=3, name="hung").create()
    total = 20_000
    with running(pipe):
        publisher = pipe.flow(total, rate=1000)
        service = pipe.start(ZEEK_NORMALIZER_FAILPOINTS="after_commit_transaction@3=hang")
        wait_logged(service, "failpoint after_commit_transaction@3")
        wait_logged(service, "replacing the transactional producer", timeout=90)
        assert publisher.wait(120) == 0
        wait_for("everything committed", lambda: pipe.committed_total() == total, timeout=120)
        assert service.process.poll() is None, service.tail()
        assert service.terminate() == 0, service.tail()

    outputs, letters = assert_exactly_once(pipe)
    assert len(outputs) + len(letters) == total
    assert open_transaction_partitions(kafka_bootstrap, pipe.output, pipe.dlq) == []


def test_broker_stopped_longer_than_the_transaction_timeout_mid_commit(tmp_path: Path) -> None:
    # Its own broker: stopping the session broker would disturb every other test.
    with KafkaBroker(workdir=tmp_path / "kafka") as broker:
        pipe = Pipeline(broker.bootstrap, tmp_path, input_partitions=3, name="stall").create()
        paused = tmp_path / "commit-paused"
        total = 40_000
        with running(pipe):
            publisher = pipe.flow(total, rate=2000)
            service = pipe.start(ZEEK_PIPELINE_NORMALIZER__TRANSACTION_TIMEOUT_MS="10000",
                                 ZEEK_NORMALIZER_FAILPOINTS=f"before_commit_transaction@5=pause:{paused}")
            wait_for("a commit paused before commit_transaction", paused.exists, timeout=120)
            broker.stop()
            paused.unlink()  # commit_transaction now runs against the stopped broker
            stopped = time.monotonic()
            while time.monotonic() - stopped < 30:  # three transaction timeouts
                assert service.process.poll() is None, f"the service exited during the outage\n{service.tail()}"
                time.sleep(0.5)
            broker.start()
            assert publisher.wait(300) == 0
            wait_for("everything committed", lambda: pipe.committed_total() == total, timeout=240)
            assert service.process.poll() is None, f"the service exited\n{service.tail()}"
            assert service.terminate() == 0, service.tail()

        outputs, letters = assert_exactly_once(pipe)
        assert len(outputs) + len(letters) == total
        assert open_transaction_partitions(broker.bootstrap, pipe.output, pipe.dlq) == []
