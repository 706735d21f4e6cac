"""Helpers for the parquet-writer's unit tests (no tests here): real normalized documents, local storage
that crashes or fails on demand, a DLQ that records instead of producing."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from tests.infra.zeek_data import PROJECT_ROOT, json_logs, read_lines
from zeek_pipeline.core.transform import Accepted, Transformer
from zeek_pipeline.writer.dlq import Delivery
from zeek_pipeline.writer.storage import LocalStorage, StorageError

CONFIG = PROJECT_ROOT / "config"


@cache
def transformer() -> Transformer:
    return Transformer.from_config_dir(CONFIG)


@cache
def documents(log_type: str, limit: int = 100_000) -> tuple[bytes, ...]:
    """Three-layer documents of one real log type (what the normalizer produces), in file order."""
    out: list[bytes] = []
    for path in json_logs():
        if not path.name.startswith(f"{log_type}."):
            continue
        for line in read_lines(path):
            result = transformer().transform(line, ingest_time_ms=1_700_000_000_000)
            assert isinstance(result, Accepted), result
            out.append(result.value)
            if len(out) >= limit:
                return tuple(out)
    assert out, f"no real {log_type} log"
    return tuple(out)


def interleave(*streams: Iterable[bytes]) -> list[bytes]:
    """Round-robin merge, as a Kafka partition mixes log types."""
    iterators = [iter(s) for s in streams]
    out: list[bytes] = []
    while iterators:
        for it in list(iterators):
            try:
                out.append(next(it))
            except StopIteration:
                iterators.remove(it)
    return out


class Crash(BaseException):
    """A simulated kill -9: not an Exception, so no code path can catch and handle it."""


class FaultyStorage(LocalStorage):
    """Local storage whose n-th mutating operation crashes (or raises StorageError), for recovery tests."""

    MUTATING = ("open_output", "sync", "put_bytes", "delete", "prepare_dir", "publish")

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.operations = 0
        self.crash_at: int | None = None
        self.fail_at: set[int] = set()
        self.log: list[str] = []

    def _step(self, name: str, rel: str) -> None:
        self.operations += 1
        self.log.append(f"{name} {rel}")
        if self.crash_at is not None and self.operations >= self.crash_at:
            raise Crash(f"crash at operation {self.operations}: {name} {rel}")
        if self.operations in self.fail_at:
            raise StorageError(f"injected failure at {name} {rel}", no_space=True)

    def open_output(self, rel: str) -> pa.NativeFile:
        self._step("open_output", rel)
        return super().open_output(rel)

    def sync(self, rel: str) -> None:
        self._step("sync", rel)
        super().sync(rel)

    def put_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> bool:
        self._step("put_bytes", rel)
        return super().put_bytes(rel, data, exclusive=exclusive)

    def delete(self, rel: str) -> None:
        self._step("delete", rel)
        super().delete(rel)

    def prepare_dir(self, rel_dir: str) -> None:
        self._step("prepare_dir", rel_dir)
        super().prepare_dir(rel_dir)

    def publish(self, src: str, dst: str) -> None:
        self._step("publish", dst)
        super().publish(src, dst)


class RecordingDeadLetters:
    """Stands in for the Kafka DLQ producer in unit tests (the integration tests use the real topic)."""

    topic = "dlq"

    def __init__(self) -> None:
        self.in_flight: list[tuple[Delivery, dict[str, Any]]] = []
        self.acknowledged: list[dict[str, Any]] = []
        self.fail = False

    def send(self, value: bytes | None, **fields: Any) -> Delivery:
        delivery = Delivery()
        self.in_flight.append((delivery, {"value": value, **fields}))
        return delivery

    def flush(self, timeout: float = 30.0) -> None:
        for delivery, letter in self.in_flight:
            delivery.ok = not self.fail
            delivery.error = "injected: broker unreachable" if self.fail else None
            if not self.fail:
                self.acknowledged.append(letter)
        self.in_flight.clear()

    def close(self, timeout: float = 10.0) -> None:
        return None
