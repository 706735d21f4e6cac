"""A zombie writer on the real service: frozen with SIGSTOP right after it staged a file, or right after it
wrote a commit record; the group gives its partitions to a second writer, which commits past the pruning
point; then the first is resumed (SIGCONT) with its queued flushes. Every record must be in the lake exactly
once, on local disk and on the S3 server. Also with both writers in their own PID namespace (PID 1 each)
and one instance name: no staged or temp name is shared."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from tests.infra import s3_fixtures
from tests.infra.s3 import S3Server
from tests.infra.service_process import CONFIG, ZEEK, Service
from tests.integration.test_writer_faults import BUSY, real_stream, s3_lake
from tests.integration.test_writer_support import (
    Feeder,
    Lake,
    assert_exactly_once,
    last_data_offsets,
    running,
    topic_coordinates,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

s3_server = s3_fixtures.s3_server

TOTAL = 60_000
# The zombie's flusher is behind (a memory cap far below its backlog), so its main thread waits for room
# instead of polling Kafka: after SIGCONT its queued flushes run before the group's verdict (partitions
# lost) is served, the order in which a zombie really commits. With room to spare, the verdict often comes
# first and cancels the flushes, and the test would prove nothing.
ZOMBIE = {**BUSY, "ZEEK_PIPELINE_WRITE__MAX_MEMORY_MB": "1"}


@dataclass
class Protocol:
    """What the commit protocol of each partition looks like on storage at one moment."""

    staged: dict[int, set[str]]  # partition -> staged file names
    latest: dict[int, tuple[int, set[str]]]  # partition -> (latest seq, staged names its files had)


def seq_of(staged_name: str) -> int:
    return int(staged_name[1:13])  # `_<seq:012d>-<index>.<owner>.parquet.tmp`


def records(lake: Lake, partition: int) -> list[str]:
    fs, root = lake._fs_and_root()  # noqa: SLF001 - the test reads the lake as an outsider
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/_zeek_commits/{lake.topic}/p{partition}",
                                               allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".json")
                  and not i.base_name.startswith("."))


def read_record(lake: Lake, path: str) -> dict[str, object] | None:
    fs, _root = lake._fs_and_root()  # noqa: SLF001
    try:
        with fs.open_input_stream(path) as stream:
            doc: dict[str, object] = orjson.loads(stream.read())
            return doc
    except (FileNotFoundError, OSError):
        return None  # pruned between the listing and the read


def look(lake: Lake) -> Protocol:
    fs, root = lake._fs_and_root()  # noqa: SLF001
    staged: dict[int, set[str]] = {}
    latest: dict[int, tuple[int, set[str]]] = {}
    for partition in range(lake.partitions):
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/_zeek_staging/{lake.topic}/p{partition}",
                                                   allow_not_found=True))
        staged[partition] = {i.base_name for i in infos if i.type == pafs.FileType.File}
        names = records(lake, partition)
        doc = read_record(lake, names[-1]) if names else None
        if doc is not None:
            files = {str(f["staged"]).rsplit("/", 1)[-1] for f in doc["files"]}  # type: ignore[attr-defined]
            latest[partition] = (int(doc["seq"]), files)  # type: ignore[call-overload]
    return Protocol(staged, latest)


def complete(lake: Lake, partition: int, name: str) -> bool:
    """The staged file is whole (a Parquet file ends with its magic; an S3 object is visible only whole)."""
    fs, root = lake._fs_and_root()  # noqa: SLF001
    try:
        with fs.open_input_file(f"{root}/_zeek_staging/{lake.topic}/p{partition}/{name}") as f:
            size = f.size()
            return size > 8 and f.read_at(4, size - 4) == b"PAR1"
    except (FileNotFoundError, OSError):
        return False


def just_staged(lake: Lake) -> Callable[[Protocol], int | None]:
    def point(view: Protocol) -> int | None:
        """A partition with a whole staged file of a flush not yet committed (its seq above the latest record's)."""
        for partition, names in view.staged.items():
            seq = view.latest.get(partition, (0, set()))[0]
            if any(seq_of(name) > seq and complete(lake, partition, name) for name in names):
                return partition
        return None
    return point


def just_committed(_lake: Lake) -> Callable[[Protocol], int | None]:
    return committed_not_published


def committed_not_published(view: Protocol) -> int | None:
    """A partition whose latest commit record lists files still in staging (committed, not yet published)."""
    for partition, (_seq, files) in view.latest.items():
        if files & view.staged.get(partition, set()):
            return partition
    return None


def writer_pid(service: Service) -> int:
    """The writer's own process: the child of `unshare --fork` when it runs in its own PID namespace."""
    pid = service.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if Path(f"/proc/{pid}/exe").resolve().name == "unshare":
        while not children.read_text().split():
            time.sleep(0.01)
        return int(children.read_text().split()[0])
    return pid


def terminate(service: Service) -> int:
    """SIGTERM to the writer itself (`unshare` does not pass it on); its exit status comes back through unshare."""
    os.kill(writer_pid(service), signal.SIGTERM)
    return service.process.wait(40)


def freeze(service: Service, lake: Lake, point: Callable[[Protocol], int | None],
           timeout: float = 300) -> tuple[int, Protocol]:
    """SIGSTOP the writer at the point; checked again once it is stopped (retried until it holds). The feeder
    keeps records coming meanwhile: on a starved machine, looking at S3 can miss many short windows."""
    pid = writer_pid(service)
    deadline = time.monotonic() + timeout
    while True:
        assert service.process.poll() is None, service.tail()
        assert time.monotonic() < deadline, f"the writer never stood at the point in {timeout:.0f} s\n{service.tail()}"
        if point(look(lake)) is None:
            time.sleep(0.001)
            continue
        os.kill(pid, signal.SIGSTOP)
        view = look(lake)
        partition = point(view)
        if partition is not None:
            return partition, view
        os.kill(pid, signal.SIGCONT)


def start_in_own_pid_namespace(lake: Lake, instance: str, **overrides: str) -> Service:
    """As Lake.start, but the writer runs as PID 1 of a new PID namespace (as in every container)."""
    env = lake.env(instance, **overrides)
    log = lake.workdir / f"{instance}.{len(lake.services)}.out"
    with log.open("wb") as out:
        process = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", str(ZEEK), lake.command,
                                    "--config", str(CONFIG)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=lake.workdir)
    service = Service(process, log, int(env[lake.port_variable]))
    lake.services.append(service)
    return service


def resumed_and_settled(zombie: Service) -> None:
    """Until the resumed writer has run its queued flushes and heard from the group that it lost its partitions."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert zombie.process.poll() is None, zombie.tail()
        text = zombie.log.read_text(errors="replace")
        try:
            pending = zombie.status()["extra"]["pending_flushes"]  # type: ignore[index]
        except OSError:
            pending = None
        if "partitions lost" in text and pending == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"the resumed writer did not settle\n{zombie.tail()}")


def assert_typed(lake: Lake) -> None:
    """Read back with pyarrow.dataset: lineage and time columns have the layout's types."""
    for fragment in list(lake.dataset().get_fragments())[:20]:
        schema = fragment.physical_schema
        assert schema.field("_kafka_offset").type == pa.int64()
        assert schema.field("_kafka_partition").type == pa.int32()
        assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")


Point = Callable[[Lake], Callable[[Protocol], int | None]]


def run_zombie(lake: Lake, at: Point, own_pid_namespace: bool = False) -> None:
    def start(name: str, settings: dict[str, str]) -> Service:
        if own_pid_namespace:
            return start_in_own_pid_namespace(lake, "writer-0", **settings)  # one name, PID 1 in both
        return lake.start(name, **settings)

    with running(lake):
        feeder = Feeder(lake.bootstrap, lake.topic, real_stream(TOTAL), lake.partitions, batch=1000, pause=0.4,
                        until_stopped=True)
        feeder.start()
        zombie = start("writer-a", ZOMBIE)
        zombie.wait_assigned(lake.partitions)
        partition, frozen = freeze(zombie, lake, at(lake))
        target = frozen.latest.get(partition, (0, set()))[0] + 1  # the seq its next commit will use

        successor = start("writer-b", BUSY)  # the group hands every partition over once the zombie's session expires
        successor.wait_assigned(lake.partitions, timeout=90)
        seen: set[str] = set()  # every staged name the successor's commit records of that partition listed
        deadline = time.monotonic() + 150
        while True:
            assert time.monotonic() < deadline, f"no commit past the pruning point\n{successor.tail()}"
            assert successor.process.poll() is None, successor.tail()
            for path in records(lake, partition):
                doc = read_record(lake, path)
                if doc is not None and int(doc["seq"]) >= target:  # type: ignore[call-overload]
                    seen |= {str(f["staged"]).rsplit("/", 1)[-1] for f in doc["files"]}  # type: ignore[attr-defined]
            names = [Path(p).name for p in records(lake, partition)]
            if f"{target:012d}.json" not in names and names and int(names[-1][:12]) > target + 3:
                break  # the seq the zombie will commit next existed and was pruned again
            time.sleep(0.05)
        feeder.enough()  # only now: the successor needs records to commit until it has pruned past the point
        if own_pid_namespace:
            status = Path(f"/proc/{writer_pid(successor)}/status").read_text().splitlines()
            nspid = next(line for line in status if line.startswith("NSpid:")).split()[1:]
            assert nspid[-1] == "1", nspid  # both writers are PID 1 in their namespaces
            zombie_names = frozen.staged[partition]
            assert zombie_names and not zombie_names & seen, f"staged names shared: {zombie_names & seen}"

        os.kill(writer_pid(zombie), signal.SIGCONT)
        resumed_and_settled(zombie)
        feeder.finish()
        total = feeder.produced
        last = last_data_offsets(lake.bootstrap, lake.topic, total)
        lake.wait_written(last, timeout=150, alive=successor)
        assert terminate(successor) == 0, successor.tail()
        assert terminate(zombie) == 0, zombie.tail()
    assert_exactly_once(lake, topic_coordinates(lake.bootstrap, lake.topic, total))
    assert lake.assert_reader_view_clean() > 0
    assert_typed(lake)


@pytest.mark.parametrize("point", [just_staged, just_committed])
def test_a_resumed_zombie_writes_nothing_twice_on_disk(kafka_bootstrap: str, tmp_path: Path, point: Point) -> None:
    run_zombie(Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake")).create(), point)


@pytest.mark.s3
@pytest.mark.parametrize("point", [just_staged, just_committed])
def test_a_resumed_zombie_writes_nothing_twice_on_s3(kafka_bootstrap: str, tmp_path: Path, s3_server: S3Server,
                                                      point: Point) -> None:
    run_zombie(s3_lake(kafka_bootstrap, tmp_path, s3_server), point)


def test_two_writers_with_pid_1_and_one_name_share_no_file_name(kafka_bootstrap: str, tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a PID namespace here: {probe.stderr.strip()}")
    run_zombie(Lake(kafka_bootstrap, tmp_path, str(tmp_path / "lake")).create(), just_staged,
               own_pid_namespace=True)
