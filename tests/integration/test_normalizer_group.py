"""Two instances in one consumer group share a 6-partition topic and hand partitions over without loss."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.infra.zeek_data import json_logs
from tests.integration.test_normalizer_support import (
    Pipeline,
    Service,
    assert_exactly_once,
    open_transaction_partitions,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def produced(service: Service) -> int:
    totals = service.status()["totals"]
    assert isinstance(totals, dict)
    return int(totals["produced"])


def wait_produced(service: Service, minimum: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if produced(service) >= minimum:
            return
        time.sleep(0.3)
    raise AssertionError(f"instance produced {produced(service)} < {minimum}\n{service.tail()}")


def test_two_instances_share_partitions_and_hand_over_on_stop(kafka_bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=6, name="pair").create()
    total = 90_000
    with running(pipe):
        publisher = pipe.publish(json_logs(), "--rate", "3000", "--count", str(total), "--repeat", "0",
                                 background=True)
        first = pipe.start("normalizer-a")
        first.wait_assigned(6)
        second = pipe.start("normalizer-b")
        mine, theirs = first.wait_assigned(3), second.wait_assigned(3)
        assert mine.isdisjoint(theirs) and mine | theirs == set(range(6))
        wait_produced(first, 1000)
        wait_produced(second, 1000)  # both do work
        assert first.ready() == (200, "ready") and second.ready() == (200, "ready")

        assert first.terminate() == 0, first.tail()  # mid-stream: the publisher is still sending
        assert publisher.poll() is None
        assert second.wait_assigned(6) == set(range(6))
        assert publisher.wait(120) == 0
        pipe.wait_all_committed(timeout=120, alive=second)
        assert second.terminate() == 0, second.tail()

    outputs, letters = assert_exactly_once(pipe)
    assert len(outputs) + len(letters) == total
    assert open_transaction_partitions(kafka_bootstrap, pipe.output, pipe.dlq) == []
