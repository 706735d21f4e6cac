"""The service's loop logic with stand-in Kafka clients: what is produced, committed, aborted and rewound.

The real Transformer and real Zeek records are used; only the broker side is replaced (the integration
tests run the whole service against a real broker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Message, TopicPartition

from tests.infra.zeek_data import json_logs, read_lines
from zeek_pipeline.core.transform import Transformer
from zeek_pipeline.normalizer.errors import BatchAborted, BatchInDoubt
from zeek_pipeline.normalizer.service import NormalizerService
from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.settings import Settings

CONFIG = Path(__file__).resolve().parents[2] / "config"


class FakeOutput:
    """Records what would be produced; can fail the Nth produce() or the next commit."""

    guarantee = "exactly_once"

    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes | None, bytes | None, list[Any]]] = []
        self.committed: list[tuple[str, bytes | None, bytes | None, list[Any]]] = []
        self.commits: list[list[TopicPartition]] = []
        self.aborts = 0
        self.fail_produce_at: int | None = None
        self.fail_commit = False
        self.in_doubt_commit = False
        self.backpressure_waits = 0

    @property
    def producer(self) -> FakeOutput:  # the loop's fast path calls producer.produce(..., headers=...)
        return self

    def begin(self) -> None:
        pass

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        if self.fail_produce_at is not None and len(self.pending) >= self.fail_produce_at:
            raise BatchAborted("produce: _STATE")  # until the abort, as librdkafka does
        self.pending.append((topic, value, key, headers))

    def commit(self, consumer: Any, offsets: list[TopicPartition], deadline: float, abort_deadline: float) -> None:
        if self.in_doubt_commit:  # the producer was replaced mid-commit; the broker alone knows the outcome
            self.in_doubt_commit = False
            raise BatchInDoubt("commit_transaction still blocked 30s after it was called")
        if self.fail_commit:
            self.fail_commit = False
            self.abort(abort_deadline)
            raise BatchAborted("commit_transaction: MSG_SIZE_TOO_LARGE")
        self.commits.append(offsets)
        self.committed.extend(self.pending)
        self.pending.clear()

    def abort(self, deadline: float) -> None:
        self.aborts += 1
        self.pending.clear()
        self.fail_produce_at = None

    def poll(self) -> None:
        pass

    def queue_length(self) -> int:
        return len(self.pending)


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def consumer_group_metadata(self) -> object:
        return object()


class FakeGroupOffsets:
    """The group's committed offsets as the broker has them."""

    def __init__(self) -> None:
        self.committed: dict[int, int] = {}

    def offsets_until_answered(self, partitions: list[tuple[str, int]], should_stop: Any) -> dict[tuple[str, int], int]:
        return {tp: self.committed.get(tp[1], -1001) for tp in partitions}


@pytest.fixture
def service() -> NormalizerService:
    settings = Settings.model_validate({"kafka": {"topic": "raw"}, "output": {"kafka": {"topic": "norm",
                                       "dlq_topic": "dlq"}}, "instance_id": "unit"})
    transformer = Transformer.from_config_dir(CONFIG)
    svc = NormalizerService(settings, transformer, ServiceRuntime("normalizer-enricher", settings, None))
    svc._output = FakeOutput()  # type: ignore[assignment]
    svc._consumer = FakeConsumer()  # type: ignore[assignment]
    svc._group_offsets = FakeGroupOffsets()  # type: ignore[assignment]
    svc._on_assign(svc._consumer, [TopicPartition("raw", p) for p in range(3)])  # type: ignore[arg-type]
    return svc


def _messages(values: list[bytes], partition: int = 0, start: int = 0) -> list[Message]:
    return [Message(topic="raw", partition=partition, offset=start + i, value=v, key=None,
                    headers=None, timestamp=(1, 1_700_000_000_000)) for i, v in enumerate(values)]


def _real_lines(count: int) -> list[bytes]:
    lines: list[bytes] = []
    for path in json_logs():
        lines.extend(line for _, line in zip(range(max(1, count // 4)), read_lines(path), strict=False))
        if len(lines) >= count:
            break
    return lines[:count]


def test_every_record_becomes_one_output_or_one_dead_letter(service: NormalizerService) -> None:
    good = _real_lines(200)
    bad = [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"dns": {}, "conn": {}}', b""]
    service._process(_messages(good + bad))
    assert service._commit(1e18, 1e18)
    out: FakeOutput = service._output  # type: ignore[assignment]
    outputs = [m for m in out.committed if m[0] == "norm"]
    letters = [m for m in out.committed if m[0] == "dlq"]
    assert len(outputs) == len(good) and len(letters) == len(bad)
    assert [dict(h)["source.offset"] for _, _, _, h in outputs] == [b"%d" % i for i in range(len(good))]
    first = orjson.loads(outputs[0][1] or b"")
    assert dict(outputs[0][3])["log_type"] == first["log_type"].encode()
    assert outputs[0][2] == first["normalized"]["flow_id"].encode()
    reasons = [dict(h)["error.reason"] for _, _, _, h in letters]
    assert reasons == [b"invalid_json", b"invalid_utf8", b"not_an_object", b"several_tags", b"empty"]
    assert [v for _, v, _, _ in letters] == bad
    assert out.commits[-1] == [TopicPartition("raw", 0, len(good) + len(bad))]
    totals = service.runtime.metrics.totals()
    assert totals["produced"] == len(good) and totals["rejected"] == len(bad) and totals["transactions"] == 1


def test_abort_in_produce_rewinds_every_partition_fetched_but_not_committed(service: NormalizerService) -> None:
    lines = _real_lines(30)
    fetched = _messages(lines[:10], partition=0, start=100) + _messages(lines[10:20], partition=1, start=200) + \
        _messages(lines[20:], partition=2, start=300)
    service._output.fail_produce_at = 5  # type: ignore[union-attr]  # inside partition 0
    service._process(fetched)
    consumer: FakeConsumer = service._consumer  # type: ignore[assignment]
    # partition 0 goes back to its first record; 1 and 2 were never handled but the position is past them
    assert sorted(consumer.seeks) == [("raw", 0, 100), ("raw", 1, 200), ("raw", 2, 300)]
    assert not service.batch and service.aborts == 1


def test_records_already_handled_are_skipped_when_fetched_again(service: NormalizerService) -> None:
    lines = _real_lines(10)
    service._process(_messages(lines, start=0))
    service._process(_messages(lines[5:], start=5))  # a re-delivery of offsets 5..9
    assert service.batch.count == 10 and service.skipped == 5


def test_failed_commit_rewinds_and_the_batch_is_redone_once(service: NormalizerService) -> None:
    lines = _real_lines(20)
    service._process(_messages(lines))
    service._output.fail_commit = True  # type: ignore[union-attr]
    assert not service._commit(1e18, 1e18)
    assert service._consumer.seeks == [("raw", 0, 0)]  # type: ignore[union-attr]
    service._process(_messages(lines))  # the consumer delivers again from the rewind point
    assert service._commit(1e18, 1e18)
    out: FakeOutput = service._output  # type: ignore[assignment]
    assert len(out.committed) == 20 and service.runtime.metrics.totals()["produced"] == 20


def test_revoke_commits_the_open_batch_before_the_partitions_move(service: NormalizerService) -> None:
    lines = _real_lines(10)
    service._process(_messages(lines[:5], partition=0) + _messages(lines[5:], partition=1))
    service._on_revoke(service._consumer, [TopicPartition("raw", 0)])  # type: ignore[arg-type]
    out: FakeOutput = service._output  # type: ignore[assignment]
    assert {(tp.partition, tp.offset) for tp in out.commits[-1]} == {(0, 5), (1, 5)}
    assert service.assigned == {("raw", 1), ("raw", 2)}
    assert not service.batch


def test_revoke_with_failed_commit_rewinds_only_partitions_kept(service: NormalizerService) -> None:
    lines = _real_lines(10)
    service._process(_messages(lines[:5], partition=0) + _messages(lines[5:], partition=1))
    service._output.fail_commit = True  # type: ignore[union-attr]
    service._on_revoke(service._consumer, [TopicPartition("raw", 0)])  # type: ignore[arg-type]
    assert service._consumer.seeks == [("raw", 1, 0)]  # type: ignore[union-attr]


def test_lost_partitions_abort_the_batch_and_commit_nothing(service: NormalizerService) -> None:
    service._process(_messages(_real_lines(10)))
    service._on_lost(service._consumer, [TopicPartition("raw", p) for p in range(3)])  # type: ignore[arg-type]
    out: FakeOutput = service._output  # type: ignore[assignment]
    assert out.commits == [] and out.committed == [] and out.aborts == 1
    assert service._consumer.seeks == [] and not service.assigned  # type: ignore[union-attr]


def test_document_larger_than_the_output_topic_accepts_goes_to_dead_letter(service: NormalizerService) -> None:
    line = _real_lines(1)[0]
    service.output_limit = len(line)  # the three-layer document is always larger than the raw line
    service._process(_messages([line]))
    service._commit(1e18, 1e18)
    out: FakeOutput = service._output  # type: ignore[assignment]
    [(topic, value, _, headers)] = out.committed
    assert topic == "dlq" and value == line and dict(headers)["error.reason"] == b"too_large"


def test_a_batch_in_doubt_that_committed_is_not_redone(service: NormalizerService) -> None:
    service._process(_messages(_real_lines(20), start=100))
    service._output.in_doubt_commit = True  # type: ignore[union-attr]
    service._group_offsets.committed = {0: 120}  # type: ignore[union-attr]  # its successor completed it
    assert service._commit(1e18, 1e18)
    assert service._consumer.seeks == [("raw", 0, 120)]  # type: ignore[union-attr]
    assert service.aborts == 0 and service.runtime.metrics.totals()["transactions"] == 1


def test_a_batch_in_doubt_that_aborted_restarts_from_the_committed_offsets(service: NormalizerService) -> None:
    service._process(_messages(_real_lines(20), start=100))
    service._output.in_doubt_commit = True  # type: ignore[union-attr]
    service._group_offsets.committed = {0: 100}  # type: ignore[union-attr]
    assert not service._commit(1e18, 1e18)
    assert service._consumer.seeks == [("raw", 0, 100)] and service.aborts == 1  # type: ignore[union-attr]
