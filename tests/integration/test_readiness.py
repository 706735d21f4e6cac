"""An instance that gets no partition (more replicas than partitions) is Ready: a rollout can go on."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.infra.service_process import Service
from tests.infra.waiting import wait_for
from tests.integration.test_normalizer_support import Pipeline, running

pytestmark = pytest.mark.integration


def ready(service: Service) -> bool:
    with contextlib.suppress(OSError):  # the probe port opens a moment after the process starts
        return service.ready() == (200, "ready")
    return False


def test_a_second_normalizer_on_a_one_partition_topic_is_ready_without_a_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=1, name="ready").create()
    with running(pipe):
        first = pipe.start("normalizer-a")
        first.wait_assigned(1)
        second = pipe.start("normalizer-b")  # what a maxSurge pod is when replicas = partitions
        wait_for("the second instance Ready", lambda: ready(second), timeout=60)
        assert second.assigned() == set() and first.assigned() == {0}
        assert first.ready() == (200, "ready")
