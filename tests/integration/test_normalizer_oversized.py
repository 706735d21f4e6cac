"""One record must never stall a partition: against a broker that authorizes (StandardAuthorizer) and denies
the service DescribeConfigs, so the topics' real max.message.bytes are unknown to it.

- a document over zeek-normalized's max.message.bytes is dead-lettered with MSG_SIZE_TOO_LARGE, both
  guarantees, and everything else arrives (exactly once with transactions);
- a dead letter over zeek-dlq's max.message.bytes is cut to fit, marked with its original size;
- a dead-letter topic the service may not write to: not ready with the reason, no exit, nothing committed
  past the record; once the write is granted it goes on by itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.infra import topics
from tests.infra.kafka import KafkaBroker
from tests.infra.kafka_acl import SERVICE_PRINCIPAL, acl_broker, deny, service_security_env
from tests.infra.waiting import wait_for
from tests.infra.zeek_data import json_logs, read_lines
from tests.integration.test_normalizer_support import (
    STATUS_CONFIG,
    Pipeline,
    assert_exactly_once,
    coordinate,
    coordinate_counts,
    input_coordinates,
    read_committed,
    running,
)

pytestmark = pytest.mark.integration
__all__ = ["acl_broker"]  # the module's broker fixture

OUTPUT_MAX = 256 * 1024
DLQ_MAX = 64 * 1024


def real_lines(count: int) -> list[bytes]:
    lines: list[bytes] = []
    for path in json_logs():
        lines.extend(line for _, line in zip(range(max(1, count // 8)), read_lines(path), strict=False))
        if len(lines) >= count:
            break
    return lines[:count]


def huge_valid_record(size: int) -> bytes:
    """A real DNS record whose query is `size` random hex characters: lz4 cannot shrink it under a limit."""
    dns = next(read_lines(next(p for p in json_logs() if p.name.startswith("dns"))))
    return orjson.dumps(dict(orjson.loads(dns), query=os.urandom(size // 2).hex()))


def pipeline(broker: KafkaBroker, workdir: Path, *, output_max: int | None = None,
             dlq_max: int | None = None) -> Pipeline:
    """Topics made by the super user; the service logs in as the restricted user (service_security_env)."""
    pipe = Pipeline(broker.bootstrap, workdir, input_partitions=1, name="big")
    pipe.input = topics.create_topic(broker.bootstrap, topics.unique_name("big-raw"), 1)
    pipe.output = topics.create_topic(broker.bootstrap, topics.unique_name("big-norm"), 2, {
        "max.message.bytes": str(output_max)} if output_max else None)
    pipe.dlq = topics.create_topic(broker.bootstrap, topics.unique_name("big-dlq"), 1, {
        "max.message.bytes": str(dlq_max)} if dlq_max else None)
    pipe.status = topics.create_topic(broker.bootstrap, topics.unique_name("big-status"), 1, STATUS_CONFIG)
    pipe.group = topics.unique_name("big-group")
    return pipe


@pytest.fixture
def pipe(acl_broker: KafkaBroker, tmp_path: Path) -> Iterator[Pipeline]:
    with running(pipeline(acl_broker, tmp_path, output_max=OUTPUT_MAX, dlq_max=DLQ_MAX)) as pipe:
        yield pipe


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_document_over_the_output_topics_limit_is_dead_lettered_and_the_partition_goes_on(
        acl_broker: KafkaBroker, tmp_path: Path, guarantee: str) -> None:
    with running(pipeline(acl_broker, tmp_path, output_max=OUTPUT_MAX)) as pipe:
        normal = real_lines(120)
        huge = huge_valid_record(3 * OUTPUT_MAX)
        values = [*normal[:60], huge, *normal[60:]]
        topics.produce(acl_broker.bootstrap, pipe.input, values, partition=0)
        service = pipe.start(**service_security_env(acl_broker),
                             ZEEK_PIPELINE_NORMALIZER__PROCESSING_GUARANTEE=guarantee)
        pipe.wait_all_committed(timeout=180, alive=service)
        assert "cannot read the output topics' max.message.bytes" in service.log.read_text()  # DescribeConfigs
        assert service.terminate() == 0, service.tail()

    if guarantee == "exactly_once":
        outputs, letters = assert_exactly_once(pipe)
    else:  # duplicates allowed, nothing missing
        outputs, letters = read_committed(pipe.bootstrap, pipe.output), read_committed(pipe.bootstrap, pipe.dlq)
        assert set(coordinate_counts(outputs + letters)) == input_coordinates(pipe.bootstrap, pipe.input)
    [letter] = {coordinate(r): r for r in letters}.values()
    assert coordinate(letter) == (pipe.input, 0, 60)
    assert letter.headers["error.reason"] == b"MSG_SIZE_TOO_LARGE" and letter.value == huge
    assert {coordinate(r)[2] for r in outputs} == set(range(len(values))) - {60}
    assert len(outputs) >= len(normal) and all(orjson.loads(r.value or b"")["log_type"] for r in outputs)


def test_a_dead_letter_over_the_dlq_topics_limit_is_cut_with_a_marker(acl_broker: KafkaBroker,
                                                                      pipe: Pipeline) -> None:
    normal = real_lines(60)
    broken = b'{"dns": "' + os.urandom(3 * DLQ_MAX // 2).hex().encode()  # invalid JSON: a dead letter
    topics.produce(acl_broker.bootstrap, pipe.input, [*normal[:30], broken, *normal[30:]], partition=0)
    service = pipe.start(**service_security_env(acl_broker))
    pipe.wait_all_committed(timeout=180, alive=service)
    assert service.terminate() == 0, service.tail()

    outputs, letters = assert_exactly_once(pipe)
    [letter] = letters
    assert coordinate(letter) == (pipe.input, 0, 30) and letter.headers["error.reason"] == b"invalid_json"
    assert letter.headers["error.truncated_from"] == b"%d" % len(broken)
    assert letter.value and len(letter.value) < DLQ_MAX and broken.startswith(letter.value)
    assert len(outputs) == len(normal)


def test_a_dlq_the_service_may_not_write_keeps_it_not_ready_with_the_reason(acl_broker: KafkaBroker,
                                                                           pipe: Pipeline) -> None:
    normal = real_lines(60)
    topics.produce(acl_broker.bootstrap, pipe.input, normal[:30], partition=0)
    deny(acl_broker, pipe.dlq, AclOperation.WRITE)
    service = pipe.start(**service_security_env(acl_broker))
    pipe.wait_all_committed(timeout=120, alive=service)  # no dead letter yet: the good records go through
    topics.produce(acl_broker.bootstrap, pipe.input, [b"{not json", *normal[30:]], partition=0)

    def refused() -> str | None:
        assert service.process.poll() is None, f"exited {service.process.returncode}\n{service.tail()}"
        code, reason = service.ready()
        return reason if code == 503 and "TOPIC_AUTHORIZATION_FAILED" in reason else None

    reason = wait_for("not ready because zeek-dlq refuses writes", refused, timeout=120)
    assert pipe.dlq in reason
    status = service.status()
    assert status["state"] == "degraded" and "TOPIC_AUTHORIZATION_FAILED" in str(status["reason"])
    assert pipe.committed() == {0: 30}  # never past the record that could not be dead-lettered
    assert service.process.poll() is None

    admin = AdminClient({"bootstrap.servers": acl_broker.bootstrap})  # an operator grants the write
    grant = AclBindingFilter(ResourceType.TOPIC, pipe.dlq, ResourcePatternType.LITERAL, SERVICE_PRINCIPAL, "*",
                             AclOperation.WRITE, AclPermissionType.DENY)
    admin.delete_acls([grant], request_timeout=30)[grant].result(30)
    pipe.wait_all_committed(timeout=180, alive=service)
    wait_for("ready again", lambda: service.ready()[0] == 200, timeout=60)
    assert service.terminate() == 0, service.tail()
    outputs, letters = assert_exactly_once(pipe)
    assert len(outputs) == len(normal) and [r.headers["error.reason"] for r in letters] == [b"invalid_json"]
