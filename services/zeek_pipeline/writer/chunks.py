"""Typing ahead: the oldest records of a buffer, converted to Arrow while the buffer is still filling.

Typing the JSON documents is most of the writer's CPU. Done only at flush time, it comes in bursts (and a
shutdown or rebalance has to type everything held, up to `write.max_memory_mb`, before it may commit);
done a chunk at a time as records arrive, it runs on the engine's pool while the main thread consumes, so
the CPU the broker leaves idle is used and a flush only concatenates its typed chunks and encodes them.
A typed chunk is also smaller than its JSON (about 2.5 times for the real mix), so the memory cap holds
more records.

A chunk covers a run of records of one buffer, in order. The typing task drops the documents when it is
done and keeps only the table and the documents it could not type (with their reasons, for the DLQ).
A flush takes whole chunks; a count or size cut that falls inside a chunk splits its typed table (rows
map to records through the rejects, which are in index order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass
from functools import partial
from typing import ParamSpec, TypeVar

import pyarrow as pa

from zeek_pipeline.writer.convert import Converter, Reject

P = ParamSpec("P")
T = TypeVar("T")


class InlineExecutor(Executor):
    """Runs each task at once, in the caller's thread: the engine's inline mode (tests) types ahead too."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future, as a pool would
            future.set_exception(exc)
        return future


@dataclass(frozen=True, slots=True)
class TypedRecords:
    """A run of records typed: the table of the good ones (in order) and the rejects, indexes in the run."""

    table: pa.Table
    rejects: tuple[Reject, ...]
    rejected: dict[int, bytes]  # the documents of `rejects`, by index
    memory: int  # bytes held, computed once (Table.nbytes walks every buffer: too slow for each cap check)

    @classmethod
    def of(cls, table: pa.Table, rejects: tuple[Reject, ...], rejected: dict[int, bytes]) -> TypedRecords:
        return cls(table, rejects, rejected, int(table.nbytes) + sum(map(len, rejected.values())))


def type_records(converter: Converter, log_type: str, partition: int, values: Sequence[bytes],
                 offsets: Sequence[int]) -> TypedRecords:
    converted = converter.convert(log_type, values, [partition] * len(values), offsets)
    return TypedRecords.of(converted.table, converted.rejects,
                           {reject.index: values[reject.index] for reject in converted.rejects})


class TypedChunk:
    """`count` consecutive records of a buffer, typed (or being typed) on a pool."""

    __slots__ = ("count", "nbytes", "_future", "_task", "_typed")

    def __init__(self, count: int, nbytes: int, *, typed: TypedRecords | None = None) -> None:
        self.count = count
        self.nbytes = nbytes  # message bytes of the records (what flush_buffer_mb measures)
        self._typed = typed
        self._future: Future[TypedRecords] | None = None
        self._task: Callable[[], TypedRecords] | None = None  # the typing, until done (it holds the documents)

    @classmethod
    def submit(cls, pool: Executor, converter: Converter, log_type: str, partition: int, values: list[bytes],
               offsets: list[int], nbytes: int) -> TypedChunk:
        chunk = cls(len(values), nbytes)
        chunk._task = partial(type_records, converter, log_type, partition, values, offsets)
        chunk._future = pool.submit(chunk._type)
        return chunk

    def _type(self) -> TypedRecords:
        assert self._task is not None
        self._typed = self._task()
        self._task = None  # typed: the documents are no longer needed
        return self._typed

    @property
    def done(self) -> bool:
        return self._typed is not None

    @property
    def memory(self) -> int:
        typed = self._typed
        return typed.memory if typed is not None else self.nbytes

    def result(self) -> TypedRecords:
        """The typed records, waiting for the pool; typed here if the pool never ran the task (shut down)."""
        if self._typed is not None:
            return self._typed
        assert self._future is not None
        if self._future.cancel():
            return self._type()
        try:
            return self._future.result()
        except CancelledError:
            return self._type()

    def cut(self, count: int, head_nbytes: int) -> tuple[TypedChunk, TypedChunk]:
        """The first `count` records (0 < count < self.count, `head_nbytes` message bytes) and the rest.
        Table rows map to records through the rejects: row r is the r-th record that is not rejected."""
        typed = self.result()
        head_rejects = tuple(r for r in typed.rejects if r.index < count)
        rows = count - len(head_rejects)
        head = TypedRecords.of(typed.table.slice(0, rows), head_rejects,
                            {r.index: typed.rejected[r.index] for r in head_rejects})
        tail_rejects = tuple(Reject(r.index - count, r.reason, r.detail) for r in typed.rejects if r.index >= count)
        tail = TypedRecords.of(typed.table.slice(rows), tail_rejects,
                            {r.index: typed.rejected[r.index + count] for r in tail_rejects})
        return (TypedChunk(count, head_nbytes, typed=head),
                TypedChunk(self.count - count, self.nbytes - head_nbytes, typed=tail))


def combine(parts: Sequence[TypedRecords], counts: Sequence[int]) -> TypedRecords:
    """Runs of records typed separately -> one, reject indexes shifted to the position in the whole."""
    tables = [part.table for part in parts if part.table.num_rows]
    rejects: list[Reject] = []
    rejected: dict[int, bytes] = {}
    base = 0
    for part, count in zip(parts, counts, strict=True):
        for reject in part.rejects:
            rejects.append(Reject(base + reject.index, reject.reason, reject.detail))
            rejected[base + reject.index] = part.rejected[reject.index]
        base += count
    if not tables:
        table = parts[0].table
    elif len(tables) == 1:
        table = tables[0]
    else:
        table = pa.concat_tables(tables)
    return TypedRecords(table, tuple(rejects), rejected, sum(part.memory for part in parts))
