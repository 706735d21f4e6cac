"""SIGTERM mid-stream: exit 0 in bounded time with offsets committed; and the at-least-once option."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.infra.zeek_data import json_logs
from tests.integration.test_normalizer_support import (
    FAST_GROUP,
    Pipeline,
    coordinate_counts,
    input_coordinates,
    open_transaction_partitions,
    read_committed,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHUTDOWN_TIMEOUT = 15


def test_sigterm_mid_stream_exits_zero_with_every_handled_offset_committed(kafka_bootstrap: str,
                                                                          tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=3, name="term").create()
    total = 150_000
    with running(pipe):
        pipe.publish(json_logs(), "--count", str(total), "--repeat", "0")
        service = pipe.start(ZEEK_PIPELINE_NORMALIZER__SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT))
        while pipe.committed_total() < 20_000:
            assert service.process.poll() is None, service.tail()
            time.sleep(0.1)
        started = time.monotonic()
        code = service.terminate(timeout=SHUTDOWN_TIMEOUT + 10)
        took = time.monotonic() - started
        assert code == 0, service.tail()
        assert took < SHUTDOWN_TIMEOUT, f"shutdown took {took:.1f}s"

    committed = pipe.committed()
    assert 0 < sum(committed.values()) < total, "SIGTERM should land mid-stream"
    # Exactly the committed input range has its output, once each: nothing beyond, nothing missing.
    wanted = {(pipe.input, p, o) for p, end in committed.items() for o in range(end)}
    counts = coordinate_counts(read_committed(kafka_bootstrap, pipe.output)) + coordinate_counts(
        read_committed(kafka_bootstrap, pipe.dlq))
    assert set(counts) == wanted
    assert max(counts.values()) == 1
    assert open_transaction_partitions(kafka_bootstrap, pipe.output, pipe.dlq) == []


def test_at_least_once_mode_loses_nothing_across_a_kill(kafka_bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=3, name="alo").create()
    total = 100_000
    batch_size = 2000
    env = {"ZEEK_PIPELINE_NORMALIZER__PROCESSING_GUARANTEE": "at_least_once",
           "ZEEK_PIPELINE_NORMALIZER__BATCH_SIZE": str(batch_size), "ZEEK_PIPELINE_KAFKA__LIBRDKAFKA": FAST_GROUP}
    with running(pipe):
        publisher = pipe.publish(json_logs(), "--rate", "5000", "--count", str(total), "--repeat", "0",
                                 background=True)
        service = pipe.start(**env)
        while pipe.committed_total() < 20_000:
            assert service.process.poll() is None, service.tail()
            time.sleep(0.1)
        service.kill()  # SIGKILL between delivery and commit repeats at most the open batch
        service = pipe.start(**env)
        assert publisher.wait(120) == 0
        pipe.wait_all_committed(timeout=120, alive=service)
        assert service.terminate() == 0, service.tail()

    counts: Counter[tuple[str, int, int]] = coordinate_counts(read_committed(kafka_bootstrap, pipe.output))
    counts += coordinate_counts(read_committed(kafka_bootstrap, pipe.dlq))
    missing = input_coordinates(kafka_bootstrap, pipe.input) - set(counts)
    assert not missing, f"{len(missing)} inputs lost, e.g. {sorted(missing)[:5]}"
    duplicates = sum(n - 1 for n in counts.values())
    print(f"at_least_once: {duplicates} duplicates after one SIGKILL ({total} inputs)")
    # Only what was delivered but not yet committed when the process died is repeated: about one batch
    # per partition in flight, never the whole stream.
    assert duplicates <= 3 * batch_size
