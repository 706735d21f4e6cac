"""Flush conditions (any one triggers, 0 disables) and the memory cap over all buffers."""

from __future__ import annotations

import pytest

from zeek_pipeline.settings import WriteSettings
from zeek_pipeline.writer.buffers import DOCUMENT_HEAP_FACTOR, ENTRY_OVERHEAD, MB, Buffers, FlushPolicy


def policy(size: int = 0, interval: float = 0, count: int = 0, cap: int = 512 * MB) -> FlushPolicy:
    return FlushPolicy(size, interval, count, cap)


def fill(buffers: Buffers, n: int, size: int = 100, log_type: str = "dns", partition: int = 0,
         now: float = 0.0, start: int = 0) -> None:
    for offset in range(start, start + n):
        buffers.add(log_type, partition, offset, b"x" * size, now)


def test_size_condition_alone_triggers_at_the_threshold() -> None:
    buffers = Buffers(policy(size=1000))
    fill(buffers, 9)
    assert buffers.due(now=10_000) == []  # no time condition, no count condition
    fill(buffers, 1, start=9)
    [(segment, reason)] = buffers.due(now=0)
    assert (segment.count, reason) == (10, "size")


def test_count_condition_alone_triggers_at_the_threshold() -> None:
    buffers = Buffers(policy(count=50))
    fill(buffers, 49, size=100_000)
    assert buffers.due(now=10_000) == []
    fill(buffers, 1, start=49)
    assert [(s.count, r) for s, r in buffers.due(now=0)] == [(50, "count")]


def test_time_condition_alone_triggers_on_the_age_of_the_oldest_record() -> None:
    buffers = Buffers(policy(interval=60))
    fill(buffers, 100_000, size=10, now=100.0)
    assert buffers.due(now=159.9) == []
    assert [r for _, r in buffers.due(now=160.0)] == ["time"]


@pytest.mark.parametrize("disabled", ["size", "count", "time"])
def test_zero_disables_a_condition(disabled: str) -> None:
    values = {"size": 1000, "count": 10, "interval": 5.0}
    values["interval" if disabled == "time" else disabled] = 0
    buffers = Buffers(policy(**values))  # type: ignore[arg-type]
    fill(buffers, 9, size=100, now=0.0)  # 900 bytes, 9 records, 4 s old: nothing due yet
    assert buffers.due(now=4.0) == []
    fill(buffers, 1, size=100, now=0.0, start=9)  # now 1000 bytes and 10 records
    reasons = {r for _, r in buffers.due(now=4.0)}
    expected = {"size", "count"} - {disabled}
    assert reasons <= expected and reasons  # the enabled condition fired first
    assert disabled not in {r for _, r in buffers.due(now=4.0)}


def test_settings_map_to_bytes_and_seconds() -> None:
    p = FlushPolicy.from_settings(WriteSettings(flush_buffer_mb=1.5, flush_interval_seconds=0, flush_event_count=7,
                                                max_memory_mb=10))
    assert (p.flush_bytes, p.interval, p.event_count, p.max_memory) == (int(1.5 * MB), 0.0, 7, 10 * MB)


def test_memory_cap_counts_every_buffer_and_names_the_largest() -> None:
    cap = 10_000
    buffers = Buffers(policy(size=10**9, cap=cap))
    fill(buffers, 20, size=100, log_type="dns")  # 20 * (100 + overhead)
    fill(buffers, 40, size=100, log_type="ssl", partition=1)
    fill(buffers, 5, size=100, log_type="weird", partition=2)
    assert buffers.memory == 65 * (DOCUMENT_HEAP_FACTOR * 100 + ENTRY_OVERHEAD)  # documents at their heap cost
    assert buffers.over_cap()
    largest = buffers.largest()
    assert largest is not None and largest.key == ("ssl", 1)
    buffers.take(largest.key)
    assert not buffers.over_cap()
    assert buffers.usage_pct() == pytest.approx(100 * 25 * (DOCUMENT_HEAP_FACTOR * 100 + ENTRY_OVERHEAD) / cap)


def test_due_lists_oldest_buffers_first() -> None:
    buffers = Buffers(policy(interval=1))
    fill(buffers, 1, log_type="b", now=5.0)
    fill(buffers, 1, log_type="a", now=3.0)
    assert [s.log_type for s, _ in buffers.due(now=100)] == ["a", "b"]


def test_partition_views_and_drop() -> None:
    buffers = Buffers(policy(count=1000))
    fill(buffers, 3, log_type="dns", partition=0, start=10)
    fill(buffers, 3, log_type="ssl", partition=0, start=5)
    fill(buffers, 3, log_type="dns", partition=1, start=0)
    assert buffers.min_offset(0) == 5
    oldest = buffers.oldest_of_partition(0)
    assert oldest is not None and oldest.key == ("ssl", 0)
    assert buffers.drop_partition(0) == 6
    assert buffers.min_offset(0) is None and buffers.count == 3


def test_a_count_flush_takes_exactly_n_records_and_leaves_the_rest() -> None:
    buffers = Buffers(policy(count=1000))
    fill(buffers, 3500, size=10, now=7.0)  # one consumed batch overshoots the threshold
    [(segment, reason)] = buffers.due(now=7.0)
    head = buffers.take_due(segment, reason)
    assert (head.count, head.first, head.last) == (1000, 0, 999)
    rest = buffers.segments[("dns", 0)]
    assert (rest.count, rest.first, rest.nbytes, rest.started) == (2500, 1000, 25_000, 7.0)


def test_a_size_flush_takes_the_shortest_run_reaching_the_size() -> None:
    buffers = Buffers(policy(size=1000))
    fill(buffers, 25, size=90)
    [(segment, reason)] = buffers.due(now=0)
    head = buffers.take_due(segment, reason)
    assert (head.count, head.nbytes) == (12, 1080)  # 11 * 90 = 990 < 1000 <= 12 * 90
    assert buffers.segments[("dns", 0)].count == 13


def test_a_time_flush_takes_everything() -> None:
    buffers = Buffers(policy(interval=1, count=1000))
    fill(buffers, 10)
    [(segment, reason)] = buffers.due(now=5)
    assert buffers.take_due(segment, reason).count == 10 and buffers.segments == {}
