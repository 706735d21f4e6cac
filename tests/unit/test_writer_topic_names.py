"""File names carry the topic: two pipelines (two topics) writing into one base path keep each other's
files, and a lake written before the topic was in the names (old names, version 1 commit records) is
recovered and read as before."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from tests.unit.test_writer_recovery import CONVERTER, STREAM
from tests.unit.test_writer_support import RecordingDeadLetters
from zeek_pipeline.writer.buffers import Buffers, FlushPolicy
from zeek_pipeline.writer.commitlog import CommitLog
from zeek_pipeline.writer.engine import WriterEngine
from zeek_pipeline.writer.flush import Flusher
from zeek_pipeline.writer.parquet_file import ParquetOptions
from zeek_pipeline.writer.storage import LocalStorage


def write(base: Path, topic: str, partition: int, start: int, stop: int) -> None:
    """One writer of `topic`: recover, take [start, stop) of one partition, flush everything."""
    storage = LocalStorage(base)
    commitlog = CommitLog(storage, topic, "writer-0")
    flusher = Flusher(storage=storage, commitlog=commitlog, converter=CONVERTER,
                      dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]
                      options=ParquetOptions(), file_prefix="events", topic=topic)
    engine = WriterEngine(Buffers(FlushPolicy(flush_bytes=0, interval=0.5, event_count=50, max_memory=400_000)),
                          commitlog, flusher)
    engine.recover(partition)
    for offset in range(start, stop):
        engine.add(partition, offset, STREAM[partition][offset], 0.0)
    assert engine.drain({partition}, float("inf"), "shutdown", sleep=lambda _s: None) == set()


def lake_rows(base: Path) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every row, read back by DuckDB with the topic from each file's metadata."""
    rows: list[tuple[str, int, int]] = []
    for path in sorted(base.rglob("*.parquet")):
        if any(part.startswith("_") for part in path.relative_to(base).parts):
            continue
        fragment = ds.dataset(path, format="parquet")
        topic = fragment.schema.metadata[b"zeek_pipeline.kafka_topic"].decode()
        assert fragment.schema.field("_kafka_offset").type == pa.int64()
        for partition, offset in duckdb.sql(
                f"select _kafka_partition, _kafka_offset from read_parquet('{path}')").fetchall():
            rows.append((topic, partition, offset))
    return rows


def test_two_topics_writing_into_one_base_path_keep_each_others_files(tmp_path: Path) -> None:
    write(tmp_path, "pipeline-a", 0, 0, 120)
    write(tmp_path, "pipeline-b", 0, 0, 120)  # the same partition and offsets, another topic
    rows = lake_rows(tmp_path)
    good = 120 - 1  # offset 40 of partition 0 is a dead letter
    assert len(rows) == 2 * good and len(set(rows)) == 2 * good
    names = [p.name for p in tmp_path.rglob("*.parquet") if "_zeek" not in str(p)]
    assert all("_pipeline-a_p0-" in n or "_pipeline-b_p0-" in n for n in names), names


def test_a_lake_of_the_old_layout_is_recovered_and_read_as_before(tmp_path: Path) -> None:
    write(tmp_path, "norm", 0, 0, 60)
    # Make it look as the previous version left it: old file names, a version 1 record, one flush still
    # staged (committed, not yet published) under the old staged name.
    commits = tmp_path / "_zeek_commits" / "norm" / "p0"
    latest = sorted(commits.glob("*.json"))[-1]
    for record in commits.glob("*.json"):
        if record != latest:
            record.unlink()
    doc = orjson.loads(latest.read_bytes())
    doc = {key: value for key, value in doc.items() if key not in ("epoch", "owner")} | {"version": 1}
    files = []
    for path in sorted(tmp_path.rglob("events_*.parquet")):
        old = path.with_name(path.name.replace("_norm_p0-", "_p0-"))
        path.rename(old)
        files.append(old)
    staged = tmp_path / "_zeek_staging" / "norm" / "p0" / f"_{doc['seq']:012d}-0000.parquet.tmp"
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(files[-1], staged)
    doc["files"] = [{"staged": str(staged.relative_to(tmp_path)), "final": str(files[-1].relative_to(tmp_path)),
                     "log_type": files[-1].parts[len(tmp_path.parts)], "rows": 1, "bytes": staged.stat().st_size}]
    latest.write_bytes(orjson.dumps(doc))

    write(tmp_path, "norm", 0, 60, 120)  # the new version takes over: rolls the old flush forward, goes on
    rows = lake_rows(tmp_path)
    assert sorted(offset for _t, _p, offset in rows) == [o for o in range(120) if o != 40]
    assert files[-1].exists() and not staged.exists()
    names = [p.name for p in tmp_path.rglob("events_*.parquet")]
    assert any("_p0-o" in n and "_norm_" not in n for n in names)  # old names stay
    assert any("_norm_p0-o" in n for n in names)  # new ones carry the topic
