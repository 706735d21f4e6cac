"""The commit point of the writer: one append-only log of commit records per Kafka partition.

Files live under the base path, in folders readers ignore (leading `_`, no `.parquet` suffix):

    _zeek_staging/<topic>/p<partition>/_<seq>-<n>.<owner>.parquet.tmp   files written, not yet committed
    _zeek_commits/<topic>/p<partition>/<seq>.json                       commit records, seq = 1, 2, 3, ...

A flush of the buffer of one (log type, partition) stages its files, then writes commit record `seq`
(created only if absent: link(2) on disk, a conditional PUT on S3), then publishes the staged files under
their final names, then commits the Kafka offset. A record is self-contained: it holds the partition's
restart offset (`next_offset`: every record below it is in a published file or the DLQ) and, per log
type, the offset ranges above `next_offset` that are already done (flushed log types run ahead of slower
ones), plus the files to publish. Recovery reads the latest record only.

Ownership (zombie fencing). Kafka gives a partition to one writer at a time, but a paused writer (a
zombie) may still run a queued flush after its partition was given away. Two rules keep it out:
- taking a partition over writes a takeover record (no files, `epoch` one higher, the next seq) before
  anything is rolled back, so every seq a previous owner could still write is taken or below the newest;
- a record is accepted only if it is the newest when it exists: right after creating seq S the writer
  lists the log, and if a higher seq is there, S was created in a gap left by pruning (a zombie) or was
  taken over by a successor that already published its files; either way the writer deletes S and
  publishes nothing. The newest seq never goes away (pruning keeps the latest), so a record in a pruned
  gap is never the one recovery reads.
Staged names carry the owner (instance + a random token), so two writers never write the same name, even
with one PID and one instance name. See docs/writer-durability.md.
"""

from __future__ import annotations

import bisect
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson

from zeek_pipeline.writer.storage import Storage, StorageError

log = logging.getLogger("zeek_pipeline.writer.commitlog")

RECORD_VERSION = 2  # 2 added epoch and owner; version 1 records (epoch 0) are still read
READABLE_VERSIONS = (1, 2)
TAKEOVER_ATTEMPTS = 20  # the log kept moving under a takeover this often: give up for now (StorageError)
COMMITS_DIR = "_zeek_commits"
STAGING_DIR = "_zeek_staging"
KEEP_RECORDS = 3  # the latest is enough for recovery; a few more help a human reading the history


class CommitConflict(Exception):
    """Another writer committed this partition's next record, or a newer one: we no longer own the partition."""


class CorruptCommitLog(Exception):
    """A commit record cannot be read: recovery must not guess (a person has to look)."""


@dataclass(frozen=True, slots=True)
class StagedFile:
    staged: str  # relative path under _zeek_staging
    final: str  # relative path of the visible file
    log_type: str
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CommitRecord:
    topic: str
    partition: int
    seq: int
    next_offset: int | None  # None only in a takeover record of a partition never written
    done: dict[str, list[tuple[int, int]]]  # log type -> sorted disjoint [first, last] ranges >= next_offset
    files: tuple[StagedFile, ...]
    flushed: tuple[str, int, int] | None = None  # (log type, first, last) this record commits; None: takeover
    dead_lettered: int = 0
    instance: str = ""
    committed_at: float = 0.0
    epoch: int = 0  # ownership generation: +1 at every takeover
    owner: str = ""  # the writer (instance + random token) that wrote the record

    def to_json(self) -> bytes:
        return orjson.dumps({
            "version": RECORD_VERSION,
            "topic": self.topic,
            "partition": self.partition,
            "seq": self.seq,
            "next_offset": self.next_offset,
            "done": {lt: [list(r) for r in ranges] for lt, ranges in sorted(self.done.items())},
            "files": [{"staged": f.staged, "final": f.final, "log_type": f.log_type, "rows": f.rows,
                       "bytes": f.bytes} for f in self.files],
            "flushed": list(self.flushed) if self.flushed else None,
            "dead_lettered": self.dead_lettered,
            "instance": self.instance,
            "committed_at": self.committed_at,
            "epoch": self.epoch,
            "owner": self.owner,
        }, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> CommitRecord:
        doc = orjson.loads(data)
        if doc.get("version") not in READABLE_VERSIONS:
            raise CorruptCommitLog(f"unknown commit record version {doc.get('version')!r}")
        flushed = doc.get("flushed")
        next_offset = doc["next_offset"]
        return cls(
            topic=doc["topic"],
            partition=int(doc["partition"]),
            seq=int(doc["seq"]),
            next_offset=None if next_offset is None else int(next_offset),
            done={lt: [(int(a), int(b)) for a, b in ranges] for lt, ranges in doc["done"].items()},
            files=tuple(StagedFile(f["staged"], f["final"], f["log_type"], int(f["rows"]), int(f["bytes"]))
                        for f in doc["files"]),
            flushed=(flushed[0], int(flushed[1]), int(flushed[2])) if flushed else None,
            dead_lettered=int(doc.get("dead_lettered", 0)),
            instance=str(doc.get("instance", "")),
            committed_at=float(doc.get("committed_at", 0.0)),
            epoch=int(doc.get("epoch", 0)),
            owner=str(doc.get("owner", "")),
        )


@dataclass(slots=True)
class PartitionState:
    """What the log says about one partition: where to resume, and what above that is already done."""

    topic: str
    partition: int
    seq: int = 0  # the latest committed record (0: none yet)
    next_offset: int | None = None  # None: nothing committed, start from Kafka's committed offset
    done: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    max_done: int = -1  # the highest done offset: records above it need no range lookup
    epoch: int = 0  # the ownership generation this writer holds (from its takeover record)

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        self.max_done = max((ranges[-1][1] for ranges in self.done.values() if ranges), default=-1)

    def is_done(self, log_type: str, offset: int) -> bool:
        """True when a record at `offset` of this log type is already in a committed file (skip on replay)."""
        if offset > self.max_done:
            return False
        ranges = self.done.get(log_type)
        if not ranges:
            return False
        index = bisect.bisect_right(ranges, (offset, 1 << 62)) - 1
        return index >= 0 and ranges[index][0] <= offset <= ranges[index][1]

    def range_count(self) -> int:
        return sum(len(ranges) for ranges in self.done.values())

    def advanced(self, log_type: str, first: int, last: int,
                 next_offset: int | None) -> dict[str, list[tuple[int, int]]]:
        """The done ranges after committing [first, last] of `log_type` with the new restart offset."""
        floor = -1 if next_offset is None else next_offset
        done: dict[str, list[tuple[int, int]]] = {}
        for lt, ranges in self.done.items():
            kept = [r for r in ranges if r[1] >= floor]
            if kept:
                done[lt] = kept
        if last >= floor:
            merged = sorted([*done.get(log_type, []), (first, last)])
            done[log_type] = merged
        return done

    def apply(self, record: CommitRecord) -> None:
        self.seq = record.seq
        self.next_offset = record.next_offset
        self.done = {lt: list(ranges) for lt, ranges in record.done.items()}
        self.epoch = record.epoch
        self._reindex()


def _record_name(seq: int) -> str:
    return f"{seq:012d}.json"


def new_owner(instance: str) -> str:
    """A name no other writer uses: the instance (for people) plus a random token (two pods may share an
    instance name after a restart, and every container's PID may be 1)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", instance)[:40].strip("-") or "writer"
    return f"{name}-{secrets.token_hex(4)}"


class CommitLog:
    """Reads and writes the per-partition commit records and the staging area of one topic."""

    def __init__(self, storage: Storage, topic: str, instance: str = "", owner: str | None = None) -> None:
        self.storage = storage
        self.topic = topic
        self.instance = instance
        self.owner = owner or new_owner(instance)

    def commits_dir(self, partition: int) -> str:
        return f"{COMMITS_DIR}/{self.topic}/p{partition}"

    def staging_dir(self, partition: int) -> str:
        return f"{STAGING_DIR}/{self.topic}/p{partition}"

    def staged_path(self, partition: int, seq: int, index: int) -> str:
        return f"{self.staging_dir(partition)}/_{seq:012d}-{index:04d}.{self.owner}.parquet.tmp"

    def _seqs(self, partition: int) -> list[int]:
        seqs = []
        for name in self.storage.list_names(self.commits_dir(partition)):
            stem = name.removesuffix(".json")
            if name.endswith(".json") and stem.isdigit():
                seqs.append(int(stem))
        return sorted(seqs)

    def read(self, partition: int, seq: int) -> CommitRecord | None:
        data = self.storage.read_bytes(f"{self.commits_dir(partition)}/{_record_name(seq)}")
        if data is None:
            return None
        try:
            return CommitRecord.from_json(data)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptCommitLog(f"{self.commits_dir(partition)}/{_record_name(seq)}: {exc}") from exc

    def latest(self, partition: int) -> CommitRecord | None:
        """The newest record, or None when the log is empty. A record deleted between the listing and the
        read (a zombie's record in a pruned gap) is not the end of the log: list again."""
        for _attempt in range(20):
            seqs = self._seqs(partition)
            if not seqs:
                return None
            record = self.read(partition, seqs[-1])
            if record is not None:
                return record
        raise StorageError(f"{self.commits_dir(partition)}: the commit log kept changing while it was read")

    def recover(self, partition: int,
                roll_forward: Callable[[CommitRecord], None] | None = None) -> PartitionState:
        """Take the partition over: roll the latest record's files forward (and `roll_forward` its later
        steps: the Iceberg commit), write a takeover record (fencing every earlier owner), roll every other
        staged file back, and return where to resume."""
        for _attempt in range(TAKEOVER_ATTEMPTS):
            record = self.latest(partition)
            state = PartitionState(self.topic, partition)
            if record is not None:
                pending = set(self.storage.list_names(self.staging_dir(partition)))
                for staged in record.files:
                    if staged.staged.rsplit("/", 1)[-1] in pending:
                        log.info("rolling forward committed file", extra={"context": {"file": staged.final}})
                        self.storage.publish(staged.staged, staged.final)
                    elif not self.storage.exists(staged.final):
                        # Published, then removed (merged by compaction, deleted by a retention job): the
                        # rows are wherever that put them; there is nothing to roll forward, and refusing
                        # would keep the partition from ever being recovered.
                        log.warning("committed file is gone since it was published; nothing to roll forward",
                                    extra={"context": {"file": staged.final}})
                if roll_forward is not None:
                    roll_forward(record)  # before the takeover: afterwards the record is no longer the latest
                state.apply(record)
            takeover = CommitRecord(
                topic=self.topic, partition=partition, seq=state.seq + 1, next_offset=state.next_offset,
                done=state.done, files=(), instance=self.instance, committed_at=time.time(),
                epoch=(record.epoch if record is not None else 0) + 1, owner=self.owner)
            try:
                self.commit(takeover)
            except CommitConflict:
                continue  # a previous owner committed meanwhile: read again, take over after it
            state.apply(takeover)
            break
        else:
            raise StorageError(f"{self.commits_dir(partition)}: the log kept moving during "
                               f"{TAKEOVER_ATTEMPTS} takeover attempts; retrying later")
        # Fenced now: no earlier owner can commit any more, so every staged file is garbage.
        for name in self.storage.list_names(self.staging_dir(partition)):
            rel = f"{self.staging_dir(partition)}/{name}"
            log.info("rolling back uncommitted staged file", extra={"context": {"file": rel}})
            self.storage.delete(rel)
        for name in self.storage.list_names(self.commits_dir(partition)):
            if name.startswith("."):  # a record's temp file from a crash mid-write (never a record)
                self.storage.delete(f"{self.commits_dir(partition)}/{name}")
        return state

    def commit(self, record: CommitRecord) -> None:
        """Write record `seq` (the commit point), accepted only if it is the newest record of the partition.
        Retrying the same record is fine; a different record under that seq, or any newer record, conflicts."""
        rel = f"{self.commits_dir(record.partition)}/{_record_name(record.seq)}"
        data = record.to_json()
        if not self.storage.put_bytes(rel, data, exclusive=True):
            existing = self.storage.read_bytes(rel)
            if existing != data:
                raise CommitConflict(f"{rel} was written by another writer")
        newest = self._seqs(record.partition)[-1:]
        if newest and newest[0] > record.seq:
            # A gap left by pruning (we are a zombie), or a successor took over after reading this record
            # (and published its files itself). Not ours to publish either way; the record is never read.
            self.storage.delete(rel)
            raise CommitConflict(f"{rel}: seq {newest[0]} is newer; another writer owns the partition")

    def publish(self, record: CommitRecord) -> None:
        for staged in record.files:
            self.storage.publish(staged.staged, staged.final)

    def prune(self, partition: int, keep: int = KEEP_RECORDS) -> None:
        """Delete old records (best effort): only the latest one is needed to recover."""
        try:
            seqs = self._seqs(partition)
            for seq in seqs[:-keep] if keep else seqs:
                self.storage.delete(f"{self.commits_dir(partition)}/{_record_name(seq)}")
        except StorageError as exc:
            log.warning("could not prune old commit records: %s", exc)

    def new_record(
        self,
        state: PartitionState,
        *,
        log_type: str,
        first: int,
        last: int,
        next_offset: int,
        files: Iterable[StagedFile],
        dead_lettered: int = 0,
    ) -> CommitRecord:
        return CommitRecord(
            topic=self.topic,
            partition=state.partition,
            seq=state.seq + 1,
            next_offset=next_offset,
            done=state.advanced(log_type, first, last, next_offset),
            files=tuple(files),
            flushed=(log_type, first, last),
            dead_lettered=dead_lettered,
            instance=self.instance,
            committed_at=time.time(),
            epoch=state.epoch,
            owner=self.owner,
        )
