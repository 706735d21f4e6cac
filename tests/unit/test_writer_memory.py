"""What the writer's memory cap counts beyond the buffers' own figure: the documents waiting to be typed, and
the allocators the service sets up (writer/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

from tests.unit.test_writer_support import CONFIG, RecordingDeadLetters, documents
from zeek_pipeline.writer.buffers import Buffers, FlushPolicy, Segment
from zeek_pipeline.writer.chunks import TypedChunk, type_records
from zeek_pipeline.writer.commitlog import CommitLog
from zeek_pipeline.writer.convert import Converter
from zeek_pipeline.writer.engine import WriterEngine
from zeek_pipeline.writer.flush import Flusher
from zeek_pipeline.writer.parquet_file import ParquetOptions
from zeek_pipeline.writer.storage import LocalStorage

CONVERTER = Converter.from_config_dir(CONFIG)


def engine_on(tmp_path: Path, max_memory: int) -> WriterEngine:
    storage = LocalStorage(str(tmp_path))
    commitlog = CommitLog(storage, "norm", "test")
    flusher = Flusher(storage=storage, commitlog=commitlog, converter=CONVERTER, dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]
                      options=ParquetOptions(), file_prefix="events", topic="norm")
    policy = FlushPolicy(flush_bytes=0, interval=0, event_count=1_000_000, max_memory=max_memory)
    engine = WriterEngine(Buffers(policy), commitlog, flusher, type_ahead_bytes=64 * 1024)
    engine.recover(0)
    return engine


def test_documents_wait_until_their_chunk_is_typed() -> None:
    docs = list(documents("dns", 40))
    segment = Segment("dns", 0, 0.0, values=docs[20:], offsets=list(range(40)), nbytes=sum(map(len, docs)))
    pending: Future[object] = Future()
    chunk = TypedChunk(20, sum(map(len, docs[:20])))
    chunk._future = pending  # type: ignore[assignment]  # submitted, the pool has not run it yet
    segment.chunks.append(chunk)
    assert segment.waiting_nbytes == segment.nbytes
    segment.chunks[0] = TypedChunk(20, chunk.nbytes, typed=type_records(CONVERTER, "dns", 0, docs[:20], range(20)))
    assert segment.waiting_nbytes == sum(map(len, docs[20:]))


def test_consumption_waits_while_a_quarter_of_the_cap_waits_untyped(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, max_memory=2 * 1024 * 1024)
    docs = documents("dns", 5000)
    added = 0
    for offset, doc in enumerate(docs):
        engine.add(0, offset, doc, now=0.0)
        added += len(doc)
        if added > 600 * 1024:
            break
    assert engine.memory() < engine.buffers.policy.max_memory  # under the cap by the buffers' count ...
    assert engine.waiting_memory() > engine.waiting_limit()
    assert engine.over_cap()  # ... but too many documents wait untyped
    engine.flush_due(now=0.0)  # hands them to the typing (inline here: typed at once)
    assert engine.waiting_memory() == 0
    assert not engine.over_cap()
    assert engine.buffers.count == offset + 1  # nothing flushed: typed, still buffered


def allocator_after_set_up(**env: str) -> str:
    code = ("import pyarrow as pa\n"
            "from zeek_pipeline.writer.memory import configure_allocators, Releaser\n"
            "configure_allocators()\n"
            "pa.array(range(100_000))\n"
            "Releaser()(force=True)\n"
            "print(pa.default_memory_pool().backend_name)\n")
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**clean, **env})
    return out.stdout.strip()


def test_the_allocator_set_up_gives_arrow_jemalloc_and_the_release_runs_in_a_fresh_process() -> None:
    assert allocator_after_set_up() == "jemalloc"  # ~110 MB less RSS than mimalloc at the same speed


def test_a_pool_the_user_names_is_kept() -> None:
    assert allocator_after_set_up(ARROW_DEFAULT_MEMORY_POOL="system") == "system"


def test_many_small_buffers_under_a_small_cap_are_typed_instead_of_waiting_for_their_time_flush(
        tmp_path: Path) -> None:
    engine = engine_on(tmp_path, max_memory=128 * 1024)  # waiting limit 32 KB
    types = ["dns", "ssl", "weird", "x509", "rdp", "ssh"]
    for offset in range(60):
        log_type = types[offset % len(types)]
        engine.add(0, offset, documents(log_type, 10)[offset // len(types)], now=0.0)
    assert all(s.untyped_nbytes < 64 * 1024 for s in engine.buffers.segments.values())  # each under 64 KB
    assert engine.over_cap()
    engine.flush_due(now=0.0)
    assert engine.waiting_memory() == 0 and not engine.over_cap()
