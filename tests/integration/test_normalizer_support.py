"""Helpers for the normalizer-enricher's integration tests (no tests here): unique topics, the service and
`publish` as real subprocesses, and exactly-once checks by source coordinates."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from tests.infra import topics
from tests.infra.service_process import CONFIG, ZEEK, ServiceDeployment
from tests.infra.service_process import Service as Service  # re-exported: the normalizer tests import it from here
from tests.infra.zeek_data import json_logs

STATUS_CONFIG = {"cleanup.policy": "compact"}
# Fast group membership for kill/restart tests: a killed member is dropped after 6 s, not 30 s.
FAST_GROUP = json.dumps({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})

Coordinate = tuple[str, int, int]  # source topic, partition, offset


@dataclass
class Pipeline(ServiceDeployment):
    """One isolated pipeline on a broker: its own topics and consumer group; `start()` runs a normalizer-enricher."""

    command: ClassVar[str] = "normalizer-enricher"
    port_variable: ClassVar[str] = "ZEEK_PIPELINE_NORMALIZER__HTTP_PORT"
    default_instance: ClassVar[str] = "normalizer-0"

    bootstrap: str
    workdir: Path
    input_partitions: int = 3
    name: str = "n"
    input: str = ""
    output: str = ""
    dlq: str = ""
    status: str = ""
    group: str = ""
    services: list[Service] = field(default_factory=list)
    publishers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def create(self) -> Pipeline:
        self.input = topics.create_topic(self.bootstrap, topics.unique_name(f"{self.name}-raw"), self.input_partitions)
        self.output = topics.create_topic(self.bootstrap, topics.unique_name(f"{self.name}-norm"), 3)
        self.dlq = topics.create_topic(self.bootstrap, topics.unique_name(f"{self.name}-dlq"), 1)
        self.status = topics.create_topic(self.bootstrap, topics.unique_name(f"{self.name}-status"), 1, STATUS_CONFIG)
        self.group = topics.unique_name(f"{self.name}-group")
        return self

    def service_env(self) -> dict[str, str]:
        return {
            "ZEEK_PIPELINE_KAFKA__TOPIC": self.input,
            "ZEEK_PIPELINE_KAFKA__GROUP_ID": self.group,
            "ZEEK_PIPELINE_OUTPUT__KAFKA__TOPIC": self.output,
            "ZEEK_PIPELINE_OUTPUT__KAFKA__DLQ_TOPIC": self.dlq,
        }

    def publish(self, files: Iterable[Path], *args: str, background: bool = False) -> subprocess.Popen[bytes]:
        command = [str(ZEEK), "publish", "--topic", self.input, "--brokers", self.bootstrap, "--config",
                   str(CONFIG), "--json", *args, *map(str, files)]
        out = (self.workdir / "publish.out").open("ab")
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                   env=self.env("publish"))
        out.close()
        if not background:
            assert process.wait(300) == 0, (self.workdir / "publish.out").read_text()[-3000:]
        self.publishers.append(process)
        return process

    def flow(self, total: int, rate: int) -> subprocess.Popen[bytes]:
        """`total` real Zeek records published at `rate` per second in the background (records keep arriving
        while a test kills, pauses or stops something)."""
        return self.publish(json_logs(), "--rate", str(rate), "--count", str(total), "--repeat", "0",
                            background=True)

    def input_total(self) -> int:
        return sum(topics.end_offsets(self.bootstrap, self.input).values())

    def committed(self) -> dict[int, int]:
        """The group's committed offsets; retried while the group coordinator is still loading (a fresh or
        restarted broker answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS for a moment)."""
        for attempt in range(40):
            try:
                return topics.committed_offsets(self.bootstrap, self.group, self.input)
            except KafkaException:
                if attempt == 39:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def committed_total(self) -> int:
        return sum(max(0, offset) for offset in self.committed().values())

    def wait_all_committed(self, timeout: float = 120.0, alive: Service | None = None) -> None:
        """Until the group's committed offsets reach the input's end offsets on every partition."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = topics.end_offsets(self.bootstrap, self.input)
            committed = self.committed()
            if all(committed.get(p, -1) == end for p, end in ends.items()):
                return
            if alive is not None:
                assert alive.process.poll() is None, f"service exited {alive.process.returncode}\n{alive.tail()}"
            time.sleep(0.5)
        raise AssertionError(f"not all committed after {timeout}s: committed={committed} ends={ends}\n"
                             + "\n".join(s.tail() for s in self.services[-2:]))

    def stop_all(self) -> None:
        super().stop_all()
        for process in self.publishers:
            if process.poll() is None:
                process.kill()
            process.wait(10)


def coordinate(record: topics.Record) -> Coordinate:
    headers = record.headers
    return (headers["source.topic"].decode(), int(headers["source.partition"]), int(headers["source.offset"]))


def read_committed(bootstrap: str, topic: str, expected: int | None = None) -> list[topics.Record]:
    return topics.consume_all(bootstrap, topic, expected=expected, timeout=120)


def input_coordinates(bootstrap: str, topic: str) -> set[Coordinate]:
    """Every offset of the (non-transactional) input topic."""
    return {(topic, partition, offset) for partition, end in topics.end_offsets(bootstrap, topic).items()
            for offset in range(end)}


def coordinate_counts(records: Iterable[topics.Record]) -> Counter[Coordinate]:
    return Counter(coordinate(record) for record in records)


def assert_exactly_once(pipe: Pipeline) -> tuple[list[topics.Record], list[topics.Record]]:
    """Every input record is in the committed output or the dead-letter topic exactly once; nothing else is."""
    wanted = input_coordinates(pipe.bootstrap, pipe.input)
    outputs = read_committed(pipe.bootstrap, pipe.output)
    letters = read_committed(pipe.bootstrap, pipe.dlq)
    counts = coordinate_counts(outputs) + coordinate_counts(letters)
    duplicated = {c: n for c, n in counts.items() if n > 1}
    missing = wanted - set(counts)
    unexpected = set(counts) - wanted
    assert not duplicated, f"{len(duplicated)} inputs twice or more, e.g. {list(duplicated.items())[:5]}"
    assert not missing, f"{len(missing)} inputs missing, e.g. {sorted(missing)[:5]}"
    assert not unexpected, f"{len(unexpected)} outputs of no input, e.g. {sorted(unexpected)[:5]}"
    return outputs, letters


def open_transaction_partitions(bootstrap: str, *names: str) -> list[str]:
    """Partitions whose last stable offset is below the high watermark: a transaction is still open there."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    stuck = []
    for name in names:
        partitions = admin.list_topics(name, timeout=10).topics[name].partitions
        request = {TopicPartition(name, p): OffsetSpec.latest() for p in partitions}
        committed = {tp.partition: f.result().offset for tp, f in admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=10).items()}
        uncommitted = {tp.partition: f.result().offset for tp, f in admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_UNCOMMITTED, request_timeout=10).items()}
        stuck += [f"{name}[{p}] lso={committed[p]} hw={uncommitted[p]}" for p in partitions
                  if committed[p] != uncommitted[p]]
    return stuck


@contextlib.contextmanager
def running(pipe: Pipeline) -> Iterator[Pipeline]:
    """Kill whatever the test left running, even when it fails."""
    try:
        yield pipe
    finally:
        pipe.stop_all()


def wait_logged(service: Service, text: str, timeout: float = 120.0) -> None:
    """Until the service's output contains `text` (e.g. a failpoint it reached); fails if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in service.log.read_text(errors="replace"):
            return
        assert service.process.poll() is None, f"exited {service.process.returncode}\n{service.tail()}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged in {timeout}s\n{service.tail()}")
