"""The steps of a compaction run, hour by hour, and the recovery of a run that died.

One hour (of one log type):
  0. recover: read the newest journal record; a `commit` is rolled forward (publish its outputs, delete
     its inputs); a `claim` with a live lease means another run is at work (skip the hour);
  1. claim: append `claim` (create-if-absent; this fences every earlier run), then delete every staged
     file in the journal folder (no earlier run can commit any more);
  2. list the hour, then read the writers' latest commit records: their files stay out (protect.py);
  3. plan (footers only) and write each output staged, sorted, synced;
  4. commit: append `commit` naming inputs and outputs; not accepted -> another run fenced us: stop;
  5. publish the outputs (rename / S3 copy), then delete the inputs (unlinks / one DeleteObjects);
  6. append `done` and prune the older records.
A crash before 4 leaves inputs untouched and staged garbage that the next claim deletes; a crash after 4
is finished by the next run's step 0. Readers see both the inputs and an output (or, on S3, for the length
of one DeleteObjects) only between the first publish of 5 and the last delete of 5.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zeek_pipeline.compaction.failpoints import Failpoints
from zeek_pipeline.compaction.journal import CorruptJournal, HourJournal, JournalRecord, Output
from zeek_pipeline.compaction.lake import hour_folders, is_published, journal_hours, scan
from zeek_pipeline.compaction.merge import MergeError, merge
from zeek_pipeline.compaction.plan import Bin, plan_bins, read_input
from zeek_pipeline.compaction.protect import pending_finals
from zeek_pipeline.writer.commitlog import CorruptCommitLog
from zeek_pipeline.writer.layout import hour_dir
from zeek_pipeline.writer.parquet_file import ParquetOptions
from zeek_pipeline.writer.storage import Storage, StorageError

log = logging.getLogger("zeek_pipeline.compaction")


@dataclass(frozen=True, slots=True)
class CompactionOptions:
    grace_seconds: float = 3600
    min_quiet_seconds: float = 600
    target_bytes: int = 128 * 1024 * 1024
    slice_bytes: int = 16 * 1024 * 1024
    lease_seconds: float = 900
    file_prefix: str = "events"
    parquet: ParquetOptions = field(default_factory=ParquetOptions)


@dataclass(slots=True)
class Summary:
    """What a run did (printed as one JSON line by `zeek-pipeline compact`)."""

    hours_compacted: int = 0
    hours_recovered: int = 0
    hours_skipped_busy: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def output_name(prefix: str, log_type: str, run: str, index: int) -> str:
    """`<prefix>_<log_type>_compacted-<run>-<nnnn>.parquet`: never a writer's name, whose id ends in
    `-o<12 digits>-<12 digits>`, and unique per run."""
    return f"{prefix}_{log_type}_compacted-{run}-{index:04d}.parquet"


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


class Compactor:
    def __init__(self, storage: Storage, options: CompactionOptions, *, clock: Callable[[], float] = time.time,
                 failpoints: Failpoints | None = None, run_id: str | None = None) -> None:
        self.storage = storage
        self.options = options
        self.clock = clock
        self.failpoints = failpoints or Failpoints()
        self.run = run_id or new_run_id()

    # -- the whole lake ---------------------------------------------------------------------------------

    def run_all(self, log_types: set[str] | None = None, *, dry_run: bool = False) -> Summary:
        """Recover every hour a crashed run left, then compact every closed hour that needs it."""
        summary = Summary()
        entries = scan(self.storage)
        folders = {(h.log_type, h.hour): h for h in hour_folders(entries, log_types)}
        pending = journal_hours(entries, log_types)
        now = self.clock()
        for key in sorted(set(folders) | pending, key=lambda k: (k[1], k[0])):
            folder = folders.get(key)
            due = folder is not None and folder.is_closed(now, self.options.grace_seconds,
                                                          self.options.min_quiet_seconds)
            if not due and key not in pending:
                continue
            wanted = due and folder is not None and folder.may_need_work(self.options.target_bytes)
            try:
                if dry_run:
                    if wanted:
                        self._dry_run_hour(key[0], key[1], summary)
                    continue
                self.compact_hour(key[0], key[1], summary, merge_files=wanted)
            except (StorageError, MergeError, CorruptJournal, CorruptCommitLog) as exc:
                log.error("compaction of %s hour %s failed: %s", key[0], hour_dir(key[1]), exc)
                summary.errors.append(f"{key[0]}/{hour_dir(key[1])}: {exc}")
        return summary

    # -- one hour ---------------------------------------------------------------------------------------

    def compact_hour(self, log_type: str, hour: int, summary: Summary, *, merge_files: bool = True) -> None:
        journal = HourJournal(self.storage, log_type, hour)
        latest = journal.latest()
        if latest is not None and latest.is_live_claim(self.clock()):
            summary.hours_skipped_busy += 1
            return
        if latest is not None and latest.kind == "commit":
            self._roll_forward(latest)
            summary.hours_recovered += 1
        recovered = latest is not None and latest.kind != "done"
        if not merge_files and not recovered:
            return
        base = latest.seq if latest is not None else 0
        claim = JournalRecord(base + 1, "claim", self.run, at=self.clock(),
                              lease_until=self.clock() + self.options.lease_seconds)
        if not journal.append(claim):
            summary.hours_skipped_busy += 1  # another run claimed it first
            return
        self.failpoints.hit("claimed")
        # Fenced: no earlier run can commit now, so their staged outputs and record temp files are garbage.
        self.storage.delete_many(journal.staged_names())
        journal.clean_temp()
        journal.prune(below=claim.seq)

        bins = self._plan(log_type, hour) if merge_files else []
        if not bins:
            self._finish(journal, JournalRecord(claim.seq + 1, "done", self.run, at=self.clock()))
            return
        outputs: list[Output] = []
        for index, plan in enumerate(bins):
            staged = journal.staged_path(self.run, index)
            size = merge(self.storage, plan, staged, self.run, self.options.parquet, self.options.slice_bytes)
            final = f"{log_type}/{hour_dir(hour)}/{output_name(self.options.file_prefix, log_type, self.run, index)}"
            outputs.append(Output(staged, final, plan.rows, size))
            self.failpoints.hit("staged")
        inputs = tuple(f.rel for plan in bins for f in plan.files)
        commit = JournalRecord(claim.seq + 1, "commit", self.run, at=self.clock(), inputs=inputs,
                               outputs=tuple(outputs), rows=sum(p.rows for p in bins),
                               input_bytes=sum(p.bytes for p in bins))
        if not journal.append(commit):
            log.warning("compaction of %s hour %s was taken over by another run; nothing published",
                        log_type, hour_dir(hour))
            self.storage.delete_many(o.staged for o in outputs)
            return
        self.failpoints.hit("committed")
        self._roll_forward(commit)
        self._finish(journal, JournalRecord(commit.seq + 1, "done", self.run, at=self.clock(), rows=commit.rows,
                                            input_bytes=commit.input_bytes))
        summary.hours_compacted += 1
        summary.files_before += len(inputs)
        summary.files_after += len(outputs)
        summary.rows += commit.rows
        summary.bytes_before += commit.input_bytes
        summary.bytes_after += sum(o.bytes for o in outputs)
        log.info("compacted %s hour %s: %d files -> %d, %d rows", log_type, hour_dir(hour), len(inputs),
                 len(outputs), commit.rows)

    def _plan(self, log_type: str, hour: int) -> list[Bin]:
        """List the hour after the claim, then leave out what a writer may still publish again."""
        folder = f"{log_type}/{hour_dir(hour)}"
        listed = [e for e in self.storage.walk(folder) if "/" not in e.rel[len(folder) + 1:]
                  and is_published(e.rel.rsplit("/", 1)[-1])]
        protected = pending_finals(self.storage)  # read after the listing (see protect.py)
        candidates = [e for e in listed if e.rel not in protected]
        return plan_bins([read_input(self.storage, e) for e in candidates], self.options.target_bytes)

    def _roll_forward(self, commit: JournalRecord) -> None:
        """Publish the outputs, then delete the inputs; both steps are idempotent, so a crash anywhere in
        here is finished by running it again."""
        started = time.monotonic()
        for output in commit.outputs:
            self.storage.publish(output.staged, output.final)
            self.failpoints.hit("published")
        self.storage.delete_many(commit.inputs)
        self.failpoints.hit("inputs_deleted")
        # The reader window: from the first output visible to the last input gone (docs/writer-durability.md).
        log.info("swapped %d inputs for %d outputs in %.1f ms", len(commit.inputs), len(commit.outputs),
                 (time.monotonic() - started) * 1000)

    def _finish(self, journal: HourJournal, done: JournalRecord) -> None:
        if journal.append(done):
            self.failpoints.hit("done")
            journal.prune(below=done.seq)

    def _dry_run_hour(self, log_type: str, hour: int, summary: Summary) -> None:
        bins = self._plan(log_type, hour)
        if bins:
            summary.hours_compacted += 1
            summary.files_before += sum(len(b.files) for b in bins)
            summary.files_after += len(bins)
            summary.rows += sum(b.rows for b in bins)
            summary.bytes_before += sum(b.bytes for b in bins)

