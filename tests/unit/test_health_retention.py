"""What the health service keeps of the status channel: trimmed records, bounded count and bytes, dead pods
forgotten, and a memory bound measured with tracemalloc at the default limits."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from tests.unit.test_health_api import NOW, real_record
from zeek_pipeline.health.retention import Retention, accounted_bytes, trim
from zeek_pipeline.health.status_reader import MAX_RECORD_BYTES, StatusStore
from zeek_pipeline.runtime.status import StatusRecord

# Measured at the default Retention (8 MiB of trimmed JSON, 1,000 instances): 67 worst-case records (~122 KiB of
# JSON each, 256 assigned partitions with 249-character topics) hold 24 MiB of Python objects; 1,000 records as
# the services publish them hold 4.5 MiB. The health pod's limit is 256 Mi (the app itself uses ~90 MiB RSS).
STORE_MEMORY_BOUND = 32 * 1024 * 1024


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def put(store: StatusStore, record: dict[str, Any]) -> bool:
    return store.ingest(f"{record['component']}/{record['instance']}".encode(), orjson.dumps(record))


def pod(n: int, heartbeat_at: float = NOW - 5, **changes: Any) -> dict[str, Any]:
    return real_record("parquet-writer", f"w-{n}", heartbeat_at=heartbeat_at, **changes)


def hostile(n: int) -> dict[str, Any]:
    """As large as the trimming lets a record stay: every kept string just over its clip, lists over their caps,
    and still under the reader's 256 KiB limit."""
    record = pod(n, reason="r" * 2000, last_error="e" * 1100)
    record.update({
        "assigned": [{"topic": "t" * 249, "partition": p} for p in range(300)],
        "recent_rejects": [{"at": NOW, "reason": "r" * 210, "detail": "d" * 510, "source": "s" * 310,
                            "junk": "j" * 100}] * 22,
        "recent_files": [{"at": NOW, "path": "p" * 1010, "log_type": "l" * 70, "rows": 1, "bytes": 2,
                          "junk": "j" * 100}] * 22,
        "reject_reasons": {f"{i:03d}" + "k" * 207: i for i in range(40)},
        "totals": {f"{i:03d}" + "k" * 67: i for i in range(40)},
        "extra": {"blob": "b" * 5000},
    })
    return record


def test_a_tombstone_removes_the_instance_and_its_bytes() -> None:
    store = StatusStore("status", clock=Clock())
    assert put(store, pod(0)) and put(store, pod(1))
    assert store.ingest(b"parquet-writer/w-0", None)
    snap = store.snapshot()
    assert set(snap.records) == {"parquet-writer/w-1"}
    assert snap.kept_bytes == snap.records["parquet-writer/w-1"].size > 0


def test_an_instance_silent_longer_than_forget_after_is_forgotten() -> None:
    clock = Clock()
    store = StatusStore("status", clock=clock, retention=Retention(forget_after_seconds=3600))
    assert put(store, pod(0, heartbeat_at=NOW - 10)) and put(store, pod(1, heartbeat_at=NOW - 3000))
    assert store.prune() == 0
    clock.now = NOW + 1000  # w-1 is now 4000 s silent, w-0 1010 s
    assert store.prune() == 1
    snap = store.snapshot()
    assert set(snap.records) == {"parquet-writer/w-0"} and snap.forgotten == 1
    assert snap.kept_bytes == snap.records["parquet-writer/w-0"].size


def test_a_dead_pods_record_replayed_from_the_topic_is_not_kept() -> None:
    store = StatusStore("status", clock=Clock(), retention=Retention(forget_after_seconds=3600))
    assert put(store, pod(0, heartbeat_at=NOW - 7200))
    assert store.snapshot().records == {} and store.snapshot().malformed == 0


def test_a_new_instance_evicts_the_longest_silent_one_instead_of_being_dropped() -> None:
    store = StatusStore("status", clock=Clock(), retention=Retention(max_instances=3))
    for n, age in enumerate((30, 500, 90)):
        assert put(store, pod(n, heartbeat_at=NOW - age))
    assert put(store, pod(3, heartbeat_at=NOW - 1))
    snap = store.snapshot()
    assert set(snap.records) == {"parquet-writer/w-0", "parquet-writer/w-2", "parquet-writer/w-3"}
    assert snap.forgotten == 1


def test_a_record_older_than_every_kept_one_is_refused_when_full() -> None:
    store = StatusStore("status", clock=Clock(), retention=Retention(max_instances=2))
    assert put(store, pod(0, heartbeat_at=NOW - 5)) and put(store, pod(1, heartbeat_at=NOW - 6))
    assert not put(store, pod(2, heartbeat_at=NOW - 600))
    snap = store.snapshot()
    assert set(snap.records) == {"parquet-writer/w-0", "parquet-writer/w-1"}
    assert "status store full" in snap.problems[0].error


def test_records_are_trimmed_to_what_the_page_shows() -> None:
    data = orjson.dumps(hostile(0))
    assert len(data) <= MAX_RECORD_BYTES  # accepted by the reader
    record = trim(StatusRecord.model_validate_json(data))
    assert len(record.assigned) == 256 and len(record.recent_rejects) == 20 and len(record.recent_files) == 20
    assert set(record.recent_files[0]) == {"at", "path", "log_type", "rows", "bytes"}
    assert len(record.recent_rejects[0]["detail"]) == 500 and record.extra == {}
    assert len(record.totals) == 30 and len(record.reject_reasons) == 20
    assert accounted_bytes(record) < min(len(data), 128 * 1024)  # the largest a kept record can be


def test_kept_bytes_never_exceed_the_budget() -> None:
    budget = 1024 * 1024
    store = StatusStore("status", clock=Clock(), retention=Retention(max_bytes=budget))
    for n in range(40):
        put(store, hostile(n) | {"heartbeat_at": NOW - 100 + n})
        snap = store.snapshot()
        assert snap.kept_bytes <= budget
        assert snap.kept_bytes == sum(item.size for item in snap.records.values())
    assert "parquet-writer/w-39" in snap.records and snap.forgotten > 0


def traced_store_bytes(records: list[dict[str, Any]]) -> tuple[int, StatusStore]:
    """Python memory the store holds after ingesting `records` (the raw bytes are freed as they go)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = StatusStore("status", clock=Clock())
        for record in records:
            put(store, record)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, store
    finally:
        tracemalloc.stop()


def test_the_store_at_its_default_limits_stays_under_the_measured_bound() -> None:
    defaults = Retention()
    worst, store = traced_store_bytes([hostile(n) | {"heartbeat_at": NOW - 1000 + n} for n in range(90)])
    snap = store.snapshot()
    assert snap.kept_bytes <= defaults.max_bytes and snap.forgotten > 0  # the byte budget was what bound it
    assert worst < STORE_MEMORY_BOUND, f"{worst / 2**20:.1f} MiB"

    realistic, store = traced_store_bytes([pod(n) for n in range(defaults.max_instances + 200)])
    assert len(store.snapshot().records) == defaults.max_instances
    assert realistic < STORE_MEMORY_BOUND, f"{realistic / 2**20:.1f} MiB"
