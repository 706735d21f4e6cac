"""The allocators under the parquet-writer's buffers, set so that freed memory goes back to the system.

`write.max_memory_mb` counts what the buffers and flushes hold, but the process's RSS is what the allocators
keep. Measured on the real mix (docs/writer-durability.md, "Buffers and flushes"), they kept about as much
again as the cap: glibc's main heap, where the documents live, cannot give back the holes the typed
documents leave among the ones still buffered; glibc's per-thread arenas kept 64 MB each; Arrow's
allocator keeps freed pages for reuse. So the writer (1) limits how many documents wait untyped (the
engine), (2) gives glibc two arenas and a fixed mmap threshold, so large blocks (librdkafka's fetch buffers, joined
documents) are mapped and unmapped instead of staying in a heap, (3) gives Arrow jemalloc rather than its
default mimalloc, which kept ~110 MB more at the same throughput, and (4) hands free pages back (`release`:
glibc's `malloc_trim`, Arrow's pool) after flushes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time

import pyarrow as pa

log = logging.getLogger("zeek_pipeline.writer.memory")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024  # fixed: glibc's own raises it up to 32 MB, keeping freed large blocks in heaps
TRIM_THRESHOLD = 4 * 1024 * 1024
RELEASE_EVERY_SECONDS = 1.0


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def configure_allocators() -> None:
    """At start, before the threads: Arrow's pool and glibc's tuning (no-op on another libc).

    Arrow allocates through jemalloc unless `ARROW_DEFAULT_MEMORY_POOL` names another pool: draining a 10x
    backlog at cap 128, peak RSS was 343-351 MB with jemalloc against 437-459 MB with mimalloc (Arrow's
    default), at the same events per CPU second. Through glibc it held ~50 MB less than mimalloc but typed a
    third slower (a page fault per mapped column buffer)."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:  # a pyarrow built without jemalloc keeps its default
            log.info("pyarrow has no jemalloc; Arrow keeps %s", pa.default_memory_pool().backend_name)
    if _LIBC is None:
        return
    for option, value in ((M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if not _LIBC.mallopt(option, value):
            log.warning("mallopt(%d, %d) refused", option, value)
            return


class Releaser:
    """Gives free pages back to the system at most once a `every` seconds (it walks every heap)."""

    def __init__(self, every: float = RELEASE_EVERY_SECONDS) -> None:
        self.every = every
        self._next = 0.0

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.every
        pa.default_memory_pool().release_unused()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
