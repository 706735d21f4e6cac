"""In-memory buffers of consumed messages, one per (log type, Kafka partition), and when to flush them.

A buffer keeps the raw message bytes and offsets in arrival (= offset) order; its oldest records are
typed to Arrow a chunk at a time while it fills (writer/chunks.py, on the engine's pool), the rest at
flush time, always vectorised. Keying by partition as well as log type makes every flush cover one
contiguous run of one partition's records of one log type, which is what the commit log records (and
what lets a restart skip exactly the records already written). The event hour is not part of the key:
it is computed from the typed `event_time` column at flush time and each hour gets its own file.

Flush conditions (the seed's, any one triggers, 0 disables): buffer size `write.flush_buffer_mb`, age of
the oldest record `write.flush_interval_seconds`, record count `write.flush_event_count`. On top, a cap
over all buffers, `write.max_memory_mb`: when the total goes over, the largest buffers flush first.
The engine also bounds the documents waiting to be typed (`waiting`), see writer/memory.py.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from zeek_pipeline.settings import WriteSettings
from zeek_pipeline.writer.chunks import TypedChunk, TypedRecords, combine, type_records
from zeek_pipeline.writer.convert import Converter

MB = 1024 * 1024
# Python's cost of one buffered message beyond its bytes: the bytes object header, list slots, the offset int.
ENTRY_OVERHEAD = 72
# What a document not typed yet really costs: its bytes, and the hole it leaves in the heap once typed, which
# the heap keeps among the documents still buffered until new ones fill it (measured: the heap grew to about
# twice the documents buffered, on the real mix; writer/memory.py).
DOCUMENT_HEAP_FACTOR = 2
# Typed chunks of a buffer are merged into one once this many small ones follow each other: each column of a
# chunk also holds ~1 KB of C++ objects (array data, buffers) in the glibc heap, which the cap does not
# count. Draining a backlog, rare log types typed ahead in small chunks under the cap held 1,100 chunks
# (52k columns) by the end: ~40 MB over the cap (docs/writer-durability.md).
MERGE_SMALL_CHUNKS = 8
SMALL_CHUNK_BYTES = 256 * 1024  # message bytes; larger chunks are left as they are (merging copies the data)


@dataclass(slots=True)
class Segment:
    """The buffered messages of one (log type, partition), oldest first: `chunks` (typed ahead) cover the
    oldest records, `values` holds the documents of the newer ones not typed yet."""

    log_type: str
    partition: int
    started: float  # monotonic time of the first message
    values: list[bytes] = field(default_factory=list)  # documents of the records after the chunks
    offsets: list[int] = field(default_factory=list)  # of every record, chunks' and values'
    nbytes: int = 0  # message bytes only (what flush_buffer_mb measures), of every record
    sizes: array[int] = field(default_factory=lambda: array("L"))  # message bytes of each record
    chunks: list[TypedChunk] = field(default_factory=list)

    @property
    def untyped_nbytes(self) -> int:
        return self.nbytes - sum(chunk.nbytes for chunk in self.chunks)

    @property
    def waiting_nbytes(self) -> int:
        """Message bytes not typed yet: the documents still in `values` and those of chunks the pool has not
        typed (documents cost about twice their size in the Python heap, Arrow columns 2.5 times less)."""
        return self.untyped_nbytes + sum(chunk.nbytes for chunk in self.chunks if not chunk.done)

    def merge_small_chunks(self) -> None:
        """Replace each run of MERGE_SMALL_CHUNKS or more small typed chunks by one chunk of one-piece columns."""
        merged: list[TypedChunk] = []
        run: list[TypedChunk] = []
        for chunk in [*self.chunks, None]:
            if chunk is not None and chunk.done and chunk.nbytes < SMALL_CHUNK_BYTES:
                run.append(chunk)
                continue
            if len(run) >= MERGE_SMALL_CHUNKS:
                merged.append(_merged(run))
            else:
                merged.extend(run)
            run = []
            if chunk is not None:
                merged.append(chunk)
        self.chunks = merged

    def typed(self, converter: Converter) -> TypedRecords:
        """Every record typed: the chunks' results (waiting for the pool if need be), then the documents not
        typed yet; reject indexes count from the oldest record."""
        parts = [chunk.result() for chunk in self.chunks]
        counts = [chunk.count for chunk in self.chunks]
        if self.values or not parts:
            untyped = self.offsets[len(self.offsets) - len(self.values):]
            parts.append(type_records(converter, self.log_type, self.partition, self.values, untyped))
            counts.append(len(self.values))
        return combine(parts, counts)

    @property
    def key(self) -> tuple[str, int]:
        return (self.log_type, self.partition)

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def first(self) -> int:
        return self.offsets[0]

    @property
    def last(self) -> int:
        return self.offsets[-1]

    @property
    def memory(self) -> int:
        """Bytes held: typed chunks at their Arrow size, documents (also those the pool has not typed yet) at
        what they cost the heap, and each record's entry."""
        typed = sum(chunk.memory for chunk in self.chunks if chunk.done)
        return typed + DOCUMENT_HEAP_FACTOR * self.waiting_nbytes + ENTRY_OVERHEAD * len(self.offsets)


def _merged(run: list[TypedChunk]) -> TypedChunk:
    typed = combine([chunk.result() for chunk in run], [chunk.count for chunk in run])
    return TypedChunk(sum(chunk.count for chunk in run), sum(chunk.nbytes for chunk in run),
                      typed=TypedRecords.of(typed.table.combine_chunks(), typed.rejects, typed.rejected))


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    flush_bytes: int  # 0 = off
    interval: float  # seconds, 0 = off
    event_count: int  # 0 = off
    max_memory: int  # bytes over all buffers

    @classmethod
    def from_settings(cls, write: WriteSettings) -> FlushPolicy:
        return cls(int(write.flush_buffer_mb * MB), float(write.flush_interval_seconds), int(write.flush_event_count),
                   int(write.max_memory_mb * MB))

    def cut(self, segment: Segment, reason: str) -> int:
        """How many of the oldest records a flush for `reason` takes: exactly `event_count` for "count",
        the shortest run reaching `flush_bytes` for "size", everything otherwise. A consumed batch can
        overshoot a threshold; the rest stays buffered for the next flush."""
        if reason == "count" and self.event_count:
            return min(self.event_count, segment.count)
        if reason == "size" and self.flush_bytes:
            total = 0
            for index, size in enumerate(segment.sizes):
                total += size
                if total >= self.flush_bytes:
                    return index + 1
        return segment.count

    def reason(self, segment: Segment, now: float) -> str | None:
        """Why this buffer must flush now ("size", "count", "time"), or None."""
        if self.flush_bytes and segment.nbytes >= self.flush_bytes:
            return "size"
        if self.event_count and segment.count >= self.event_count:
            return "count"
        if self.interval and now - segment.started >= self.interval:
            return "time"
        return None


class Buffers:
    """All open segments, with the running totals the flush decisions and the health line need."""

    def __init__(self, policy: FlushPolicy) -> None:
        self.policy = policy
        self.segments: dict[tuple[str, int], Segment] = {}

    def add(self, log_type: str, partition: int, offset: int, value: bytes, now: float) -> Segment:
        segment = self.segments.get((log_type, partition))
        if segment is None:
            segment = self.segments[(log_type, partition)] = Segment(log_type, partition, now)
        size = len(value)
        segment.values.append(value)
        segment.offsets.append(offset)
        segment.sizes.append(size)
        segment.nbytes += size
        return segment

    def take(self, key: tuple[str, int], count: int | None = None) -> Segment:
        """Remove the buffer, or only its `count` oldest records (the rest stays, same start time); a cut
        inside a typed chunk splits it (waiting for its typing if need be)."""
        segment = self.segments[key]
        if count is None or count >= segment.count:
            return self.segments.pop(key)
        head_chunks: list[TypedChunk] = []
        taken = 0
        while segment.chunks and taken + segment.chunks[0].count <= count:
            chunk = segment.chunks.pop(0)
            head_chunks.append(chunk)
            taken += chunk.count
        if taken < count and segment.chunks:
            first, rest = segment.chunks[0].cut(count - taken, sum(segment.sizes[taken:count]))
            head_chunks.append(first)
            segment.chunks[0] = rest
            taken = count
        from_values = count - taken
        head = Segment(segment.log_type, segment.partition, segment.started, segment.values[:from_values],
                       segment.offsets[:count], sum(segment.sizes[:count]), segment.sizes[:count], head_chunks)
        del segment.values[:from_values]
        del segment.offsets[:count]
        del segment.sizes[:count]
        segment.nbytes -= head.nbytes
        return head

    def type_ahead(self, min_bytes: int, start: Callable[[Segment, list[bytes], list[int], int], TypedChunk],
                   skip: str = "") -> None:
        """Hand the untyped records of every buffer holding at least `min_bytes` of them to `start` (which
        submits their typing) and keep the chunk it returns."""
        for segment in self.segments.values():
            if len(segment.chunks) > MERGE_SMALL_CHUNKS:
                segment.merge_small_chunks()
            if segment.log_type == skip or not segment.values or segment.untyped_nbytes < min_bytes:
                continue
            values, segment.values = segment.values, []
            first = len(segment.offsets) - len(values)
            segment.chunks.append(start(segment, values, segment.offsets[first:], sum(segment.sizes[first:])))

    def take_due(self, segment: Segment, reason: str) -> Segment:
        return self.take(segment.key, self.policy.cut(segment, reason))

    def due(self, now: float) -> list[tuple[Segment, str]]:
        """Segments whose own flush condition holds, oldest first."""
        out = [(s, r) for s in self.segments.values() if (r := self.policy.reason(s, now)) is not None]
        out.sort(key=lambda item: item[0].started)
        return out

    @property
    def memory(self) -> int:
        return sum(s.memory for s in self.segments.values())

    @property
    def count(self) -> int:
        return sum(s.count for s in self.segments.values())

    @property
    def waiting(self) -> int:
        return sum(s.waiting_nbytes for s in self.segments.values())

    @property
    def untyped(self) -> int:
        """Message bytes of the documents not handed to the typing yet."""
        return sum(s.untyped_nbytes for s in self.segments.values())

    def over_cap(self, extra: int = 0) -> bool:
        return self.memory + extra > self.policy.max_memory

    def largest(self) -> Segment | None:
        return max(self.segments.values(), key=lambda s: s.memory, default=None)

    def of_partition(self, partition: int) -> list[Segment]:
        return [s for s in self.segments.values() if s.partition == partition]

    def oldest_of_partition(self, partition: int) -> Segment | None:
        return min(self.of_partition(partition), key=lambda s: s.first, default=None)

    def min_offset(self, partition: int) -> int | None:
        return min((s.first for s in self.segments.values() if s.partition == partition), default=None)

    def drop_partition(self, partition: int) -> int:
        """Forget a lost partition's records (they will be consumed again by its new owner)."""
        dropped = 0
        for key in [k for k in self.segments if k[1] == partition]:
            dropped += self.segments.pop(key).count
        return dropped

    def usage_pct(self, extra: int = 0) -> float:
        return 100.0 * (self.memory + extra) / self.policy.max_memory if self.policy.max_memory else 0.0
