"""Helpers for the parquet-writer's integration tests (no tests here): a lake (normalized topic, DLQ, status
topic, group, base path on disk or S3), the writer as a real subprocess, transactional feeding of real
normalized records, and exactly-once checks by (partition, offset) read back with independent readers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import orjson
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from confluent_kafka import KafkaException, Producer

from tests.infra import topics
from tests.infra.kafka import free_port
from tests.infra.service_process import Service, ServiceDeployment
from tests.integration.test_normalizer_support import FAST_GROUP, STATUS_CONFIG

Coordinate = tuple[int, int]  # partition, offset of the normalized record


def produce_transactional(bootstrap: str, topic: str, values: Sequence[bytes], *, batch: int = 5000,
                          pause: float = 0.0, partitions: int | None = None,
                          stop: threading.Event | None = None) -> int:
    """As the normalizer-enricher writes: transactions of `batch` records (control markers leave offset gaps).
    With `partitions`, records go round-robin to the partitions in blocks, so every partition gets some.
    With `stop`, the values are produced once and then over again until it is set (checked between
    transactions).
    Returns how many records were committed."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"feed-{uuid.uuid4().hex[:8]}",
                         "linger.ms": 20, "compression.type": "lz4", "batch.size": 1_000_000})
    producer.init_transactions(30)
    produced = 0
    while True:
        for start in range(0, len(values), batch):
            if stop is not None and stop.is_set() and produced >= len(values):
                return produced
            producer.begin_transaction()
            for index in range(start, min(start + batch, len(values))):
                kwargs: dict[str, Any] = {"value": values[index]}
                if partitions:
                    kwargs["partition"] = ((produced + index - start) // 97) % partitions
                topics.produce_when_room(producer, topic, **kwargs)
            producer.commit_transaction(60)
            produced += min(start + batch, len(values)) - start
            if pause:
                time.sleep(pause)
        if stop is None:
            return produced


@dataclass
class Lake(ServiceDeployment):
    """One writer deployment on the shared broker: its topics, group and output (local dir or s3://);
    `start()` runs a parquet-writer."""

    command: ClassVar[str] = "parquet-writer"
    port_variable: ClassVar[str] = "ZEEK_PIPELINE_WRITER__HTTP_PORT"
    default_instance: ClassVar[str] = "writer-0"

    bootstrap: str
    workdir: Path
    base: str
    partitions: int = 3
    s3_env: dict[str, str] = field(default_factory=dict)
    filesystem: pafs.FileSystem | None = None  # for s3:// bases
    topic: str = ""
    dlq: str = ""
    status: str = ""
    group: str = ""
    services: list[Service] = field(default_factory=list)

    def create(self, topic: str | None = None) -> Lake:
        self.topic = topic or topics.create_topic(self.bootstrap, topics.unique_name("w-norm"), self.partitions)
        self.dlq = topics.create_topic(self.bootstrap, topics.unique_name("w-dlq"), 1)
        self.status = topics.create_topic(self.bootstrap, topics.unique_name("w-status"), 1, STATUS_CONFIG)
        self.group = topics.unique_name("w-group")
        return self

    def service_env(self) -> dict[str, str]:
        return {
            "ZEEK_PIPELINE_KAFKA__LIBRDKAFKA": FAST_GROUP,
            "ZEEK_PIPELINE_WRITER__TOPIC": self.topic,
            "ZEEK_PIPELINE_WRITER__GROUP_ID": self.group,
            "ZEEK_PIPELINE_OUTPUT__KAFKA__DLQ_TOPIC": self.dlq,
            "ZEEK_PIPELINE_OUTPUT__PARQUET__BASE_PATH": self.base,
            **self.s3_env,
        }

    # --- the output, read independently of the writer ---------------------------------------------
    def _fs_and_root(self) -> tuple[pafs.FileSystem, str]:
        if self.base.startswith("s3://"):
            assert self.filesystem is not None
            return self.filesystem, self.base.removeprefix("s3://").rstrip("/")
        return pafs.LocalFileSystem(), self.base

    def all_paths(self) -> list[str]:
        fs, root = self._fs_and_root()
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        return [info.path.removeprefix(root + "/") for info in infos if info.type == pafs.FileType.File]

    def staged_files(self) -> int:
        """Files written but not yet committed or published right now (a flush is in its commit protocol)."""
        fs, root = self._fs_and_root()
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/_zeek_staging", recursive=True, allow_not_found=True))
        return sum(1 for info in infos if info.type == pafs.FileType.File)

    def dataset(self) -> ds.Dataset:
        """What a pyarrow reader discovers (it skips names starting with `_` or `.`); empty before any output."""
        fs, root = self._fs_and_root()
        try:
            return ds.dataset(root, format="parquet", partitioning="hive", filesystem=fs)
        except FileNotFoundError:
            return ds.dataset([], format="parquet")

    def coordinates(self) -> list[Coordinate]:
        """(partition, offset) of every row of every visible file."""
        if not self.base.startswith("s3://"):
            if not any(p.endswith(".parquet") for p in self.all_paths()):
                return []
            return duckdb.sql(f"select _kafka_partition, _kafka_offset from read_parquet('{self.base}/**/*.parquet', "
                              "hive_partitioning=true, union_by_name=true)").fetchall()
        dataset = self.dataset()
        if not dataset.files:
            return []
        table = dataset.to_table(columns=["_kafka_partition", "_kafka_offset"])
        return list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))

    def assert_reader_view_clean(self) -> int:
        """Every file a reader sees is a final, complete Parquet file; returns how many there are."""
        files = self.dataset().files
        root = self._fs_and_root()[1]
        for path in files:
            name = path.removeprefix(root + "/")
            assert name.endswith(".parquet") and not any(part[:1] in "_." for part in name.split("/")), name
        if files:
            self.coordinates()  # reads every visible file whole: a partial file would fail here
        return len(files)

    def commit_record(self, partition: int) -> dict[str, Any] | None:
        fs, root = self._fs_and_root()
        directory = f"{root}/_zeek_commits/{self.topic}/p{partition}"
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        names = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".json"))
        if not names:
            return None
        with fs.open_input_stream(names[-1]) as stream:
            record: dict[str, Any] = orjson.loads(stream.read())
        return record

    def resume_offsets(self) -> dict[int, int]:
        out = {}
        for partition in range(self.partitions):
            record = self.commit_record(partition)
            out[partition] = (record["next_offset"] if record else None) or 0  # None: a takeover, nothing written
        return out

    def wait_written(self, last_offsets: dict[int, int], timeout: float = 120.0,
                     alive: Service | None = None) -> None:
        """Until every partition's commit log resumes after its last data record."""
        deadline = time.monotonic() + timeout
        resume: dict[int, int] = {}
        while time.monotonic() < deadline:
            resume = self.resume_offsets()
            if all(resume.get(p, 0) > last for p, last in last_offsets.items()):
                return
            if alive is not None:
                assert alive.process.poll() is None, f"writer exited {alive.process.returncode}\n{alive.tail()}"
            time.sleep(0.5)
        raise AssertionError(f"not all written after {timeout}s: resume={resume} last={last_offsets}\n"
                             + "\n".join(s.tail() for s in self.services[-2:]))


def last_data_offsets(bootstrap: str, topic: str, expected: int) -> dict[int, int]:
    """The offset of the last committed record of each partition (transaction markers excluded)."""
    records = topics.consume_all(bootstrap, topic, expected=expected, timeout=120)
    assert len(records) == expected, f"{len(records)} records in {topic}, expected {expected}"
    last: dict[int, int] = {}
    for record in records:
        last[record.partition] = max(last.get(record.partition, -1), record.offset)
    return last


def topic_coordinates(bootstrap: str, topic: str, expected: int) -> set[Coordinate]:
    records = topics.consume_all(bootstrap, topic, expected=expected, timeout=120)
    return {(r.partition, r.offset) for r in records}


def assert_exactly_once(lake: Lake, expected: set[Coordinate], dead: set[Coordinate] = frozenset()) -> None:  # type: ignore[assignment]
    counts = Counter(lake.coordinates())
    duplicated = {c: n for c, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} records written twice or more, e.g. {list(duplicated.items())[:5]}"
    missing = expected - dead - set(counts)
    assert not missing, f"{len(missing)} records missing, e.g. {sorted(missing)[:5]}"
    unexpected = set(counts) - expected
    assert not unexpected, f"{len(unexpected)} rows of no input record, e.g. {sorted(unexpected)[:5]}"
    leftovers = [p for p in lake.all_paths() if p.startswith("_zeek_staging/")]
    assert not leftovers, f"staged files left after a clean stop: {leftovers[:5]}"


@contextlib.contextmanager
def running(lake: Lake) -> Iterator[Lake]:
    try:
        yield lake
    finally:
        lake.stop_all()


class OnOffProxy:
    """A TCP forwarder on loopback that can be switched off (connections cut, new ones refused) and on again:
    the network path to a real server goes away while the server itself keeps its data."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.on()

    def on(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def off(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, []
        for sock in [listener, *sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


class Feeder(threading.Thread):
    """Produces in the background so records keep flowing while the test kills writers. With `until_stopped`,
    it produces the values once and then over again until `enough()` or `finish()`, for a test that waits for
    a moment which a slow machine may reach only late; `produced` then says how many records the topic holds."""

    def __init__(self, bootstrap: str, topic: str, values: Sequence[bytes], partitions: int,
                 batch: int = 2000, pause: float = 0.05, until_stopped: bool = False) -> None:
        super().__init__(daemon=True)
        self.args = (bootstrap, topic, values)
        self.stop = threading.Event() if until_stopped else None
        self.kw = {"batch": batch, "pause": pause, "partitions": partitions, "stop": self.stop}
        self.error: BaseException | None = None
        self.produced = 0

    def run(self) -> None:
        try:
            self.produced = produce_transactional(*self.args, **self.kw)  # type: ignore[arg-type]
        except (KafkaException, BufferError, RuntimeError) as exc:
            self.error = exc

    def enough(self) -> None:
        """Stop once the values were produced at least once (an `until_stopped` feeder)."""
        if self.stop is not None:
            self.stop.set()

    def finish(self, timeout: float = 120.0) -> None:
        self.enough()
        self.join(timeout)
        assert not self.is_alive(), "the feeder did not finish"
        assert self.error is None, self.error
