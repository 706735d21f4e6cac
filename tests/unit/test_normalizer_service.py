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
from zeek_pipeline.normalizer.size_guard import SizeFailure
from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.settings import Settings

CONFIG = Path(__file__).resolve().parents[2] / "config"


class FakeOutput:
    """Records what would be produced; can fail the Nth produce() or the next commit, and refuse record batches
    over `broker_limit` bytes per topic (as a broker does: every record of the batch fails, nothing says which
    one was too large) or every write to `refused_topic` (no permission)."""

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
        self.broker_limit: dict[str, int] = {}
        self.refused_topic: str | None = None
        self.size_failures: list[SizeFailure] = []
        self.refusals: list[str] = []
        self.alone: list[tuple[str, int]] = []  # (topic, size) of every produce_alone()

    @property
    def producer(self) -> FakeOutput:  # the loop's fast path calls producer.produce(..., headers=...)
        return self

    def begin(self) -> None:
        pass

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        if self.fail_produce_at is not None and len(self.pending) >= self.fail_produce_at:
            raise BatchAborted("produce: _STATE")  # until the abort, as librdkafka does
        self.pending.append((topic, value, key, headers))

    def produce_alone(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> bool:
        self.alone.append((topic, len(value or b"")))
        if len(value or b"") > self.broker_limit.get(topic, 1 << 62):
            self.size_failures.append(SizeFailure(topic, len(value or b"")))
            return False
        self.produce(topic, value, key, headers)
        return True

    def take_size_failures(self) -> list[SizeFailure]:
        failures, self.size_failures = self.size_failures, []
        return failures

    def take_refusals(self) -> list[str]:
        refusals, self.refusals = self.refusals, []
        return refusals

    def _broker_refuses(self) -> bool:
        refused = False
        for topic, limit in self.broker_limit.items():
            batch = [len(value or b"") for name, value, _, _ in self.pending if name == topic]
            if sum(batch) > limit:
                self.size_failures += [SizeFailure(topic, size) for size in batch]
                refused = True
        if any(name == self.refused_topic for name, _, _, _ in self.pending):
            self.refusals.append(f"{self.refused_topic}: TOPIC_AUTHORIZATION_FAILED: Topic authorization failed")
            refused = True
        return refused

    def commit(self, consumer: Any, offsets: list[TopicPartition], deadline: float, abort_deadline: float) -> None:
        if self._broker_refuses():
            self.abort(abort_deadline)
            raise BatchAborted("commit_transaction: the broker refused a record batch")
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


def _huge_dns(size: int) -> bytes:
    line = next(read_lines(next(p for p in json_logs() if p.name.startswith("dns"))))
    return orjson.dumps(dict(orjson.loads(line), query="a" * size))


def _until_committed(service: NormalizerService, fetched: list[Message], rounds: int = 6) -> int:
    """Deliver `fetched` again after every rewind, as the consumer would, until a commit succeeds; the rounds."""
    consumer: FakeConsumer = service._consumer  # type: ignore[assignment]
    for round_ in range(1, rounds + 1):
        consumer.seeks.clear()
        service._process(fetched)
        if not consumer.seeks and service._commit(1e18, 1e18):
            return round_
    raise AssertionError(f"not committed after {rounds} rounds")


def test_a_document_the_broker_refuses_is_dead_lettered_on_replay(service: NormalizerService) -> None:
    lines = _real_lines(20)
    huge = _huge_dns(200_000)
    out: FakeOutput = service._output  # type: ignore[assignment]
    out.broker_limit = {"norm": 150_000}  # unknown to the service: it still assumes max_message_bytes
    service.runtime.set_state("ok")
    assert _until_committed(service, _messages(lines[:10] + [huge] + lines[10:])) == 3
    outputs = [m for m in out.committed if m[0] == "norm"]
    [(_, value, _, headers)] = [m for m in out.committed if m[0] == "dlq"]
    assert value == huge and dict(headers)["error.reason"] == b"MSG_SIZE_TOO_LARGE"
    assert dict(headers)["source.offset"] == b"10"
    assert sorted(int(dict(h)["source.offset"]) for _, _, _, h in outputs) == [*range(10), *range(11, 21)]
    assert service.aborts == 2 and service.runtime.readiness()[0] is True


def test_a_batch_refused_though_each_record_fits_dead_letters_nothing(service: NormalizerService) -> None:
    lines = _real_lines(20)
    out: FakeOutput = service._output  # type: ignore[assignment]
    largest = max(len(service.transformer.transform(line).value) for line in lines)  # type: ignore[union-attr]
    out.broker_limit = {"norm": largest * 3}  # a whole batch is too large, every single record fits
    service._process(_messages(lines))
    assert not service._commit(1e18, 1e18)
    out.broker_limit = {}  # the producer's next batches happen to fit
    assert _until_committed(service, _messages(lines)) == 1
    assert [m[0] for m in out.committed] == ["norm"] * 20 and ("norm", largest) in out.alone


def test_a_dead_letter_too_large_for_its_topic_is_cut_with_a_marker(service: NormalizerService) -> None:
    out: FakeOutput = service._output  # type: ignore[assignment]
    out.broker_limit = {"norm": 100_000, "dlq": 60_000}
    huge = _huge_dns(200_000)
    _until_committed(service, _messages([*_real_lines(5), huge]), rounds=8)
    [(_, value, _, headers)] = [m for m in out.committed if m[0] == "dlq"]
    assert value is not None and len(value) <= 60_000 and huge.startswith(value)
    assert dict(headers)["error.truncated_from"] == b"%d" % len(huge)
    assert len([m for m in out.committed if m[0] == "norm"]) == 5


def test_refused_writes_make_the_service_not_ready_and_commit_nothing(service: NormalizerService) -> None:
    out: FakeOutput = service._output  # type: ignore[assignment]
    out.refused_topic = "dlq"
    fetched = _messages([*_real_lines(5), b"{not json"])
    service.runtime.set_state("ok")
    service._process(fetched)
    assert not service._commit(1e18, 1e18)
    ready, reason = service.runtime.readiness()
    assert not ready and "TOPIC_AUTHORIZATION_FAILED" in reason and "dlq" in reason
    assert out.commits == [] and service._retry_at > 0
    out.refused_topic = None  # an operator grants the write
    assert _until_committed(service, fetched) == 1
    assert service.runtime.readiness() == (True, "ready") and len(out.committed) == 6
