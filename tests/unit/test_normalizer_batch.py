"""Batch bounds (count and time) and its counts (pure); where an abort rewinds is tested in test_normalizer_ledger."""

from __future__ import annotations

from zeek_pipeline.normalizer.batch import IDLE_POLL_SECONDS, Batch, BatchPolicy
from zeek_pipeline.runtime.flows import PREVIEW_BYTES

POLICY = BatchPolicy(max_records=2000, max_seconds=0.5, max_poll_records=1000)


def test_batch_is_due_at_its_record_count() -> None:
    assert not POLICY.due(1999, started=100.0, now=100.1)
    assert POLICY.due(2000, started=100.0, now=100.1)


def test_batch_is_due_after_its_time_even_when_small() -> None:
    assert not POLICY.due(1, started=100.0, now=100.49)
    assert POLICY.due(1, started=100.0, now=100.5)


def test_empty_batch_is_never_due() -> None:
    assert not POLICY.due(0, started=0.0, now=1e9)


def test_poll_never_fetches_past_the_batch_bound() -> None:
    assert POLICY.poll_size(0) == 1000
    assert POLICY.poll_size(1500) == 500
    assert POLICY.poll_size(1999) == 1
    assert POLICY.poll_size(2000) == 1  # consume() needs at least one


def test_poll_waits_idle_when_empty_and_only_until_the_deadline_otherwise() -> None:
    assert POLICY.poll_timeout(0, 0.0, 100.0) == IDLE_POLL_SECONDS
    assert abs(POLICY.poll_timeout(5, started=100.0, now=100.3) - 0.2) < 1e-9
    assert POLICY.poll_timeout(5, started=100.0, now=101.0) == 0.0


def test_clear_drops_counts_and_reject_details() -> None:
    batch = Batch()
    batch.count, batch.accepted, batch.started = 2, 1, 5.0
    batch.reject("invalid_json", "bad", "raw[0]@10")
    batch.types["conn"] += 1
    batch.clear()
    assert not batch and batch.accepted == 0 and not batch.rejects and not batch.reasons
    assert not batch.types and not batch.reject_types


def test_a_reject_keeps_its_log_type_and_only_the_head_of_its_bytes() -> None:
    batch = Batch()
    batch.reject("msg_size_too_large", "too big", "raw[0]@1", "conn", b"x" * 10_000_000)
    batch.reject("invalid_json", "bad", "raw[0]@2", raw=b"{")
    first, second = batch.rejects
    assert first.log_type == "conn" and first.head is not None and len(first.head) == PREVIEW_BYTES + 1
    assert (second.log_type, second.head) == ("", b"{")
    assert batch.reject_types == {"conn": 1, "": 1}


def test_batch_keeps_only_a_few_reject_details_but_counts_all() -> None:
    batch = Batch()
    for offset in range(500):
        batch.reject("invalid_json", "bad", f"raw[0]@{offset}")
    assert len(batch.rejects) == 100
    assert batch.reasons["invalid_json"] == 500
