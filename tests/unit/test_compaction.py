"""Compaction: the plan, the closed-hour rules, the journal, and the runs next to writers and to each other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.infra.service_process import ZEEK, clean_env
from tests.unit.test_compaction_support import (
    EXPECTED,
    LEASE,
    NOW,
    assert_exactly_once,
    compactor,
    copy_lake,
    published,
    rows_seen,
)
from tests.unit.test_writer_recovery import STREAM, TOPIC, engine_on, run_writer
from tests.unit.test_writer_support import CONFIG, RecordingDeadLetters, documents
from zeek_pipeline.compaction.journal import HourJournal, JournalRecord, Output
from zeek_pipeline.compaction.lake import HourFolder, hour_folders
from zeek_pipeline.compaction.merge import merge
from zeek_pipeline.compaction.plan import InputFile, plan_bins, read_input
from zeek_pipeline.compaction.run import output_name
from zeek_pipeline.writer.commitlog import CommitLog
from zeek_pipeline.writer.parquet_file import ParquetOptions
from zeek_pipeline.writer.storage import FileEntry, LocalStorage

MB = 1024 * 1024


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lake") / "base"


def input_file(name: str, mb: float, start: float | None, schema: pa.Schema | None = None) -> InputFile:
    schema = schema or pa.schema([("event_time", pa.timestamp("us", tz="UTC")), ("uid", pa.string())])
    return InputFile(name, int(mb * MB), 10, schema, schema.to_string(), start,
                     None if start is None else start + 60)


# -- plan ------------------------------------------------------------------------------------------------


def test_the_plan_packs_files_in_time_order_up_to_the_target() -> None:
    files = [input_file(f"f{i}", 30, 1000.0 - i * 60) for i in range(7)]  # listed newest first
    bins = plan_bins(files, 100 * MB)
    assert [[f.rel for f in b.files] for b in bins] == [["f6", "f5", "f4"], ["f3", "f2", "f1"]]
    assert all(b.bytes <= 100 * MB for b in bins)  # f0 alone would be an output of one input: left as it is


def test_a_file_at_the_target_stays_and_a_lone_small_file_is_not_rewritten() -> None:
    assert plan_bins([input_file("big", 130, 0.0), input_file("small", 1, 10.0)], 128 * MB) == []
    assert len(plan_bins([input_file("a", 1, 0.0), input_file("b", 1, None)], 128 * MB)[0].files) == 2


def test_files_of_different_schemas_are_kept_apart() -> None:
    wider = pa.schema([("event_time", pa.timestamp("us", tz="UTC")), ("uid", pa.string()), ("geo", pa.string())])
    files = [input_file("a", 1, 0.0), input_file("b", 1, 1.0, wider), input_file("c", 1, 2.0),
             input_file("d", 1, 3.0, wider)]
    assert sorted(sorted(f.rel for f in b.files) for b in plan_bins(files, 128 * MB)) == [["a", "c"], ["b", "d"]]


def test_output_names_never_look_like_a_writer_name() -> None:
    name = output_name("events", "dns", "20261202T120000-ab12cd34", 0)
    assert name == "events_dns_compacted-20261202T120000-ab12cd34-0000.parquet"
    assert not name.removesuffix(".parquet").split("-")[-1].isdigit() or len(name.split("-")[-1]) != 20


# -- closed hours ----------------------------------------------------------------------------------------


def test_an_hour_is_closed_after_its_end_plus_grace_and_quiet_time() -> None:
    hour = 500_000
    end = (hour + 1) * 3600
    folder = HourFolder("dns", hour, "dns/x", (FileEntry("dns/x/a.parquet", 10, end - 10),
                                              FileEntry("dns/x/b.parquet", 10, end + 100)))
    assert not folder.is_closed(end + 3599, grace_seconds=3600, min_quiet_seconds=0)  # grace not over
    assert folder.is_closed(end + 3600, grace_seconds=3600, min_quiet_seconds=0)
    assert not folder.is_closed(end + 3600, grace_seconds=3600, min_quiet_seconds=3600)  # b is 3500 s old
    assert folder.is_closed(end + 3700, grace_seconds=3600, min_quiet_seconds=3600)
    assert folder.may_need_work(1 * MB) and not folder.may_need_work(10)


def test_the_lake_listing_finds_hours_and_ignores_internal_files() -> None:
    entries = [FileEntry(rel, 1, 0.0) for rel in (
        "dns/year=2018/month=03/day=24/hour=17/a.parquet", "dns/year=2018/month=03/day=24/hour=17/.a.tmp",
        "dns/year=2018/month=03/day=24/hour=17/_b.parquet", "_zeek_commits/t/p0/000000000001.json",
        "_zeek_compaction/dns/year=2018/month=03/day=24/hour=17/000000000001.json")]
    folders = hour_folders(entries)
    assert [(f.log_type, f.folder, len(f.files)) for f in folders] == [
        ("dns", "dns/year=2018/month=03/day=24/hour=17", 1)]
    assert folders[0].hour == 1521910800 // 3600


# -- journal ---------------------------------------------------------------------------------------------


def test_a_journal_record_is_created_once_and_never_accepted_in_a_gap(tmp_path: Path) -> None:
    journal = HourJournal(LocalStorage(tmp_path), "dns", 420_000)
    commit = JournalRecord(2, "commit", "run-a", inputs=("dns/x/a.parquet",),
                           outputs=(Output("s.tmp", "dns/x/o.parquet", 5, 100),), rows=5)
    assert JournalRecord.from_json(commit.to_json()) == commit
    assert journal.append(JournalRecord(1, "claim", "run-a", lease_until=10.0))
    assert not journal.append(JournalRecord(1, "claim", "run-b", lease_until=10.0))  # taken
    assert journal.append(JournalRecord(2, "claim", "run-b", lease_until=10.0))
    journal.prune(below=2)
    assert journal.seqs() == [2]
    assert not journal.append(JournalRecord(1, "commit", "run-a"))  # a zombie in the pruned gap
    assert journal.seqs() == [2]
    latest = journal.latest()
    assert latest is not None and latest.run == "run-b" and latest.is_live_claim(9.0)
    assert not latest.is_live_claim(10.0)


# -- next to other runs and to writers -------------------------------------------------------------------


def test_a_second_run_while_the_first_holds_the_hour_skips_it(template: Path, tmp_path: Path) -> None:
    storage = copy_lake(template, tmp_path / "base")
    seen = []

    def second_run() -> None:
        seen.append(compactor(storage, run="second").run_all())

    storage.on_operation[first_op(template, tmp_path / "count", "open_output _zeek_compaction/")] = second_run
    summary = compactor(storage, run="first").run_all()
    assert seen and seen[0].hours_skipped_busy >= 1 and seen[0].errors == []
    assert summary.errors == [] and summary.hours_compacted + seen[0].hours_compacted == 3
    assert_exactly_once(storage.base)
    assert len(published(storage.base)) == 5


def test_a_run_whose_lease_expired_is_fenced_and_publishes_nothing(template: Path, tmp_path: Path) -> None:
    """A run stalls right before its commit (a paused process) past its lease; a second run fences it,
    deletes its staged outputs and compacts the hour; the first one's commit (created in the gap the second
    run's pruning left) is refused when it resumes, and it publishes nothing."""
    storage = copy_lake(template, tmp_path / "base")
    taken_over = []

    def later_run() -> None:
        taken_over.append(compactor(storage, now=NOW + LEASE + 1, run="second").run_all())

    commit = "put_bytes _zeek_compaction/dns/year=2018/month=03/day=24/hour=17/000000000002.json"
    storage.on_operation[first_op(template, tmp_path / "count", commit)] = later_run
    first = compactor(storage, run="first").run_all()
    assert taken_over and taken_over[0].errors == [] and taken_over[0].hours_compacted == 3
    assert first.errors == [] and first.hours_compacted == 0  # refused, and the other hours were done meanwhile
    assert_exactly_once(storage.base)
    assert not [f for f in published(storage.base) if "compacted-first" in f.name]
    assert len(published(storage.base)) == 5


def first_op(template: Path, base: Path, prefix: str) -> int:
    """The number of the first storage operation of a clean run whose log line starts with `prefix`."""
    storage = copy_lake(template, base)
    compactor(storage).run_all()
    return next(i for i, line in enumerate(storage.log, start=1) if line.startswith(prefix))


def write_late(storage: LocalStorage, partition: int, count: int) -> set[tuple[int, int]]:
    """The writer publishes late dns records of a new partition into the (already closed) hour."""
    late = documents("dns", 400 + count)[400:]
    engine = engine_on(storage, RecordingDeadLetters())  # type: ignore[arg-type]
    engine.recover(partition)
    for offset, record in enumerate(late):
        engine.add(partition, offset, record, 0.0)
    engine.drain({partition}, deadline=float("inf"), reason="shutdown", sleep=lambda _s: None)
    engine.collect()
    return {(partition, offset) for offset in range(len(late))}


def test_a_late_file_published_during_a_run_survives_and_the_next_run_merges_it(template: Path,
                                                                                 tmp_path: Path) -> None:
    storage = copy_lake(template, tmp_path / "base")
    late: set[tuple[int, int]] = set()
    while_merging = first_op(template, tmp_path / "count", "open_output _zeek_compaction/")
    storage.on_operation[while_merging] = lambda: late.update(write_late(storage, 2, 30))
    assert compactor(storage).run_all().errors == []
    assert late and set(rows_seen(storage.base)) == EXPECTED | late
    assert max(rows_seen(storage.base).values()) == 1
    CommitLog(storage, TOPIC).recover(2)  # the partition's next owner: its late file is no longer pending
    again = compactor(storage).run_all()
    assert again.errors == [] and again.hours_compacted == 1
    assert set(rows_seen(storage.base)) == EXPECTED | late and max(rows_seen(storage.base).values()) == 1
    dns_hour = [f for f in published(storage.base) if f.relative_to(storage.base).parts[0] == "dns"]
    assert len([f for f in dns_hour if "compacted" in f.name]) == 1  # the late file merged into the output


def test_a_file_the_latest_commit_record_may_publish_again_is_left_out(template: Path, tmp_path: Path) -> None:
    """On S3 a writer that dies between copying a staged file to its final key and deleting the staged one
    leaves both; its recovery copies it again. Compaction must not have merged (and deleted) that file."""
    storage = copy_lake(template, tmp_path / "base")
    log = CommitLog(storage, TOPIC)
    pending = []
    for partition in STREAM:
        record = log.latest(partition)
        assert record is not None and record.files
        for f in record.files:  # put the staged copy back, as the crash between copy and delete leaves it
            (storage.base / f.staged).parent.mkdir(parents=True, exist_ok=True)
            (storage.base / f.staged).write_bytes((storage.base / f.final).read_bytes())
            pending.append(f.final)
    assert compactor(storage).run_all().errors == []
    assert all((storage.base / final).exists() for final in pending)
    for partition in STREAM:
        CommitLog(storage, TOPIC, "writer-2").recover(partition)  # the writer's roll-forward
    assert_exactly_once(storage.base)


def test_a_writer_replaying_after_compaction_writes_nothing_twice(template: Path, tmp_path: Path) -> None:
    storage = copy_lake(template, tmp_path / "base")
    assert compactor(storage).run_all().hours_compacted == 3
    run_writer(storage, RecordingDeadLetters())  # recovers from the commit logs and replays the partitions
    assert_exactly_once(storage.base)
    assert len(published(storage.base)) == 5


def test_a_merge_in_many_time_slices_keeps_every_row_once_sorted_with_untimed_rows_last(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    kind = pa.timestamp("us", tz="UTC")
    times = [[5_000_000, 1_000_000, None, 3_000_000], [2_000_000, None, 4_000_000, 1_000_000, 5_000_000]]
    entries = []
    for index, values in enumerate(times):
        numbers = pa.array([index * 10 + i for i in range(len(values))])
        table = pa.table({"event_time": pa.array(values, kind), "n": numbers})
        pq.write_table(table, tmp_path / f"f{index}.parquet", row_group_size=2)
        entries.append(FileEntry(f"f{index}.parquet", (tmp_path / f"f{index}.parquet").stat().st_size, 0.0))
    plan = plan_bins([read_input(storage, e) for e in entries], MB)[0]
    merge(storage, plan, "out.parquet", "run", ParquetOptions(), slice_bytes=50)
    out = pq.read_table(tmp_path / "out.parquet")
    assert sorted(out.column("n").to_pylist()) == [0, 1, 2, 3, 10, 11, 12, 13, 14]
    values = out.column("event_time").cast(pa.int64()).to_pylist()
    assert values[:7] == sorted(v for v in values if v is not None) and values[7:] == [None, None]
    assert out.schema.field("event_time").type == kind


def test_a_writer_recovers_a_partition_whose_latest_files_were_published_and_then_removed(template: Path,
                                                                                         tmp_path: Path) -> None:
    """Compaction leaves such files alone, but a retention job (or a person) may delete them: the writer's
    roll-forward must go on rather than refuse to recover the partition for ever."""
    storage = copy_lake(template, tmp_path / "base")
    log = CommitLog(storage, TOPIC)
    record = log.latest(0)
    assert record is not None and record.files
    for f in record.files:
        (storage.base / f.final).unlink()
    state = CommitLog(storage, TOPIC, "writer-2").recover(0)
    assert state.next_offset == record.next_offset
    assert not any((storage.base / f.final).exists() for f in record.files)


def test_the_command_dry_run_changes_nothing_and_log_type_limits_the_run(template: Path, tmp_path: Path) -> None:
    storage = copy_lake(template, tmp_path / "base")
    before = sorted(p.name for p in published(storage.base))

    def compact(*extra: str) -> dict[str, object]:
        result = subprocess.run([str(ZEEK), "compact", "--output", str(storage.base), "--config", str(CONFIG),
                                 "--min-quiet-seconds", "0", *extra], capture_output=True, text=True,
                                env=clean_env({"ZEEK_PIPELINE_LOG__PATH": str(tmp_path / "log")}), check=False)
        assert result.returncode == 0, result.stderr
        summary: dict[str, object] = orjson.loads(result.stdout.splitlines()[-1])
        return summary

    dry = compact("--dry-run")
    assert dry["dry_run"] is True and dry["hours_compacted"] == 3 and dry["files_before"] == 24
    assert sorted(p.name for p in published(storage.base)) == before
    ssl_only = compact("--log-type", "ssl")
    assert ssl_only["hours_compacted"] == 1 and ssl_only["files_after"] == 1 and ssl_only["errors"] == []
    rest = compact("--target-mb", "0.05")  # tiny outputs: dns and weird split into several
    assert rest["hours_compacted"] == 2 and int(rest["files_after"]) > 2  # type: ignore[call-overload]
    assert_exactly_once(storage.base)
