"""The journal of one hour of one log type: the lock and the commit point of compaction runs.

    _zeek_compaction/<log_type>/year=YYYY/month=MM/day=DD/hour=HH/<seq>.json         records, seq = 1, 2, ...
    _zeek_compaction/<log_type>/year=YYYY/month=MM/day=DD/hour=HH/<run>-<n>.parquet.tmp   staged outputs

Every record is created only if absent (link(2) on disk, `If-None-Match: *` on S3) and accepted only if no
higher seq exists right after (the writer's commit-log rule: a record created in a gap left by pruning is
deleted again). So the records form one chain, and each is written by a run that read the one before:
- `claim`: a run owns the hour until `lease_until`; the claim also fences every earlier run, whose commit
  would need the seq the claim took (or a lower one, which is never accepted);
- `commit`: the commit point; names the inputs to delete and the staged outputs to publish;
- `done`: the run finished; the hour is free.
Only the newest record matters. A newest `commit` is rolled forward by the next run (publish, delete:
both idempotent); a newest `claim` whose lease expired belongs to a dead (or hopelessly slow) run, and the
next claim fences it before its staged files are deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import orjson

from zeek_pipeline.compaction.lake import JOURNAL_DIR
from zeek_pipeline.writer.layout import hour_dir
from zeek_pipeline.writer.storage import Storage

Kind = Literal["claim", "commit", "done"]
JOURNAL_VERSION = 1


class CorruptJournal(Exception):
    """A journal record cannot be read: the hour is left alone (a person has to look)."""


@dataclass(frozen=True, slots=True)
class Output:
    staged: str
    final: str
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class JournalRecord:
    seq: int
    kind: Kind
    run: str
    at: float = 0.0
    lease_until: float = 0.0  # claim: until when the run owns the hour
    inputs: tuple[str, ...] = ()  # commit: files to delete once the outputs are published
    outputs: tuple[Output, ...] = ()  # commit: staged -> final
    rows: int = 0
    input_bytes: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({
            "version": JOURNAL_VERSION, "seq": self.seq, "kind": self.kind, "run": self.run, "at": self.at,
            "lease_until": self.lease_until, "inputs": list(self.inputs),
            "outputs": [{"staged": o.staged, "final": o.final, "rows": o.rows, "bytes": o.bytes}
                        for o in self.outputs],
            "rows": self.rows, "input_bytes": self.input_bytes,
        }, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> JournalRecord:
        try:
            doc = orjson.loads(data)
            if doc.get("version") != JOURNAL_VERSION or doc["kind"] not in ("claim", "commit", "done"):
                raise ValueError(f"unknown version {doc.get('version')!r} or kind {doc.get('kind')!r}")
            return cls(
                seq=int(doc["seq"]), kind=doc["kind"], run=str(doc["run"]), at=float(doc.get("at", 0.0)),
                lease_until=float(doc.get("lease_until", 0.0)), inputs=tuple(doc.get("inputs", ())),
                outputs=tuple(Output(o["staged"], o["final"], int(o["rows"]), int(o["bytes"]))
                              for o in doc.get("outputs", ())),
                rows=int(doc.get("rows", 0)), input_bytes=int(doc.get("input_bytes", 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptJournal(str(exc)) from exc

    def is_live_claim(self, now: float) -> bool:
        return self.kind == "claim" and self.lease_until > now


def journal_dir(log_type: str, hour: int) -> str:
    return f"{JOURNAL_DIR}/{log_type}/{hour_dir(hour)}"


class HourJournal:
    def __init__(self, storage: Storage, log_type: str, hour: int) -> None:
        self.storage = storage
        self.dir = journal_dir(log_type, hour)

    def _path(self, seq: int) -> str:
        return f"{self.dir}/{seq:012d}.json"

    def seqs(self) -> list[int]:
        return sorted(int(name[:-5]) for name in self.storage.list_names(self.dir)
                      if name.endswith(".json") and name[:-5].isdigit())

    def staged_names(self) -> list[str]:
        return [f"{self.dir}/{name}" for name in self.storage.list_names(self.dir) if name.endswith(".parquet.tmp")]

    def staged_path(self, run: str, index: int) -> str:
        return f"{self.dir}/{run}-{index:04d}.parquet.tmp"

    def latest(self) -> JournalRecord | None:
        for _attempt in range(20):
            seqs = self.seqs()
            if not seqs:
                return None
            data = self.storage.read_bytes(self._path(seqs[-1]))
            if data is None:
                continue  # a gap record deleted between the listing and the read: list again
            try:
                return JournalRecord.from_json(data)
            except CorruptJournal as exc:
                raise CorruptJournal(f"{self._path(seqs[-1])}: {exc}") from exc
        raise CorruptJournal(f"{self.dir}: the journal kept changing while it was read")

    def append(self, record: JournalRecord) -> bool:
        """Create record `seq`; True only if it was absent and is the newest afterwards (else nothing of it
        stays: another run holds the hour, or took it over)."""
        path = self._path(record.seq)
        if not self.storage.put_bytes(path, record.to_json(), exclusive=True):
            return False
        newest = self.seqs()[-1:]
        if newest and newest[0] > record.seq:
            self.storage.delete(path)  # created in a pruned gap: never the newest, never read
            return False
        return True

    def prune(self, below: int) -> None:
        """Delete records older than `below` (the newest one is all a run reads)."""
        for seq in self.seqs():
            if seq < below:
                self.storage.delete(self._path(seq))

    def clean_temp(self) -> None:
        """Temp files of a record write that crashed (local disk: `.<name>.<tag>.tmp`, never a record)."""
        for name in self.storage.list_names(self.dir):
            if name.startswith("."):
                self.storage.delete(f"{self.dir}/{name}")


def now() -> float:
    return time.time()
