"""The commit log: records, done ranges, and the roll-forward/roll-back of recovery, case by case."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from zeek_pipeline.writer.commitlog import (
    CommitConflict,
    CommitLog,
    CommitRecord,
    CorruptCommitLog,
    PartitionState,
    StagedFile,
)
from zeek_pipeline.writer.storage import LocalStorage


def staged(log: CommitLog, partition: int, seq: int, index: int, final: str, data: bytes = b"PAR1") -> StagedFile:
    rel = log.staged_path(partition, seq, index)
    log.storage.put_bytes(rel, data)
    return StagedFile(rel, final, "dns", 10, len(data))


@pytest.fixture
def log(tmp_path: Path) -> CommitLog:
    return CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")


def test_record_round_trips_through_json(log: CommitLog) -> None:
    state = PartitionState("zeek-normalized", 4)
    record = log.new_record(state, log_type="dns", first=10, last=99, next_offset=5,
                            files=[StagedFile("s", "f", "dns", 3, 100)], dead_lettered=1)
    assert CommitRecord.from_json(record.to_json()) == record
    assert record.seq == 1 and record.done == {"dns": [(10, 99)]}


def test_done_ranges_are_per_log_type_and_only_above_the_restart_offset() -> None:
    state = PartitionState("t", 0)
    state.done = state.advanced("dns", 10, 20, next_offset=5)
    state.done = state.advanced("ssl", 22, 30, next_offset=5)
    state._reindex()
    assert state.is_done("dns", 10) and state.is_done("dns", 20) and state.is_done("ssl", 25)
    assert not state.is_done("dns", 21) and not state.is_done("ssl", 20) and not state.is_done("weird", 15)
    assert not state.is_done("dns", 9) and not state.is_done("dns", 31)
    # the slow log type is written at last: everything below 31 is done, ranges below it are dropped
    assert state.advanced("weird", 5, 8, next_offset=31) == {}


def test_recovery_without_any_record_rolls_back_every_staged_file(log: CommitLog) -> None:
    staged(log, 0, 1, 0, "dns/x.parquet")
    staged(log, 0, 1, 1, "dns/y.parquet")
    state = log.recover(0)
    assert (state.seq, state.next_offset, state.epoch) == (1, None, 1)  # the takeover record is seq 1
    assert log.storage.list_names(log.staging_dir(0)) == []
    assert not log.storage.exists("dns/x.parquet")


def test_crash_after_commit_before_publish_rolls_forward(log: CommitLog) -> None:
    files = [staged(log, 2, 1, i, f"dns/h={i}/f{i}.parquet", b"data%d" % i) for i in range(3)]
    record = log.new_record(PartitionState("zeek-normalized", 2), log_type="dns", first=0, last=99, next_offset=100,
                            files=files)
    log.commit(record)  # ...and the process dies here
    state = log.recover(2)
    assert (state.seq, state.next_offset) == (2, 100)  # record 1, then the takeover
    assert [log.storage.read_bytes(f"dns/h={i}/f{i}.parquet") for i in range(3)] == [b"data0", b"data1", b"data2"]
    assert log.storage.list_names(log.staging_dir(2)) == []


def test_crash_half_way_through_publishing_finishes_the_rest(log: CommitLog) -> None:
    files = [staged(log, 0, 1, i, f"dns/f{i}.parquet") for i in range(3)]
    record = log.new_record(PartitionState("zeek-normalized", 0), log_type="dns", first=0, last=9, next_offset=10,
                            files=files)
    log.commit(record)
    log.storage.publish(files[0].staged, files[0].final)  # one of three published, then the crash
    log.recover(0)
    assert all(log.storage.exists(f"dns/f{i}.parquet") for i in range(3))


def test_a_staged_file_of_a_newer_uncommitted_flush_is_rolled_back(log: CommitLog) -> None:
    state = PartitionState("zeek-normalized", 0)
    first = log.new_record(state, log_type="dns", first=0, last=9, next_offset=10,
                           files=[staged(log, 0, 1, 0, "dns/a.parquet")])
    log.commit(first)
    log.publish(first)
    state.apply(first)
    staged(log, 0, 2, 0, "dns/b.parquet")  # the next flush staged its file, then the crash
    recovered = log.recover(0)
    assert (recovered.seq, recovered.next_offset) == (2, 10)
    assert log.storage.exists("dns/a.parquet") and not log.storage.exists("dns/b.parquet")
    assert log.storage.list_names(log.staging_dir(0)) == []


def test_recovery_is_idempotent(log: CommitLog) -> None:
    record = log.new_record(PartitionState("zeek-normalized", 0), log_type="dns", first=0, last=9, next_offset=10,
                            files=[staged(log, 0, 1, 0, "dns/a.parquet")])
    log.commit(record)
    assert log.recover(0).next_offset == log.recover(0).next_offset == 10


def test_retrying_the_same_commit_is_fine_but_another_writers_record_conflicts(log: CommitLog) -> None:
    state = PartitionState("zeek-normalized", 0)
    ours = log.new_record(state, log_type="dns", first=0, last=9, next_offset=10, files=[])
    log.commit(ours)
    log.commit(ours)  # e.g. the first write landed but its acknowledgement was lost
    theirs = log.new_record(state, log_type="ssl", first=0, last=5, next_offset=6, files=[])
    with pytest.raises(CommitConflict):
        log.commit(theirs)


def test_prune_keeps_the_latest_records(log: CommitLog) -> None:
    state = PartitionState("zeek-normalized", 0)
    for n in range(6):
        record = log.new_record(state, log_type="dns", first=n * 10, last=n * 10 + 9, next_offset=n * 10 + 10,
                                files=[])
        log.commit(record)
        state.apply(record)
    log.prune(0, keep=2)
    assert log.storage.list_names(log.commits_dir(0)) == ["000000000005.json", "000000000006.json"]
    assert log.recover(0).next_offset == 60


def test_a_corrupt_record_stops_recovery_instead_of_guessing(log: CommitLog) -> None:
    log.storage.put_bytes(f"{log.commits_dir(0)}/000000000001.json", b"{half a rec")
    with pytest.raises(CorruptCommitLog):
        log.recover(0)


def test_commit_log_and_staging_are_hidden_from_readers(log: CommitLog) -> None:
    for path in (log.commits_dir(0), log.staging_dir(0), log.staged_path(0, 1, 0)):
        assert path.split("/")[0].startswith("_")
    assert not log.staged_path(0, 1, 0).endswith(".parquet")


def committed(log: CommitLog, state: PartitionState, first: int, last: int) -> CommitRecord:
    record = log.new_record(state, log_type="dns", first=first, last=last, next_offset=last + 1, files=[])
    log.commit(record)
    state.apply(record)
    return record


def test_a_takeover_fences_the_previous_owner(tmp_path: Path) -> None:
    old = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")
    new = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")  # same name: a restarted pod
    state = old.recover(0)
    committed(old, state, 0, 9)
    pending = old.new_record(state, log_type="dns", first=10, last=19, next_offset=20, files=[])
    taken = new.recover(0)  # the group gave the partition to the other writer
    assert (taken.seq, taken.epoch, taken.next_offset) == (3, 2, 10)
    with pytest.raises(CommitConflict):
        old.commit(pending)  # seq 3 is the takeover record
    latest = new.latest(0)
    assert latest is not None and latest.owner == new.owner != old.owner and latest.files == ()


def test_a_zombie_cannot_commit_into_a_seq_that_pruning_removed(tmp_path: Path) -> None:
    zombie = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")
    state = zombie.recover(0)
    pending = zombie.new_record(state, log_type="dns", first=0, last=9, next_offset=10, files=[])  # then paused
    owner = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-1")
    theirs = owner.recover(0)
    for n in range(20):
        committed(owner, theirs, n * 10, n * 10 + 9)
    owner.prune(0)
    assert not zombie.storage.exists(f"{zombie.commits_dir(0)}/{pending.seq:012d}.json")  # the gap is open
    with pytest.raises(CommitConflict, match="newer"):
        zombie.commit(pending)
    assert not zombie.storage.exists(f"{zombie.commits_dir(0)}/{pending.seq:012d}.json")  # and closed again
    assert zombie.recover(0).next_offset == 200


def test_a_record_taken_over_by_a_successor_is_left_to_the_successor(tmp_path: Path) -> None:
    first = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")
    state = first.recover(0)
    files = [staged(first, 0, 2, 0, "dns/a.parquet", b"A")]
    record = first.new_record(state, log_type="dns", first=0, last=9, next_offset=10, files=files)
    first.commit(record)  # accepted (the newest) ... then paused before publishing
    second = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-1")
    assert second.recover(0).next_offset == 10  # rolled forward, then took over
    assert second.storage.read_bytes("dns/a.parquet") == b"A"
    with pytest.raises(CommitConflict):
        first.commit(record)  # the paused writer's retry: the record is no longer the newest
    assert second.recover(0).next_offset == 10


def test_records_of_the_first_layout_version_are_still_read(log: CommitLog) -> None:
    v1 = {"version": 1, "topic": "zeek-normalized", "partition": 0, "seq": 7, "next_offset": 120,
          "done": {"dns": [[130, 140]]}, "files": [], "flushed": ["dns", 130, 140], "dead_lettered": 0,
          "instance": "writer-0", "committed_at": 1.7e9}
    log.storage.put_bytes(f"{log.commits_dir(0)}/000000000007.json", orjson.dumps(v1))
    state = log.recover(0)
    assert (state.seq, state.next_offset, state.epoch) == (8, 120, 1)
    assert state.is_done("dns", 135) and not state.is_done("dns", 125)


def test_two_writers_with_one_pid_and_one_name_never_share_a_staged_or_temp_name(tmp_path: Path) -> None:
    a = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")
    b = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")  # this process: one PID for both
    assert a.staged_path(0, 5, 0) != b.staged_path(0, 5, 0)
    assert isinstance(a.storage, LocalStorage) and isinstance(b.storage, LocalStorage)
    assert a.storage.tag != b.storage.tag  # the temp name of a record being written


class VanishingOnce(LocalStorage):
    """The newest record disappears once between the listing and the read (a zombie deleting the record it
    created in a pruned gap, seen by a reader that listed at that moment)."""

    def __init__(self, root: Path, vanishing: str) -> None:
        super().__init__(root)
        self.vanishing: str | None = vanishing

    def read_bytes(self, rel: str) -> bytes | None:
        if rel == self.vanishing:
            self.vanishing = None
            self.delete(rel)
            return None
        return super().read_bytes(rel)


def test_latest_lists_again_when_the_newest_record_vanished_between_listing_and_read(tmp_path: Path) -> None:
    writer = CommitLog(LocalStorage(tmp_path), "zeek-normalized", "writer-0")
    state = PartitionState("zeek-normalized", 0)
    committed(writer, state, 0, 9)
    newest = committed(writer, state, 10, 19)
    gap = f"{writer.commits_dir(0)}/{newest.seq + 1:012d}.json"
    LocalStorage(tmp_path).put_bytes(gap, newest.to_json(), exclusive=True)  # a record that will vanish
    reader = CommitLog(VanishingOnce(tmp_path, gap), "zeek-normalized", "writer-1")
    latest = reader.latest(0)
    assert latest is not None and latest.seq == newest.seq  # not None: the log is not empty
