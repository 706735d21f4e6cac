"""Typing ahead (writer/chunks.py): records typed a chunk at a time while a buffer fills give the same
rows, in the same order, and the same rejects as typing the whole buffer at flush time, wherever a count
or size cut falls; a typed chunk is accounted at its Arrow size; a chunk the pool never ran is typed at
the flush."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import orjson
import pyarrow as pa
import pytest

from tests.unit.test_writer_support import CONFIG, documents
from zeek_pipeline.writer.buffers import ENTRY_OVERHEAD, MB, Buffers, FlushPolicy, Segment
from zeek_pipeline.writer.chunks import InlineExecutor, TypedChunk, TypedRecords, combine, type_records
from zeek_pipeline.writer.convert import Converter

CONVERTER = Converter.from_config_dir(CONFIG)


def records_with_rejects(n: int) -> list[bytes]:
    """Real dns documents, every 37th made untypable (a count that is text)."""
    values = list(documents("dns", n))
    for index in range(5, n, 37):
        bad = orjson.loads(values[index])
        bad["raw"]["trans_id"] = "not a count"
        values[index] = orjson.dumps(bad)
    return values


def typed_whole(values: list[bytes], offsets: list[int]) -> TypedRecords:
    return type_records(CONVERTER, "dns", 0, values, offsets)


def start(segment: Segment, values: list[bytes], offsets: list[int], nbytes: int) -> TypedChunk:
    return TypedChunk.submit(InlineExecutor(), CONVERTER, segment.log_type, segment.partition, values, offsets,
                             nbytes)


def assert_same(actual: TypedRecords, expected: TypedRecords) -> None:
    assert actual.table.equals(expected.table)
    assert actual.rejects == expected.rejects
    assert actual.rejected == expected.rejected


@pytest.mark.parametrize("seed", range(6))
def test_cuts_anywhere_in_typed_chunks_give_what_typing_at_flush_gives(seed: int) -> None:
    rng = random.Random(seed)
    values = records_with_rejects(600)
    buffers = Buffers(FlushPolicy(0, 0, 0, 512 * MB))
    for offset, value in enumerate(values):
        buffers.add("dns", 0, offset, value, 0.0)
        if rng.random() < 0.02:
            buffers.type_ahead(rng.choice([1, 5_000, 20_000]), start)
    buffers.type_ahead(1, start)  # everything typed ahead but what arrives later
    for offset in range(600, 650):
        buffers.add("dns", 0, offset, documents("dns", 650)[offset], 0.0)
    all_values = values + list(documents("dns", 650)[600:])
    assert len(buffers.segments[("dns", 0)].chunks) >= 2
    taken = 0
    while ("dns", 0) in buffers.segments:
        count = rng.randint(1, 180)
        head = buffers.take(("dns", 0), count)
        assert head.count == min(count, 650 - taken) == len(head.sizes)
        assert head.offsets == list(range(taken, taken + head.count))
        assert head.nbytes == sum(map(len, all_values[taken:taken + head.count]))
        expected = typed_whole(all_values[taken:taken + head.count], head.offsets)
        assert_same(head.typed(CONVERTER), expected)
        taken += head.count
    assert taken == 650


def test_a_size_cut_measures_message_bytes_of_typed_records_too() -> None:
    values = list(documents("dns", 300))
    limit = sum(map(len, values[:100]))
    buffers = Buffers(FlushPolicy(limit, 0, 0, 512 * MB))
    for offset, value in enumerate(values[:150]):
        buffers.add("dns", 0, offset, value, 0.0)
    buffers.type_ahead(1, start)
    [(segment, reason)] = buffers.due(0.0)
    head = buffers.take_due(segment, reason)
    assert (reason, head.count, head.nbytes) == ("size", 100, limit)
    assert_same(head.typed(CONVERTER), typed_whole(values[:100], list(range(100))))


def test_a_typed_chunk_is_held_at_its_arrow_size() -> None:
    values = list(documents("dns", 2000))
    buffers = Buffers(FlushPolicy(0, 0, 0, 512 * MB))
    for offset, value in enumerate(values):
        buffers.add("dns", 0, offset, value, 0.0)
    before = buffers.memory
    buffers.type_ahead(1, start)
    segment = buffers.segments[("dns", 0)]
    [chunk] = segment.chunks
    assert chunk.done and segment.values == []
    table = chunk.result().table
    assert buffers.memory == table.nbytes + 2000 * ENTRY_OVERHEAD
    assert buffers.memory < before  # Arrow columns are smaller than the JSON documents
    assert segment.untyped_nbytes == 0 and segment.nbytes == sum(map(len, values))


def test_a_chunk_the_pool_never_ran_is_typed_when_its_result_is_needed() -> None:
    values = list(documents("dns", 50))
    pool = ThreadPoolExecutor(1)
    gate = threading.Event()
    pool.submit(gate.wait)  # the only worker is busy: the chunk stays queued
    chunk = TypedChunk.submit(pool, CONVERTER, "dns", 0, values, list(range(50)), sum(map(len, values)))
    pool.shutdown(wait=False, cancel_futures=True)  # the engine stopping
    gate.set()
    assert not chunk.done
    assert_same(chunk.result(), typed_whole(values, list(range(50))))


def test_combine_shifts_reject_indexes_to_the_whole_run() -> None:
    values = records_with_rejects(100)
    first = type_records(CONVERTER, "dns", 0, values[:40], list(range(40)))
    second = type_records(CONVERTER, "dns", 0, values[40:], list(range(40, 100)))
    combined = combine([first, second], [40, 60])
    assert_same(combined, typed_whole(values, list(range(100))))
    assert [r.index for r in combined.rejects] == list(range(5, 100, 37))
    assert combined.table.num_rows == 100 - len(combined.rejects)
    assert combined.table.schema.field("_kafka_offset").type == pa.int64()
