"""Exactly-once appends: every snapshot of a log type's table carries the Kafka offsets that table covers.

The snapshot summary property `zeek.kafka.offsets.<topic>` holds `{"<partition>": next offset, ...}` for every
partition ever committed to the table (cumulative: each commit copies the map of the snapshot it builds on and
raises its own partitions). Reading it back (`committed_offsets`) tells a writer, after a restart or a
rebalance, which records of this log type are already in the table.

The invariant a writer keeps for this to be exactly-once: when a commit raises partition p to N, every record
of this log type from p with an offset below N is in the table once that commit lands, or was sent to the
dead-letter topic before it. The writer gets there by buffering, per log type and partition, every record from
the table's committed offset on (skipping those below it) and handing all of them, up to N, to one commit.

Why a retry cannot duplicate: the append is conditional on the snapshot it was built on (the catalog swaps
the metadata only if unchanged, else CommitFailedException). After a failure, or an unknown outcome, the
table is reloaded and the rows re-filtered against the offsets it now holds: rows below the committed offset
of their partition are already there (their own commit, or another writer's) and are dropped. A commit that
did land while reported as failed therefore appends nothing on retry. pyiceberg's own retry, which would
re-apply the stale rows, is off on every table (catalog.NO_PYICEBERG_RETRY) and refused here if switched on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.snapshots import ancestors_of
from sqlalchemy.exc import OperationalError

from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN

log = logging.getLogger(__name__)

OFFSETS_PREFIX = "zeek.kafka.offsets."
DEFAULT_ATTEMPTS = 10
# Retried after reloading the table: a conflict, a commit whose outcome the catalog could not tell (REST 5xx,
# a lost reply), a busy SQL catalog. The offsets check after the reload makes each retry safe.
RETRIED = (CommitFailedException, CommitStateUnknownException, OperationalError)


class CommitError(RuntimeError):
    """The commit could not be made: the table refuses safe retries, or it kept conflicting."""


def offsets_property(topic: str) -> str:
    return OFFSETS_PREFIX + topic


def committed_offsets(table: Table, topic: str) -> dict[int, int]:
    """Kafka partition -> next offset the table covers for `topic` ({} for a new table).

    Read from the newest snapshot of the current branch that carries the map: a snapshot made by another tool
    (a compaction, an expiry, a delete) may not copy it, and the map of its ancestor still holds.
    """
    key = offsets_property(topic)
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        text = snapshot.summary[key] if snapshot.summary is not None else None
        if text is not None:
            return {int(partition): int(offset) for partition, offset in orjson.loads(text).items()}
    return {}


def _encode(offsets: Mapping[int, int]) -> str:
    return orjson.dumps({str(partition): offsets[partition] for partition in sorted(offsets)}).decode()


def _batch_next_offsets(rows: pa.Table, next_offsets: Mapping[int, int] | None) -> dict[int, int]:
    """What the batch covers: the caller's next offsets, or each partition's highest offset + 1."""
    highest: dict[int, int] = {}
    if rows.num_rows:
        grouped = rows.group_by(PARTITION_COLUMN).aggregate([(OFFSET_COLUMN, "max")])
        highest = dict(zip(grouped.column(PARTITION_COLUMN).to_pylist(),
                           grouped.column(f"{OFFSET_COLUMN}_max").to_pylist(), strict=True))
    if next_offsets is None:
        return {int(partition): int(offset) + 1 for partition, offset in highest.items()}
    for partition, offset in highest.items():
        if partition not in next_offsets or next_offsets[partition] <= offset:
            raise ValueError(f"partition {partition}: rows up to offset {offset}, but next_offsets says "
                             f"{next_offsets.get(partition)}")
    return dict(next_offsets)


def _uncovered(rows: pa.Table, committed: Mapping[int, int]) -> pa.Table:
    """The rows at or above their partition's committed offset (the others are in the table already)."""
    if not committed or rows.num_rows == 0:
        return rows
    partitions = rows.column(PARTITION_COLUMN)
    offsets = rows.column(OFFSET_COLUMN)
    keep = pa.array([True] * rows.num_rows)
    for partition, offset in committed.items():
        covered = pc.and_(pc.equal(partitions, partition), pc.less(offsets, offset))
        keep = pc.and_(keep, pc.invert(pc.fill_null(covered, False)))
    return rows.filter(keep)


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one `commit_exactly_once` call did."""

    appended: int  # rows this call added to the table
    skipped: int  # rows already covered by the table's offsets (committed earlier, by us or another writer)
    snapshot_id: int | None  # the snapshot this call made; None when it had nothing to add
    offsets: dict[int, int] = field(default_factory=dict)  # the table's offsets map after the call
    attempts: int = 1


def _check_no_pyiceberg_retry(table: Table) -> None:
    retries = table.properties.get(TableProperties.COMMIT_NUM_RETRIES)
    if retries != "0":
        raise CommitError(f"{table.name()}: table property {TableProperties.COMMIT_NUM_RETRIES} is {retries!r}; "
                          "pyiceberg's own retry re-appends rows after a conflict (open it with "
                          "catalog.ensure_table, which sets it to 0)")


def commit_exactly_once(table: Table, topic: str, rows: pa.Table, next_offsets: Mapping[int, int] | None = None,
                        *, attempts: int = DEFAULT_ATTEMPTS) -> CommitResult:
    """Append `rows` (conformed to the table: schema.conform) from Kafka `topic`, at most once each.

    `next_offsets` (partition -> next offset) says what the batch covers; by default each partition's highest
    `_kafka_offset` + 1. A batch with no rows left to add still raises the offsets it claims (a snapshot
    without data files), so records that all went to the dead-letter topic are not replayed. The table object
    is refreshed on a conflict and is current after the call; use one per thread. Only after this returns may
    the writer commit Kafka offsets for these records.
    """
    _check_no_pyiceberg_retry(table)
    wanted = _batch_next_offsets(rows, next_offsets)
    key = offsets_property(topic)
    for attempt in range(1, attempts + 1):
        committed = committed_offsets(table, topic)
        todo = _uncovered(rows, committed)
        merged = dict(committed)
        for partition, offset in wanted.items():
            merged[partition] = max(offset, committed.get(partition, 0))
        if todo.num_rows == 0 and merged == committed:
            return CommitResult(0, rows.num_rows, None, committed, attempt)
        # rows, or none but offsets to raise (records that all went to the DLQ): a snapshot without files then
        try:
            table.append(todo, snapshot_properties={key: _encode(merged)})
        except RETRIED as exc:
            log.info("commit to %s attempt %d failed (%s); reloading and re-checking offsets",
                     table.name(), attempt, type(exc).__name__)
            time.sleep(min(2.0, 0.02 * 2 ** attempt) * random.uniform(0.5, 1.0))
            table.refresh()
            continue
        snapshot = table.current_snapshot()
        return CommitResult(todo.num_rows, rows.num_rows - todo.num_rows,
                            snapshot.snapshot_id if snapshot is not None else None, merged, attempt)
    raise CommitError(f"{table.name()}: {attempts} commit attempts conflicted; nothing of this batch "
                      "is known to be committed beyond what committed_offsets reports")
