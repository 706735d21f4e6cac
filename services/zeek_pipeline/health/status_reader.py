"""Reads the compacted status topic from the beginning and keeps the latest valid record per instance.

A background thread with manual assignment (no group membership, never commits), so every health replica
sees the whole topic and a restart rebuilds the view. Anything that is not a valid StatusRecord (not JSON,
wrong types, too large, a key that does not match the record) is counted and kept as a problem for the page;
it never replaces a good record and never stops the reader.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from zeek_pipeline.health.retention import Retention, accounted_bytes, clip, eviction_order, expired, trim
from zeek_pipeline.runtime.status import StatusRecord

__all__ = ["MAX_RECORD_BYTES", "ProblemEntry", "Received", "StatusReader", "StatusSnapshot", "StatusStore", "clip"]

log = logging.getLogger("zeek_pipeline.health.status")

MAX_RECORD_BYTES = 256 * 1024
MAX_PROBLEMS = 50
METADATA_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class Received:
    record: StatusRecord
    received_at: float
    partition: int | None
    offset: int | None
    size: int = 0  # bytes counted against Retention.max_bytes


@dataclass(frozen=True)
class ProblemEntry:
    at: float
    key: str
    partition: int | None
    offset: int | None
    error: str


@dataclass(frozen=True)
class StatusSnapshot:
    topic: str
    records: Mapping[str, Received]
    problems: list[ProblemEntry]
    records_read: int
    malformed: int
    reachable: bool
    loaded: bool
    error: str | None
    running: bool = True
    kept_bytes: int = 0
    forgotten: int = 0  # instances expired or evicted since start


@dataclass
class _State:
    records: dict[str, Received] = field(default_factory=dict)
    kept_bytes: int = 0
    forgotten: int = 0
    problems: dict[str, ProblemEntry] = field(default_factory=dict)
    records_read: int = 0
    malformed: int = 0
    reachable: bool = True
    loaded: bool = False
    error: str | None = None


def _validation_summary(exc: ValidationError) -> str:
    """Field paths and messages only: never echo the offending input back."""
    parts = []
    for item in exc.errors()[:5]:
        path = ".".join(str(part) for part in item["loc"]) or "(record)"
        parts.append(f"{path}: {item['msg']}")
    more = exc.error_count() - len(parts)
    return "invalid status record: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class StatusStore:
    """The latest record per key plus current problems; thread-safe. `ingest` is the reader's only input.

    What it keeps is bounded by a Retention (count, bytes, age): see health/retention.py for why.
    """

    def __init__(self, topic: str, *, clock: Callable[[], float] = time.time,
                 retention: Retention | None = None, max_problems: int = MAX_PROBLEMS) -> None:
        self.topic = topic
        self._clock = clock
        self._retention = retention or Retention()
        self._max_problems = max_problems
        self._lock = threading.Lock()
        self._state = _State()

    def _remove(self, key: str) -> None:
        """Drop one kept record; the caller holds the lock."""
        item = self._state.records.pop(key, None)
        if item is not None:
            self._state.kept_bytes -= item.size

    def prune(self) -> int:
        """Forget instances that stopped heartbeating longer ago than the retention allows; returns how many."""
        now = self._clock()
        with self._lock:
            old = [k for k, item in self._state.records.items() if expired(item.record, now, self._retention)]
            for key in old:
                self._remove(key)
            self._state.forgotten += len(old)
            return len(old)

    def _make_room(self, key: str, record: StatusRecord, size: int) -> str | None:
        """Evict older instances until `record` fits; the reason it cannot, else None. The caller holds the lock."""
        limits = self._retention
        if size > limits.max_bytes:
            return f"record of {size} bytes (trimmed) exceeds the store's {limits.max_bytes} byte budget"
        current = self._state.records.get(key)
        kept = self._state.kept_bytes - (current.size if current is not None else 0)
        count = len(self._state.records) - (current is not None)
        if count < limits.max_instances and kept + size <= limits.max_bytes:
            return None  # the common case: no need to look at the others
        others = {k: item.record.heartbeat_at for k, item in self._state.records.items() if k != key}
        now = self._clock()
        victims: list[str] = []
        for victim in eviction_order(others, now):
            if len(others) - len(victims) < limits.max_instances and kept + size <= limits.max_bytes:
                break
            if min(others[victim], now) > min(record.heartbeat_at, now):
                break  # never evict an instance that heartbeated after this one
            victims.append(victim)
            kept -= self._state.records[victim].size
        if len(others) - len(victims) >= limits.max_instances or kept + size > limits.max_bytes:
            return (f"status store full ({limits.max_instances} instances, {limits.max_bytes} bytes) "
                    "with instances newer than this one; ignored")
        for victim in victims:
            self._remove(victim)
        self._state.forgotten += len(victims)
        return None

    def ingest(self, key: bytes | None, value: bytes | None, partition: int | None = None,
               offset: int | None = None) -> bool:
        """Apply one message; returns whether it was a valid record (a tombstone counts as valid)."""
        key_text = clip(key.decode("utf-8", errors="replace"), 300) if key is not None else ""
        with self._lock:
            self._state.records_read += 1
        if value is None:  # tombstone: the instance was removed from the channel on purpose (a clean exit)
            with self._lock:
                self._remove(key_text)
                self._state.problems.pop(key_text, None)
            return True
        error = None
        record = None
        if len(value) > MAX_RECORD_BYTES:
            error = f"record of {len(value)} bytes exceeds the {MAX_RECORD_BYTES} byte limit"
        else:
            try:
                data: Any = orjson.loads(value)
                record = StatusRecord.model_validate(data)
            except orjson.JSONDecodeError as exc:
                error = f"not JSON: {clip(str(exc), 200)}"
            except ValidationError as exc:
                error = _validation_summary(exc)
            except (TypeError, ValueError, RecursionError) as exc:
                error = f"unusable record: {clip(type(exc).__name__, 60)}"
        if record is not None and record.key != key_text:
            error = f"message key does not match the record's component/instance ({clip(record.key, 120)})"
            record = None
        size = 0
        if record is not None:
            record = trim(record)
            size = accounted_bytes(record)
            if expired(record, self._clock(), self._retention):  # a dead pod's last word, replayed from the topic
                with self._lock:
                    self._remove(key_text)
                    self._state.problems.pop(key_text, None)
                return True
        with self._lock:
            if record is not None:
                error = self._make_room(key_text, record, size)
                record = None if error else record
            if record is None:
                self._state.malformed += 1
                problems = self._state.problems
                problems.pop(key_text, None)
                problems[key_text] = ProblemEntry(self._clock(), key_text or "(no key)", partition, offset,
                                                  clip(error or "unusable record", 600))
                while len(problems) > self._max_problems:
                    problems.pop(next(iter(problems)))
                return False
            self._remove(key_text)
            self._state.records[key_text] = Received(record, self._clock(), partition, offset, size)
            self._state.kept_bytes += size
            self._state.problems.pop(key_text, None)
            return True

    def set_reachable(self, reachable: bool, error: str | None = None) -> None:
        with self._lock:
            self._state.reachable = reachable
            self._state.error = None if reachable else clip(error or "unreachable", 300)

    def set_error(self, error: str | None) -> None:
        with self._lock:
            self._state.error = clip(error, 300) if error else None

    def set_loaded(self) -> None:
        with self._lock:
            self._state.loaded = True

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            state = self._state
            return StatusSnapshot(
                topic=self.topic, records=dict(state.records), problems=list(reversed(state.problems.values())),
                records_read=state.records_read, malformed=state.malformed, reachable=state.reachable,
                loaded=state.loaded, error=state.error, kept_bytes=state.kept_bytes, forgotten=state.forgotten)


class StatusReader:
    """The status source the app uses: a StatusStore fed by a consumer thread."""

    def __init__(self, consumer_conf: Mapping[str, Any], topic: str, *, clock: Callable[[], float] = time.time,
                 retention: Retention | None = None) -> None:
        self.topic = topic
        self.store = StatusStore(topic, clock=clock, retention=retention)
        conf = {k: v for k, v in consumer_conf.items() if k not in ("group.instance.id", "transactional.id")}
        conf.update({
            "group.id": f"zeek-health-{uuid.uuid4().hex[:12]}",  # never joins: manual assignment, no commits
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": False,
            "allow.auto.create.topics": False,  # the health service never creates the status topic
            "error_cb": self._on_error,
        })
        self._conf = conf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-reader", daemon=True)

    # --- the source protocol ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def snapshot(self) -> StatusSnapshot:
        snap = self.store.snapshot()
        if not self._thread.is_alive() and not self._stop.is_set():
            return replace(snap, running=False)
        return snap

    # --- the thread ---------------------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):  # noqa: SLF001
            self.store.set_reachable(False, err.str())
        else:
            log.warning("status reader: %s", err.str())

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        """The topic's partitions, or None when the broker cannot be reached; [] when the topic is missing."""
        try:
            metadata = consumer.list_topics(self.topic, timeout=3)
        except KafkaException as exc:
            self.store.set_reachable(False, str(exc.args[0].str() if exc.args else exc))
            return None
        self.store.set_reachable(True)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            self.store.set_error(f"status topic {self.topic} does not exist yet")
            return []
        self.store.set_error(None)
        return sorted(topic.partitions)

    def _run(self) -> None:
        try:
            consumer = Consumer(self._conf)
        except KafkaException as exc:
            self.store.set_reachable(False, f"cannot create the status consumer: {exc}")
            return
        assigned: list[int] = []
        targets: dict[int, int] = {}  # partition -> end offset to reach before the view counts as loaded
        next_metadata = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_metadata:
                    next_metadata = now + METADATA_EVERY_SECONDS
                    self.store.prune()
                    partitions = self._partitions(consumer)
                    if partitions is not None:
                        new = [p for p in partitions if p not in assigned]
                        if new:
                            for p in new:
                                _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                                            timeout=3, cached=False)
                                if high > 0:
                                    targets[p] = high
                            consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new])
                            assigned.extend(new)
                        if not targets:
                            self.store.set_loaded()
                    elif not targets:
                        self.store.set_loaded()  # nothing can be loaded while Kafka is down: show what we have
                if not assigned:
                    self._stop.wait(0.5)
                    continue
                messages = consumer.consume(num_messages=500, timeout=0.5)
                for message in messages:
                    self._handle(message, targets)
                if not messages and targets:
                    self._check_caught_up(consumer, targets)
        except Exception:  # noqa: BLE001 - the reader must report, not die silently
            log.exception("status reader stopped")
            self.store.set_reachable(False, "status reader failed; see the health service log")
        finally:
            consumer.close()

    def _check_caught_up(self, consumer: Consumer, targets: dict[int, int]) -> None:
        """Compaction can remove the offsets just below the end; the position tells the truth."""
        for tp in consumer.position([TopicPartition(self.topic, p) for p in targets]):
            if tp.offset >= targets.get(tp.partition, 0):
                targets.pop(tp.partition, None)
        if not targets:
            self.store.set_loaded()

    def _handle(self, message: Message, targets: dict[int, int]) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001
                self.store.set_error(error.str())
            return
        self.store.set_reachable(True)
        partition, offset = message.partition(), message.offset()
        self.store.ingest(message.key(), message.value(), partition, offset)
        if partition is not None and offset is not None and partition in targets and offset + 1 >= targets[partition]:
            del targets[partition]
            if not targets:
                self.store.set_loaded()
