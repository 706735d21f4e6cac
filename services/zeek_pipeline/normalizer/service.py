"""The consume -> transform -> produce loop of the normalizer-enricher.

One batch is one transaction (exactly-once) or one flush-then-commit (at-least-once). The loop only
consumes between batches' records, so when librdkafka runs a rebalance callback (inside consume()) every
record handed out so far is already produced: on revoke the open batch is committed (or aborted and
rewound) before the partitions move; on lost it is aborted, nothing of it is committed; on assign (exactly-
once) the partitions' dead previous owner is fenced and the partitions are claimed (normalizer/ownership.py).
Where each partition stands is the ledger's (normalizer/ledger.py): callbacks and abort paths only call it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

# ConfigResource and ResourceType are the documented public names; confluent_kafka.admin re-exports them
# without an __all__, which mypy's strict mode reads as private.
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from zeek_pipeline.core.transform import Accepted, Rejected
from zeek_pipeline.kafka import config as kafka_config
from zeek_pipeline.normalizer.at_least_once import AtLeastOnceOutput
from zeek_pipeline.normalizer.batch import Batch, BatchPolicy, TopicPartitionKey
from zeek_pipeline.normalizer.dlq import (
    INTERNAL_ERROR,
    LOG_TYPE,
    OUTPUT_TOO_LARGE,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    Headers,
    dead_letter,
    output_headers,
)
from zeek_pipeline.normalizer.errors import BatchAborted, FatalKafkaError, describe
from zeek_pipeline.normalizer.group_offsets import GroupOffsets
from zeek_pipeline.normalizer.ledger import PartitionLedger, RewindTo
from zeek_pipeline.normalizer.output import KafkaOutput
from zeek_pipeline.normalizer.ownership import Owner, OwnerFence
from zeek_pipeline.normalizer.size_guard import MSG_SIZE_TOO_LARGE, DeadLetterRefused, SizeGuard
from zeek_pipeline.normalizer.transactions import TransactionalOutput, transactional_id
from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.settings import Settings

COMPONENT = "normalizer-enricher"
log = logging.getLogger("zeek_pipeline.normalizer-enricher")

RECORD_OVERHEAD = 4096  # record batch framing and our headers, kept free under a topic's max.message.bytes
PRODUCER_HEADROOM = 64 * 1024
REVOKE_BUDGET_SECONDS = 20.0  # a revoke must not hold the group's rebalance for long
TOPIC_WAIT_LOG_SECONDS = 10.0
LAG_SECONDS = 5.0
CLAIM_READ_SECONDS = 10.0  # an assignment waits this long at most for stable committed offsets to claim
REFUSED = "writes refused"  # the state's reason while the broker refuses our writes for good
REFUSED_BACKOFF_MAX = 30.0  # a refused batch is retried this often at least (an operator may fix the ACL)


class TransformerLike(Protocol):
    def transform(self, body: bytes, *, topic: str | None = None,
                  ingest_time_ms: int | None = None) -> Accepted | Rejected: ...


def limits_from_topic_configs(max_message_bytes: int, output_topic_max: int | None,
                              dlq_topic_max: int | None) -> tuple[int, int]:
    """(largest normalized document, largest dead-letter value) this service may produce.

    A document bigger than the output topic accepts would fail its whole transaction again and again, so it
    goes to the dead-letter topic instead; a dead letter keeps the original bytes up to its topic's limit."""
    output_limit = max_message_bytes
    if output_topic_max is not None:
        output_limit = min(output_limit, output_topic_max - RECORD_OVERHEAD)
    dlq_limit = max(max_message_bytes, 1024) if dlq_topic_max is None else dlq_topic_max - RECORD_OVERHEAD
    return max(output_limit, 1024), max(dlq_limit, 1024)


class NormalizerService:
    def __init__(self, settings: Settings, transformer: TransformerLike, runtime: ServiceRuntime | None = None,
                 ) -> None:
        self.settings = settings
        self.transformer = transformer
        self.runtime = runtime or ServiceRuntime(COMPONENT, settings, settings.normalizer.http_port,
                                                 status_extra=self._status_extra, health_extra=self._health_extra)
        normalizer = settings.normalizer
        self.guarantee = normalizer.processing_guarantee
        self.policy = BatchPolicy(normalizer.batch_size, normalizer.batch_timeout_ms / 1000,
                                  settings.kafka.max_poll_records)
        self.batch = Batch()
        self.input_topic = settings.kafka.topic
        self.output_topic = settings.output.kafka.topic
        self.dlq_topic = settings.output.kafka.dlq_topic
        self.transaction_seconds = normalizer.transaction_timeout_ms / 1000
        self.shutdown_seconds = normalizer.shutdown_timeout_seconds
        self.transactional_id = transactional_id(settings.kafka.group_id, self.runtime.instance)
        self.output_limit = self.dlq_limit = normalizer.max_message_bytes
        self.sizes = SizeGuard(self.output_topic, self.dlq_topic)  # what the broker refused as too large
        self._refused_backoff = 0.0  # > 0 while the broker refuses our writes (not ready, retried with backoff)
        self._retry_at = 0.0
        self.ledger = PartitionLedger()
        self._owner_metadata: str | None = None  # recorded with every commit (exactly-once): who to fence
        self._fence: OwnerFence | None = None
        self._group_offsets: GroupOffsets | None = None  # exactly-once: the committed offsets, read apart
        self.commits = 0
        self.aborts = 0
        self.skipped = 0
        self.last_commit_at: float | None = None
        self._tp_bytes: dict[TopicPartitionKey, tuple[bytes, bytes]] = {}
        self._log_type_bytes: dict[str, bytes] = {}
        self._stop_deadline: float | None = None
        self._stop_lock = threading.Lock()
        self._fatal: str | None = None
        self._next_lag = 0.0
        self._last_consume_error: tuple[str, float] = ("", 0.0)
        self._consumer: Consumer | None = None
        self._output: KafkaOutput | None = None
        self._queue_max = 1

    # --- wiring ------------------------------------------------------------------------------------
    @property
    def consumer(self) -> Consumer:
        assert self._consumer is not None
        return self._consumer

    @property
    def output(self) -> KafkaOutput:
        assert self._output is not None
        return self._output

    @property
    def assigned(self) -> set[TopicPartitionKey]:
        return self.ledger.assigned

    def _client_logger(self) -> logging.Logger:
        return logging.getLogger("zeek_pipeline.librdkafka")

    def _admin(self, cluster: kafka_config.Cluster) -> AdminClient:
        conf = kafka_config.admin(self.settings, cluster)
        conf.update({"error_cb": self._quiet_error, "logger": self._client_logger()})
        return AdminClient(conf)

    def _quiet_error(self, err: KafkaError) -> None:
        log.debug("admin: %s", err.str())

    def _producer_conf(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {
            "error_cb": self.runtime.on_kafka_error,
            "logger": self._client_logger(),
            # Same key -> same partition as Java clients (one flow stays in one partition).
            "partitioner": "murmur2_random",
            "message.max.bytes": max(self.output_limit, self.dlq_limit) + PRODUCER_HEADROOM,
        }
        if self.guarantee == "exactly_once":
            overrides["transactional.id"] = self.transactional_id
            overrides["transaction.timeout.ms"] = self.settings.normalizer.transaction_timeout_ms
        return kafka_config.producer(self.settings, **overrides)

    def _build_output(self) -> KafkaOutput:
        conf = self._producer_conf()
        self._queue_max = int(conf.get("queue.buffering.max.messages", 100_000))
        if self.guarantee == "exactly_once":
            return TransactionalOutput(conf, stop_deadline=self._deadline_if_stopping)
        return AtLeastOnceOutput(conf, stop_deadline=self._deadline_if_stopping)

    def _consumer_conf(self) -> dict[str, Any]:
        return kafka_config.consumer(self.settings, self.settings.kafka.group_id,
                                     error_cb=self.runtime.on_kafka_error, logger=self._client_logger())

    def _build_consumer(self) -> Consumer:
        return Consumer(self._consumer_conf())

    def _build_fence(self) -> OwnerFence:
        # The group's members are known to the input cluster; the transactional ids live on the output one.
        conf: dict[str, Any] = dict(kafka_config.admin(self.settings))
        conf.update({"error_cb": self._quiet_error, "logger": self._client_logger()})
        group_admin = AdminClient(conf)
        return OwnerFence(GroupOffsets(self._consumer_conf(), stable=False), self._producer_conf(), group_admin,
                          self.settings.kafka.group_id, self.transactional_id)

    def _read_committed(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The group's committed offsets, stable, retried until the broker answers (only a stop ends it)."""
        if self._group_offsets is None:
            self._group_offsets = GroupOffsets(self._consumer_conf(), stable=True)
        return self._group_offsets.offsets_until_answered(partitions, self._stopping)

    def _deadline_if_stopping(self) -> float | None:
        return self._stop_deadline

    # --- startup -----------------------------------------------------------------------------------
    def _wait_for_topics(self) -> bool:
        """Wait (not ready, not failing) until the input topic exists on the input cluster and the output and
        dead-letter topics on the output cluster (the same one unless output.kafka.brokers names another)."""
        input_admin = self._admin("input")
        output_admin = self._admin("output") if self.settings.separate_output_cluster else input_admin
        wanted = [(input_admin, "input", [self.input_topic]),
                  (output_admin, "output", [self.output_topic, self.dlq_topic])]
        next_log = 0.0
        while not self.runtime.stop_requested:
            missing: list[str] = []
            unreachable: list[str] = []
            for admin, cluster, names in wanted:
                try:
                    existing = set(admin.list_topics(timeout=5).topics)
                except KafkaException as exc:
                    missing += names
                    unreachable.append(f"{cluster} cluster: {describe(exc)}"
                                       if self.settings.separate_output_cluster else describe(exc))
                    continue
                missing += [topic for topic in names if topic not in existing]
            if unreachable:
                reason = f"broker unreachable: {'; '.join(unreachable)}"
            else:
                reason = f"waiting for topics: {', '.join(missing)}"
            if not missing:
                self._read_topic_limits(output_admin)
                return True
            self.runtime.set_state("starting", reason)
            if time.monotonic() >= next_log:
                log.warning("%s", reason)
                next_log = time.monotonic() + TOPIC_WAIT_LOG_SECONDS
            self.runtime.stop_event.wait(1.0)
        return False

    def _read_topic_limits(self, admin: AdminClient) -> None:
        found: dict[str, int] = {}
        try:
            resources = [ConfigResource(ResourceType.TOPIC, name) for name in (self.output_topic, self.dlq_topic)]
            for resource, future in admin.describe_configs(resources, request_timeout=10).items():
                entry = future.result(10).get("max.message.bytes")
                if entry is not None and entry.value is not None:
                    found[resource.name] = int(entry.value)
        except Exception as exc:  # noqa: BLE001 - the configured limit still applies
            log.warning("cannot read the output topics' max.message.bytes (%s); using max_message_bytes",
                        describe(exc))
        self.output_limit, self.dlq_limit = limits_from_topic_configs(
            self.settings.normalizer.max_message_bytes, found.get(self.output_topic), found.get(self.dlq_topic))
        if found.get(self.output_topic, 1 << 62) < self.settings.normalizer.max_message_bytes:
            log.warning("topic %s accepts %d bytes, less than normalizer.max_message_bytes; larger documents "
                        "go to %s", self.output_topic, found[self.output_topic], self.dlq_topic)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        runtime = self.runtime
        runtime.install_signal_handlers()
        threading.Thread(target=self._watch_stop, name="stop-watch", daemon=True).start()
        runtime.start()
        code = 0
        try:
            code = self._run()
        except FatalKafkaError as exc:
            self._fatal = str(exc)
            runtime.metrics.error(str(exc))
            log.error("fatal: %s; exiting so the pod restarts (uncommitted work is redone)", exc)
            code = 1
        except Exception as exc:  # a bug: commit nothing more (the batch may be half handled) and exit
            self._fatal = f"{type(exc).__name__}: {exc}"
            runtime.metrics.error(self._fatal)
            log.exception("unexpected error; exiting without committing the open batch")
            code = 1
        finally:
            self._close(code)
            runtime.close()
        return code

    def _run(self) -> int:
        runtime = self.runtime
        if not self._wait_for_topics():
            return 0
        self._output = self._build_output()
        if not self.output.start(lambda: runtime.stop_requested):
            return 0
        self._consumer = self._build_consumer()
        if self.guarantee == "exactly_once":
            self._fence = self._build_fence()
            self._group_offsets = GroupOffsets(self._consumer_conf(), stable=True)
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        runtime.set_state("ok")
        log.info("consuming", extra={"context": {
            "topic": self.input_topic, "group": self.settings.kafka.group_id, "output": self.output_topic,
            "dlq": self.dlq_topic, "guarantee": self.guarantee, "transactional_id": self.transactional_id
            if self.guarantee == "exactly_once" else None, "batch_size": self.policy.max_records}})
        self._loop()
        return self._shutdown()

    def _loop(self) -> None:
        runtime, policy, batch = self.runtime, self.policy, self.batch
        while not runtime.stop_requested:
            runtime.tick()
            now = time.monotonic()
            if now >= self._next_lag:
                self._observe(now)
            if batch and policy.due(batch.count, batch.started, now):
                self._commit(now + self.transaction_seconds, now + 2 * self.transaction_seconds)
                continue
            if now < self._retry_at:  # the broker refused our writes: wait before the replay
                runtime.stop_event.wait(min(self._retry_at - now, 1.0))
                continue
            messages = self.consumer.consume(policy.poll_size(batch.count),
                                             policy.poll_timeout(batch.count, batch.started, now))
            if self._fatal:
                raise FatalKafkaError(self._fatal)
            if messages:
                self._process(messages)
        if runtime.fatal_error:
            raise FatalKafkaError(runtime.fatal_error)

    def _process(self, messages: list[Message]) -> None:
        """The hot path: transform each record and hand its output or dead letter to the producer.

        Kept flat on purpose (no per-record method calls besides the transform and produce): it runs once
        per record and the relay benchmark compares it with a loop that only moves bytes."""
        transform = self.transformer.transform
        output = self.output
        output.begin()
        fast_produce = output.producer.produce
        batch, ledger = self.batch, self.ledger
        positions, first = ledger.positions, ledger.first
        output_topic, output_limit = self.output_topic, self.sizes.output_fast_limit(self.output_limit)
        tp_bytes, log_type_bytes = self._tp_bytes, self._log_type_bytes
        types = batch.types
        if not batch.count:
            batch.started = time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        consumed = accepted = 0
        index = 0
        try:
            for index, msg in enumerate(messages):  # noqa: B007 - `index` tells an abort where it stopped
                err = msg.error()
                if err is not None:
                    self._consume_error(err)
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None
                tp = (topic, partition)
                expected = positions.get(tp)
                if expected is not None and offset < expected:
                    self.skipped += 1  # fetched before a rewind or re-delivered: already in this batch
                    continue
                # Recorded before producing, so an abort in produce() rewinds to this record at the latest.
                positions[tp] = offset + 1
                if tp not in first:
                    first[tp] = offset
                consumed += 1
                value = msg.value()
                result = transform(value if value is not None else b"", topic=topic, ingest_time_ms=now_ms)
                if type(result) is Accepted:
                    document = result.value
                    if len(document) <= output_limit:
                        names = tp_bytes.get(tp)
                        if names is None:
                            names = tp_bytes[tp] = (topic.encode(), b"%d" % partition)
                        log_type = log_type_bytes.get(result.log_type)
                        if log_type is None:
                            log_type = log_type_bytes[result.log_type] = result.log_type.encode()
                        headers: Headers = [(LOG_TYPE, log_type), (SOURCE_TOPIC, names[0]),
                                            (SOURCE_PARTITION, names[1]), (SOURCE_OFFSET, b"%d" % offset)]
                        try:
                            fast_produce(output_topic, document, result.key, headers=headers)
                        except Exception:  # noqa: BLE001 - queue full or an error to classify: the slow path
                            output.produce(output_topic, document, result.key, headers)
                        accepted += 1
                        types[result.log_type] += 1
                    elif self._oversized(msg, result):
                        accepted += 1
                        types[result.log_type] += 1
                elif type(result) is Rejected:
                    self._dead_letter(msg, result.reason, result.detail, result.log_type)
                else:
                    self._dead_letter(msg, INTERNAL_ERROR, f"transform returned {type(result).__name__}")
        except BatchAborted as exc:
            ledger.fetched_unhandled(messages[index + 1:])
            self.runtime.metrics.add("consumed", consumed)
            output.abort(time.monotonic() + self.transaction_seconds)
            self._after_abort(str(exc), RewindTo.FIRST)
            return
        self.runtime.metrics.add("consumed", consumed)
        batch.count += consumed
        batch.accepted += accepted
        ledger.handled()
        output.poll()

    def _oversized(self, msg: Message, result: Accepted) -> bool:
        """A document over the hot path's limit: dead-lettered when it is over a known limit, else produced
        alone to learn whether the output topic takes it (normalizer/size_guard.py). True when produced.

        BatchAborted when the broker refused it alone: the replay dead-letters it."""
        size, sizes = len(result.value), self.sizes
        if size > self.output_limit:
            self._dead_letter(msg, OUTPUT_TOO_LARGE, f"normalized document of {size} bytes exceeds the "
                              f"{self.output_limit} bytes {self.output_topic} accepts", result.log_type)
            return False
        if size >= sizes.output_refused:
            self._dead_letter(msg, MSG_SIZE_TOO_LARGE, f"normalized document of {size} bytes; {self.output_topic} "
                              f"refused one of {sizes.output_refused} bytes as too large", result.log_type)
            return False
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        headers = output_headers(result.log_type.encode(), topic.encode(), b"%d" % partition, offset)
        if self.output.produce_alone(self.output_topic, result.value, result.key, headers):
            sizes.output_accepted_alone(size)
            return True
        sizes.output_refused_alone(size)
        raise BatchAborted(f"{self.output_topic} refused a {size}-byte document ({topic}[{partition}]@{offset}) "
                           f"as {MSG_SIZE_TOO_LARGE}; the replay dead-letters it")

    def _dead_letter(self, msg: Message, reason: str, detail: str, log_type: str = "") -> None:
        """Produce the record's dead letter; one the dead-letter topic may find too large goes alone, and if
        it is refused, the replay cuts it shorter (normalizer/size_guard.py)."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        ts_type, ts = msg.timestamp()
        sizes = self.sizes
        letter = dead_letter(key=msg.key(), value=msg.value(), original_headers=msg.headers(), reason=reason,
                             detail=detail, topic=topic, partition=partition, offset=offset,
                             timestamp_ms=ts if ts_type != 0 else None,
                             max_value_bytes=sizes.dlq_value_limit(self.dlq_limit))
        size = len(letter.value or b"")
        if size < sizes.dlq_suspect:
            self.output.produce(self.dlq_topic, letter.value, letter.key, letter.headers)
        elif self.output.produce_alone(self.dlq_topic, letter.value, letter.key, letter.headers):
            sizes.dlq_accepted_alone(size)
        else:
            try:
                sizes.dlq_refused_alone(size)
            except DeadLetterRefused as exc:
                self.output.refusals.append(str(exc))
            raise BatchAborted(f"{self.dlq_topic} refused a {size}-byte dead letter ({topic}[{partition}]@{offset}) "
                               f"as {MSG_SIZE_TOO_LARGE}")
        self.batch.reject(reason, detail, f"{topic}[{partition}]@{offset}", log_type, msg.value())

    def _consume_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
            return
        if err.fatal():
            raise FatalKafkaError(f"consumer: {err.name()}: {err.str()}")
        text = f"{err.name()}: {err.str()}"
        last_text, last_at = self._last_consume_error
        if text != last_text or time.monotonic() - last_at > TOPIC_WAIT_LOG_SECONDS:
            log.warning("consumer: %s", text)
            self.runtime.metrics.error(f"consumer: {text}")
            self._last_consume_error = (text, time.monotonic())

    # --- commit / abort ----------------------------------------------------------------------------
    def _commit(self, deadline: float, abort_deadline: float, claims: list[TopicPartition] | None = None) -> bool:
        """Make the batch durable with its offsets (and `claims`, offsets committed unchanged to record this
        instance as their owner); False when it was aborted and rewound instead."""
        batch = self.batch
        if not batch and not claims:
            return True
        if claims:
            self.output.begin()
        offsets = self.ledger.offsets(self.consumer, self._owner_metadata) if batch else []
        try:
            self.output.commit(self.consumer, offsets + (claims or []), deadline, abort_deadline)
        except BatchAborted as exc:
            return self._after_abort(str(exc), RewindTo.COMMITTED if exc.in_doubt else RewindTo.FIRST)
        self._committed()
        return True

    def _committed(self) -> None:
        """The batch is durable: count it."""
        batch = self.batch
        metrics = self.runtime.metrics
        metrics.add("transactions")
        metrics.add("produced", batch.accepted)
        metrics.log_types("in", batch.types + batch.reject_types)
        metrics.log_types("out", batch.types)
        detailed: Counter[str] = Counter()
        for reject in batch.rejects:
            metrics.reject(reject.reason, reject.detail, reject.source, log_type=reject.log_type, raw=reject.head)
            detailed[reject.log_type] += 1
        unrecorded = sum(batch.reasons.values()) - len(batch.rejects)
        if unrecorded > 0:
            metrics.add("rejected", unrecorded)
            metrics.log_types("rejected", batch.reject_types - detailed)
        self.commits += 1
        self.last_commit_at = time.time()
        self.runtime.broker_ok()
        if batch and self._refused_backoff:
            self._refused_backoff = 0.0
            log.info("writes accepted again")
            if self.runtime.state == "degraded" and self.runtime.reason.startswith(REFUSED):
                self.runtime.set_state("ok")
        self.ledger.committed()
        batch.clear()

    def _after_abort(self, why: str, to: RewindTo) -> bool:
        """Rewind every still-assigned partition of the batch (the ledger decides where, from `to`).

        True when the broker's committed offsets show the batch committed after all (a replaced producer's
        transaction completed by its successor): it is counted, and nothing is redone."""
        self.sizes.learn(self.output.take_size_failures())
        refusals = self.output.take_refusals()
        rewound = self.ledger.rewind(self.consumer, to, self._read_committed)
        if refusals:
            self._writes_refused(refusals)
        if rewound.batch_committed:
            log.warning("batch of %d records committed after all (%s); continuing after it", self.batch.count,
                        why)
            self._committed()
            return True
        self.aborts += 1
        self.runtime.metrics.add("aborts")
        self.runtime.metrics.error(f"batch aborted: {why}")
        log.warning("batch of %d records aborted (%s); rewinding %d partitions to the %s offsets",
                    self.batch.count, why, len(rewound.points), to.value)
        self.batch.clear()
        return False

    def _writes_refused(self, refusals: list[str]) -> None:
        """The broker refuses our writes for good (no permission on a topic, a dead-letter topic too small
        for any dead letter): not ready, with the reason, and the batch is retried with backoff instead of at
        once. Nothing is committed past it, and the service does not exit (a restart would change nothing)."""
        self._refused_backoff = min(REFUSED_BACKOFF_MAX, max(1.0, self._refused_backoff * 2))
        self._retry_at = time.monotonic() + self._refused_backoff
        reason = f"{REFUSED} (output {self.output_topic}, dead letters {self.dlq_topic}): {refusals[0]}"[:500]
        if self.runtime.reason != reason:
            log.error("%s; retrying every %.0fs at most", reason, REFUSED_BACKOFF_MAX)
            self.runtime.metrics.error(reason)
        self.runtime.set_state("degraded", reason)

    def _stopping(self) -> bool:
        return self._stop_deadline is not None and time.monotonic() >= self._stop_deadline

    # --- rebalance ---------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the partitions; exactly-once: fence their dead previous owner and claim them before any of
        their records is fetched (the fetch starts after this callback returns)."""
        self.runtime.metrics.add("rebalances")
        added = [(tp.topic, tp.partition) for tp in partitions]
        self.ledger.assign(added)
        self.runtime.set_assignment(self.assigned)
        log.info("partitions assigned", extra={"context": {
            "added": _names(partitions), "now": len(self.assigned)}})
        if self._fence is not None and added and not self._fatal:
            try:
                self._take_over(consumer, added)
            except FatalKafkaError as exc:
                self._fatal = str(exc)

    def _take_over(self, consumer: Consumer, added: list[TopicPartitionKey]) -> None:
        assert self._fence is not None
        client_id = str(self._consumer_conf().get("client.id", ""))
        self._owner_metadata = Owner(self.transactional_id, consumer.memberid() or "", client_id).encode()
        fenced = self._fence.fence_dead_owners(added)
        assert self._group_offsets is not None
        try:  # stable offsets: after the fence, no dead owner's transaction holds them any more
            committed = self._group_offsets.read(added, CLAIM_READ_SECONDS)
        except KafkaException as exc:
            log.warning("not claiming %d partitions: their committed offsets are unknown (%s)", len(added),
                        describe(exc))
            return
        claims = [TopicPartition(tp.topic, tp.partition, tp.offset, self._owner_metadata) for tp in committed
                  if tp.offset >= 0]
        deadline = time.monotonic() + min(REVOKE_BUDGET_SECONDS, self.transaction_seconds)
        if self._stop_deadline is not None:
            deadline = min(deadline, self._stop_deadline)
        claimed = bool(claims) and self._commit(deadline, deadline + REVOKE_BUDGET_SECONDS, claims)
        log.info("ownership taken", extra={"context": {"fenced": fenced, "claimed": len(claims) if claimed else 0}})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit the open batch (or abort and rewind it) before the partitions move to another member."""
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self.ledger.leaving(revoked)  # a failed commit rewinds only the partitions kept
        if self.batch and not self._fatal:
            deadline = time.monotonic() + min(REVOKE_BUDGET_SECONDS, self.transaction_seconds)
            if self._stop_deadline is not None:
                deadline = min(deadline, self._stop_deadline)
            try:
                self._commit(deadline, deadline + REVOKE_BUDGET_SECONDS)
            except FatalKafkaError as exc:
                self._fatal = str(exc)
        self._drop(revoked)
        log.info("partitions revoked", extra={"context": {"removed": _names(partitions), "now": len(self.assigned)}})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Another member may own these already: commit nothing of them, abort the batch."""
        lost = [(tp.topic, tp.partition) for tp in partitions]
        self.ledger.leaving(lost)
        if self.batch and not self._fatal:
            try:
                self.output.abort(time.monotonic() + self.transaction_seconds)
                self._after_abort("partitions lost", RewindTo.FIRST)
            except FatalKafkaError as exc:
                self._fatal = str(exc)
        self._drop(lost)
        log.warning("partitions lost", extra={"context": {"lost": _names(partitions), "now": len(self.assigned)}})

    def _drop(self, partitions: list[TopicPartitionKey]) -> None:
        self.ledger.release(partitions)
        for tp in partitions:
            self._tp_bytes.pop(tp, None)
        self.runtime.set_assignment(self.assigned)

    # --- shutdown ----------------------------------------------------------------------------------
    def _shutdown(self) -> int:
        """Stop fetching, finish the batch, commit, close; the stop deadline bounds the whole of it."""
        deadline = self._begin_stop()
        log.info("stopping: committing the open batch", extra={"context": {"records": self.batch.count}})
        self._commit(deadline, deadline)
        return 0

    def _watch_stop(self) -> None:
        """From the signal on, the clock runs: every wait in the loop, the commit and the close respect it."""
        self.runtime.stop_event.wait()
        self._begin_stop()

    def _begin_stop(self) -> float:
        """Set the stop deadline once (70% of shutdown_timeout for the work, the rest for closing) and arm a
        watchdog that exits at shutdown_timeout whatever still blocks."""
        with self._stop_lock:
            if self._stop_deadline is None:
                started = time.monotonic()
                self._stop_deadline = started + self.shutdown_seconds * 0.7

                def expire() -> None:
                    log.error("shutdown did not finish within %.0fs; exiting", self.shutdown_seconds)
                    logging.shutdown()
                    os._exit(0 if not self.batch and not self._fatal else 1)

                timer = threading.Timer(self.shutdown_seconds, expire)
                timer.daemon = True
                timer.start()
            return self._stop_deadline

    def _close(self, code: int) -> None:
        self._begin_stop()
        assert self._stop_deadline is not None
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group; the revoke callback finds no open batch
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.warning("consumer close: %s", describe(exc))
        for reader in (self._fence, self._group_offsets):
            if reader is not None:
                reader.close()
        if self._output is not None and code == 0:
            self._output.close(max(0.5, self._stop_deadline - time.monotonic()))
        log.info("stopped", extra={"context": {"commits": self.commits, "aborts": self.aborts, "exit": code}})

    # --- observability -----------------------------------------------------------------------------
    def _observe(self, now: float) -> None:
        self._next_lag = now + LAG_SECONDS
        metrics = self.runtime.metrics
        if self._output is not None:
            metrics.set_buffer(min(100.0, 100.0 * self.output.queue_length() / max(1, self._queue_max)))
        if self._consumer is None:
            return
        for topic, partition in list(self.assigned):
            position = self.ledger.positions.get((topic, partition))
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if position is not None and high >= 0:
                metrics.set_lag(topic, partition, max(0, high - position))
        if not self.runtime.broker_reachable:
            try:
                self.consumer.list_topics(self.input_topic, timeout=1)
                self.runtime.broker_ok()
            except KafkaException:
                pass

    def _status_extra(self) -> dict[str, Any]:
        return {
            "processing_guarantee": self.guarantee,
            "transactional_id": self.transactional_id if self.guarantee == "exactly_once" else None,
            "input_topic": self.input_topic,
            "output_topic": self.output_topic,
            "dlq_topic": self.dlq_topic,
            "batch_size": self.policy.max_records,
            "open_batch": self.batch.count,
            "commits": self.commits,
            "aborts": self.aborts,
            "last_commit_at": self.last_commit_at,
            "backpressure_waits": self._output.backpressure_waits if self._output else 0,
        }

    def _health_extra(self) -> dict[str, Any]:
        return {"commits": self.commits, "aborts": self.aborts}


def _names(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions[:20]) + (
        f",+{len(partitions) - 20}" if len(partitions) > 20 else "")
