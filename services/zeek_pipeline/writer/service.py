"""The parquet-writer: `zeek-normalized` → typed, Hive-partitioned Parquet, exactly once per record.

Loop: consume a batch (read_committed, cooperative-sticky, manual commit), hand each record to the
engine (buffer of its (log type, partition), found by a byte scan), flush what is due, tick the runtime.
A flush is committed by the partition's commit log (writer/commitlog.py) before the Kafka offset is
committed; on assignment the partition is recovered from that log and consumption resumes from it,
skipping the ranges already written, so a kill at any point neither loses nor repeats a record.

Storage trouble (ENOSPC, S3 down) or an unreachable DLQ pauses every partition, marks the service
degraded (/readyz 503), keeps the buffers and the failed flush, and retries with backoff until it
succeeds; then consumption resumes. Rebalance: revoked partitions are flushed and committed first,
lost partitions are dropped (their new owner replays from the last commit).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_STORED, Consumer, KafkaException, TopicPartition

from zeek_pipeline.kafka import config as kafka_config
from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.settings import Settings
from zeek_pipeline.writer.buffers import Buffers, FlushPolicy
from zeek_pipeline.writer.commitlog import CommitLog, CorruptCommitLog, PartitionState
from zeek_pipeline.writer.convert import Converter
from zeek_pipeline.writer.dlq import DeadLetters
from zeek_pipeline.writer.engine import WriterEngine
from zeek_pipeline.writer.flush import Flusher, FlushJob
from zeek_pipeline.writer.kafka_errors import BROKER_DOWN_REASON, KafkaErrors, librdkafka_logger
from zeek_pipeline.writer.memory import configure_allocators
from zeek_pipeline.writer.parquet_file import ParquetOptions
from zeek_pipeline.writer.storage import Storage, StorageError

COMPONENT = "parquet-writer"
log = logging.getLogger(f"zeek_pipeline.{COMPONENT}")

POLL_SECONDS = 0.5
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0  # recovery retries at assignment
REVOKE_BUDGET_SECONDS = 30.0
SHUTDOWN_BUDGET_SECONDS = 30.0
RECOVERY_BUDGET_SECONDS = 120.0  # output unreachable at assignment for longer: exit, Kubernetes restarts us
LAG_EVERY_SECONDS = 5.0
REJOIN_DELAY_SECONDS = 3.0  # after a commit conflict, give the group time to say whether we lost the partition
PROBE_SECONDS = 2.0  # while the broker is unreachable and nothing arrives, ask it for metadata this often


class RecoveryTimeout(Exception):
    """The output stayed unreachable while recovering a newly assigned partition."""


class WriterService:
    def __init__(self, settings: Settings, converter: Converter, storage: Storage,
                 runtime: ServiceRuntime | None = None) -> None:
        self.settings = settings
        self.topic = settings.writer_topic
        self.runtime = runtime or ServiceRuntime(COMPONENT, settings, settings.writer.http_port,
                                                 status_extra=self._status_extra, health_extra=self._health_extra)
        self.metrics = self.runtime.metrics
        self.storage = storage
        self.kafka_errors = KafkaErrors(self.runtime)
        self.dead_letters = DeadLetters(
            kafka_config.producer(settings, error_cb=self.kafka_errors, logger=librdkafka_logger()),
            settings.output.kafka.dlq_topic, COMPONENT)
        commitlog = CommitLog(storage, self.topic, self.runtime.instance)
        iceberg = None
        if settings.output.iceberg.enabled:  # pyiceberg is imported only then
            from zeek_pipeline.writer.iceberg_sink import Failpoint, IcebergSink
            iceberg = IcebergSink(settings.output.iceberg, topic=self.topic, converter=converter,
                                  dead_letters=self.dead_letters, failpoint=Failpoint.from_environment())
        flusher = Flusher(storage=storage, commitlog=commitlog, converter=converter, dead_letters=self.dead_letters,
                          options=ParquetOptions.from_settings(settings.output.parquet),
                          file_prefix=settings.output.parquet.file_prefix, topic=self.topic,
                          on_file=self.metrics.file_written, iceberg=iceberg)
        self.engine = WriterEngine(Buffers(FlushPolicy.from_settings(settings.write)), commitlog, flusher,
                                   threaded=True, on_flushed=self._on_flushed,
                                   prepare_threads=settings.writer.flush_threads)
        self.consumer: Consumer | None = None
        self.paused = False
        self._next_lag = 0.0
        self._next_probe = 0.0
        self._rejoin_at: float | None = None

    # --- monitoring ----------------------------------------------------------------------------------
    def _health_extra(self) -> dict[str, Any]:
        totals = self.metrics.totals()
        return {"flushes": totals["flushes"], "files": totals["files"],
                "written_mb": round(totals["bytes_written"] / 1e6, 1), "buffered": self.engine.buffers.count,
                "queued_flushes": len(self.engine.queue)}

    def _status_extra(self) -> dict[str, Any]:
        engine = self.engine
        return {"storage": self.storage.url, "buffered_records": engine.buffers.count,
                "open_buffers": len(engine.buffers.segments), "pending_flushes": len(engine.queue),
                "paused": self.paused, "skipped_on_replay": engine.skipped, "flush_reasons": dict(engine.flush_reasons),
                "partitions": {str(p): {"seq": s.seq, "resume_at": s.next_offset} for p, s in engine.states.items()},
                "memory_mb": engine.memory_report()}

    def _update_gauges(self) -> None:
        engine = self.engine
        self.metrics.set_buffer(round(engine.buffers.usage_pct(engine.queued_memory()), 1))
        now = time.monotonic()
        if self.consumer is None or now < self._next_lag:
            return
        self._next_lag = now + LAG_EVERY_SECONDS
        for partition, state in list(engine.states.items()):
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
            except KafkaException:
                continue
            position = engine.positions.get(partition, state.next_offset)
            if high >= 0 and position is not None:
                self.metrics.set_lag(self.topic, partition, max(high - position, 0))

    def _on_flushed(self, job: FlushJob) -> None:
        self.metrics.add("flushes")
        self.metrics.add("produced", job.outcome.rows if job.outcome else 0)
        for reject in job.rejects:
            source = f"{self.topic}/{job.partition}@{job.segment.offsets[reject.index]}"
            self.metrics.reject(reject.reason, reject.detail, source, log_type=job.segment.log_type)

    # --- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        runtime = self.runtime
        configure_allocators()  # before the threads start (writer/memory.py)
        runtime.install_signal_handlers()
        runtime.start()
        # zeek-normalized and the writer's group live on the output cluster (output.kafka.brokers).
        conf = kafka_config.consumer(self.settings, self.settings.writer.group_id, cluster="output",
                                     error_cb=self.kafka_errors, logger=librdkafka_logger())
        self.consumer = Consumer(conf)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        runtime.set_state("ok")
        log.info("consuming", extra={"context": {"topic": self.topic, "group": self.settings.writer.group_id,
                                                 "output": self.storage.url}})
        batch_size = self.settings.writer.batch_size
        engine = self.engine
        engine.start()
        try:
            while not runtime.stop_requested:
                self._after_flushes()
                if engine.over_cap() and not engine.failing:
                    # Backpressure: the flusher is behind. Hand it the largest buffers first: if nothing is
                    # queued (one batch filled the cap), waiting alone would wait forever.
                    engine.flush_due(time.monotonic())
                    engine.wait_for_room(POLL_SECONDS)
                    runtime.tick()
                    continue
                messages = self.consumer.consume(batch_size, POLL_SECONDS)
                consumed = engine.ingest(messages, time.monotonic(), self.kafka_errors) if messages else 0
                if consumed:
                    self.metrics.add("consumed", consumed)
                    runtime.broker_ok()  # a record, not an error event: the broker answered
                elif not runtime.broker_reachable:
                    self._probe_broker()
                engine.flush_due(time.monotonic())
                self._update_gauges()
                runtime.tick()
        except (CorruptCommitLog, RecoveryTimeout, KafkaException) as exc:
            self.metrics.error(f"{type(exc).__name__}: {exc}")
            log.error("stopping: %s", exc)
            runtime.fatal_error = str(exc)
        finally:
            self._shutdown()
            runtime.close()
        return 1 if runtime.fatal_error else 0

    def _after_flushes(self) -> None:
        """Finished flushes: commit their offsets to Kafka; pause/resume on the flusher's health."""
        engine = self.engine
        if engine.failing:
            self._degraded()
        elif self.paused or self.runtime.state == "degraded":
            self._recovered()
        self._commit_offsets(engine.collect(), asynchronous=True)
        if engine.conflicts:
            # A conflict usually means we were paused past our session (a zombie): the group's verdict (the
            # partition lost) arrives with the next heartbeats. Re-reading the log at once would take the
            # partition over again from its rightful owner, and back, until that verdict arrives.
            now = time.monotonic()
            self._rejoin_at = self._rejoin_at or now + REJOIN_DELAY_SECONDS
            if now >= self._rejoin_at:
                self._rejoin(set(engine.conflicts))
                engine.conflicts.clear()
                self._rejoin_at = None

    def _probe_broker(self) -> None:
        """While the broker is unreachable and no record arrives (paused, idle topic), a metadata request tells
        when it is back; error events never do (they only say that it is still down)."""
        now = time.monotonic()
        if self.consumer is None or now < self._next_probe:
            return
        self._next_probe = now + PROBE_SECONDS
        try:
            self.consumer.list_topics(self.topic, timeout=1.0)
        except KafkaException:
            return
        self.runtime.broker_ok()

    def _rejoin(self, partitions: set[int]) -> None:
        """Another writer committed a partition we hold (a race at hand-over): re-read its commit log and
        continue after what that writer wrote, or drop it if Kafka has taken it from us meanwhile.

        Recovery drops what was buffered for the partition, so consumption must go back: to after the log's
        last commit, or, when the log holds no data yet, to where a fresh assignment starts (never on from the
        current position, which is past the records just dropped)."""
        if self.consumer is None:
            return
        assigned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        for partition in sorted(partitions & assigned):
            state = self._recover(partition)
            resume = state.next_offset if state.next_offset is not None else self._fresh_start(partition)
            self.consumer.seek(TopicPartition(self.topic, partition, resume))
            log.warning("partition re-read from its commit log after a conflict", extra={"context": {
                "partition": partition, "seq": state.seq, "resume_at": resume}})
        self.runtime.set_assignment((self.topic, p) for p in self.engine.states)

    def _fresh_start(self, partition: int) -> int:
        """Where a fresh assignment of a partition with no data in its commit log starts: the group's committed
        offset, else the log start (auto.offset.reset=earliest). When the broker cannot say, the log start:
        with nothing of the partition in the lake, a longer replay duplicates nothing and loses nothing."""
        assert self.consumer is not None
        tp = TopicPartition(self.topic, partition)
        try:
            [committed] = self.consumer.committed([tp], timeout=10)
            if committed.offset >= 0:
                return int(committed.offset)
        except KafkaException as exc:
            log.warning("partition %d: committed offset unknown (%s); re-reading from its start", partition, exc)
        return OFFSET_BEGINNING

    # --- degraded mode -------------------------------------------------------------------------------
    def _degraded(self) -> None:
        exc = self.engine.last_error
        no_space = isinstance(exc, StorageError) and exc.no_space
        reason = f"{'disk full' if no_space else 'output unavailable'}: {exc}"[:500]
        if reason != self.runtime.reason:
            self.metrics.error(reason)
        if not self.paused:
            log.warning("flush failed: consumption paused, buffers kept, retrying with backoff",
                        extra={"context": {"error": str(exc)[:300]}})
        if self.runtime.broker_reachable:  # else the broker outage is the reason shown, until it ends
            self.runtime.set_state("degraded", reason)
        self._pause()

    def _recovered(self) -> None:
        if self.paused:
            log.info("output writable again: consumption resumed")
        self._resume()
        self._clear_degraded()

    def _clear_degraded(self) -> None:
        """Clear what the writer itself reported (output trouble, recovery); a broker outage is cleared only
        by the broker answering (runtime.broker_ok), so it cannot flap with every loop iteration."""
        if self.runtime.state == "degraded" and not self.runtime.reason.startswith(BROKER_DOWN_REASON):
            self.runtime.set_state("ok")

    def _pause(self) -> None:
        if self.paused or self.consumer is None:
            return
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        self.paused = True

    def _resume(self) -> None:
        if not self.paused or self.consumer is None:
            return
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)
        self.paused = False

    def _commit_offsets(self, partitions: set[int], *, asynchronous: bool) -> None:
        """Commit the commit log's restart offsets to Kafka (for lag monitoring and tools; the log is the truth)."""
        if self.consumer is None or not partitions:
            return
        states = self.engine.states
        offsets = [TopicPartition(self.topic, p, state.next_offset) for p in sorted(partitions)
                   if (state := states.get(p)) is not None and state.next_offset is not None]
        if not offsets:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("kafka offset commit failed (the commit log still has it): %s", exc)

    # --- rebalance -----------------------------------------------------------------------------------
    def _recover(self, partition: int) -> PartitionState:
        deadline = time.monotonic() + RECOVERY_BUDGET_SECONDS
        backoff = BACKOFF_MIN
        while True:
            try:
                return self.engine.recover(partition)
            except StorageError as exc:
                if time.monotonic() >= deadline:
                    raise RecoveryTimeout(f"cannot recover partition {partition} from the output: {exc}") from exc
                self.runtime.set_state("degraded", f"recovering partition {partition}: {exc}"[:500])
                log.warning("recovery of partition %d failed, retrying: %s", partition, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.add("rebalances")
        assigned: list[TopicPartition] = []
        for tp in partitions:
            state = self._recover(tp.partition)
            offset = state.next_offset if state.next_offset is not None else OFFSET_STORED
            assigned.append(TopicPartition(tp.topic, tp.partition, offset))
            log.info("partition recovered", extra={"context": {
                "partition": tp.partition, "seq": state.seq, "resume_at": state.next_offset,
                "done_ranges": state.range_count()}})
        consumer.incremental_assign(assigned)
        if assigned:
            # librdkafka keeps a partition's pause flag across unassign/assign: one lost while paused would
            # come back paused forever, so every assignment states its flag.
            (consumer.pause if self.paused else consumer.resume)(assigned)
        if not self.engine.failing:
            self._clear_degraded()
        self.runtime.set_assignment((self.topic, p) for p in self.engine.states)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions} & set(self.engine.states)
        if revoked:
            failed = self.engine.drain(revoked, time.monotonic() + REVOKE_BUDGET_SECONDS, "rebalance")
            self.engine.collect()
            if failed:
                log.warning("revoked partitions %s not fully flushed; their new owner replays from the last commit",
                            sorted(failed))
            self._commit_offsets(revoked - failed, asynchronous=False)
            self._forget(revoked)
        self._unassign(consumer, partitions)
        log.info("partitions revoked", extra={"context": {"partitions": sorted(tp.partition for tp in partitions)}})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        dropped = self._forget({tp.partition for tp in partitions}, finish_dead_lettered=True)
        self._unassign(consumer, partitions)
        log.warning("partitions lost", extra={"context": {
            "partitions": sorted(tp.partition for tp in partitions), "dropped_records": dropped}})

    def _unassign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        current = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        consumer.incremental_unassign([tp for tp in partitions if (tp.topic, tp.partition) in current])

    def _forget(self, partitions: set[int], *, finish_dead_lettered: bool = False) -> int:
        dropped = self.engine.forget(partitions, finish_dead_lettered=finish_dead_lettered)
        if not self.engine.failing:
            self._recovered()
        self.runtime.set_assignment((self.topic, p) for p in self.engine.states)
        return dropped

    # --- shutdown ------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.runtime.set_state("stopping", self.runtime.reason)
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        partitions = set(self.engine.states)
        if not self.runtime.fatal_error and partitions:
            failed = self.engine.drain(partitions, time.monotonic() + SHUTDOWN_BUDGET_SECONDS, "shutdown")
            if failed:
                log.warning("shutdown: partitions %s not fully flushed; they replay from their last commit",
                            sorted(failed))
            self.engine.collect()
            self.consumer = consumer
            self._commit_offsets(partitions - failed, asynchronous=False)
            self.consumer = None
        self.engine.forget(partitions)  # the revoke callback during close() finds nothing left to flush
        self.engine.stop()
        try:
            consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close: %s", exc)
        self.dead_letters.close()
        log.info("stopped", extra={"context": self.metrics.totals()})
