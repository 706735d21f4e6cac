"""Lag-based autoscaling: a pure decision function and a small confluent-kafka adapter that reads the lag.

Rules (docs/operator.md, "Autoscaling"):
- wanted = ceil(lag / targetLagPerReplica), clamped to [minReplicas, min(maxReplicas, partitions)]; more
  consumers than partitions would sit idle, so the partition count wins over minReplicas too;
- scale-up goes to `wanted`; scale-down needs the lag to fit the smaller count with 10 % headroom
  (hysteresis), so a lag hovering at a boundary does not flip the count back and forth;
- any change waits `cooldownSeconds` after the previous change of that component, except a count outside
  the bounds (maxReplicas lowered, partitions removed), which is corrected at once;
- an unknown lag (broker unreachable) changes nothing.

The parquet-writer is scaled on its *backlog*, not its raw lag: it commits only after a flush, so even a
writer that keeps up shows a lag of about input rate x flush interval. `writer_backlog` subtracts that
(the rate measured from the normalized topic's end offsets between two ticks), so only falling behind
adds replicas; a raw-lag writer sat at maxReplicas for good.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from zeek_operator.spec import Autoscaling, FlushSpec, PipelineSpec

SCALE_DOWN_HEADROOM = 0.1
# Seconds of input a keeping-up writer may also hold beyond its flush interval: the flush itself (typing,
# encoding, upload, commit) and the gap until the next poll.
FLUSH_SLACK_SECONDS = 10.0

Direction = Literal["up", "down", "hold"]


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    target_lag_per_replica: int
    cooldown_seconds: float

    @classmethod
    def from_spec(cls, spec: Autoscaling) -> Policy:
        return cls(spec.min_replicas, spec.max_replicas, spec.target_lag_per_replica, spec.cooldown_seconds)


@dataclass(frozen=True)
class Decision:
    replicas: int
    direction: Direction
    reason: str

    @property
    def changed(self) -> bool:
        return self.direction != "hold"


def bounds(policy: Policy, partitions: int | None) -> tuple[int, int, str]:
    """(lower, upper, what caps upper): partitions cap both, since extra consumers get no partition."""
    upper, cap = policy.max_replicas, f"maxReplicas {policy.max_replicas}"
    if partitions is not None and 0 < partitions < upper:
        upper, cap = partitions, f"{partitions} partitions"
    lower = min(policy.min_replicas, upper)
    return lower, upper, cap


@dataclass(frozen=True)
class Backlog:
    """The writer's lag minus what its flushing explains (None when the input rate is not known yet)."""

    value: int | None
    rate: float | None
    explained: int
    reason: str


def input_rate(previous_end: int | None, previous_time: float | None, end: int, now: float) -> float | None:
    """Messages per second arriving on a topic, from two readings of its summed end offsets."""
    if previous_end is None or previous_time is None or now <= previous_time or end < previous_end:
        return None  # first reading, clock or topic reset (recreated topic): measure again next tick
    return (end - previous_end) / (now - previous_time)


def writer_backlog(lag: int, partitions: int, rate: float | None, flush: FlushSpec) -> Backlog:
    """What a writer that keeps up would not have: lag - rate x (flush interval + slack), at least 0.

    A flush by event count holds up to eventCount messages per partition, so that much is explained too.
    (A flush by size alone is not converted: message sizes are unknown here.)
    """
    if rate is None:
        return Backlog(None, None, 0, f"lag {lag}, input rate not measured yet")
    window = (flush.interval_seconds + FLUSH_SLACK_SECONDS) if flush.interval_seconds else FLUSH_SLACK_SECONDS
    explained = max(math.ceil(rate * window), flush.event_count * partitions if flush.event_count else 0)
    value = max(0, lag - explained)
    return Backlog(value, rate, explained, f"lag {lag} - {explained} held by flushing "
                                          f"({rate:.0f}/s x {window:.0f}s) = backlog {value}")


def decide(
    *,
    current: int,
    lag: int | None,
    partitions: int | None,
    policy: Policy,
    last_scale: float | None,
    now: float,
    signal: str = "lag",
) -> Decision:
    """The replica count one component should have, and why (for the event and the status).

    `lag` is the scaling signal (the writer passes its backlog, `signal` names it in the reason)."""
    lower, upper, cap = bounds(policy, partitions)
    if current < lower or current > upper:
        target = min(max(current, lower), upper)
        limit = f"minReplicas {policy.min_replicas}" if current < lower else cap
        return Decision(target, "up" if target > current else "down",
                        f"{current} replicas is outside the bounds [{lower}, {upper}] ({limit})")
    if lag is None:
        return Decision(current, "hold", f"{signal} unknown: keeping the current count")
    wanted_raw = math.ceil(lag / policy.target_lag_per_replica)
    wanted = min(max(wanted_raw, lower), upper)
    detail = f"{signal} {lag}, target {policy.target_lag_per_replica}/replica -> {wanted_raw}"
    if wanted_raw > upper:
        detail += f", capped by {cap}"
    elif wanted_raw < lower:
        detail += f", raised to minReplicas {lower}"
    if wanted > current:
        direction: Direction = "up"
    else:
        headroom = policy.target_lag_per_replica * (1 - SCALE_DOWN_HEADROOM)
        wanted = min(max(math.ceil(lag / headroom), lower), upper)
        if wanted >= current:
            return Decision(current, "hold", f"{detail}: {current} replicas fit")
        direction = "down"
    remaining = 0.0 if last_scale is None else policy.cooldown_seconds - (now - last_scale)
    if remaining > 0:
        return Decision(current, "hold",
                        f"{detail}: would scale {direction} to {wanted}, cooling down for {remaining:.0f}s more")
    return Decision(wanted, direction, f"{detail}: scaling {direction} from {current} to {wanted}")


# ------------------------------------------------------------------------------------------- Kafka side


class LagError(RuntimeError):
    """The lag could not be read (broker unreachable, topic missing); the message says which."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partitions: int
    lag: int
    per_partition: dict[int, int]
    end_offsets: int = 0  # summed read_committed end offsets: their growth between ticks is the input rate


def admin_config(spec: PipelineSpec, secrets: Mapping[str, Mapping[str, str]], *,
                 output: bool = False) -> dict[str, Any]:
    """librdkafka settings for the operator's own AdminClient: the pipeline's brokers and security.

    secrets: Secret name -> decoded data, for the Secrets the spec references. TLS material is passed
    inline (`ssl.*.pem`), so the operator never writes key files. output: the output cluster's brokers
    (spec.kafka.outputBootstrapServers, default the same), where the writer's group lives.
    """
    security = spec.kafka.security
    brokers = (output and spec.kafka.output_bootstrap_servers) or spec.kafka.bootstrap_servers
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(brokers),
        "client.id": "zeek-operator",
        "security.protocol": security.protocol,
        "socket.timeout.ms": 10_000,
        # Connection failures surface as LagError in the status; librdkafka's own retry chatter is muted.
        "log_level": 2,
    }
    if security.sasl is not None:
        data = secrets.get(security.sasl.secret_ref.name, {})
        conf["sasl.mechanism"] = security.sasl.mechanism
        conf["sasl.username"] = data.get(security.sasl.username_key, "")
        conf["sasl.password"] = data.get(security.sasl.password_key, "")
    if security.tls is not None:
        data = secrets.get(security.tls.secret_ref.name, {})
        if security.tls.ca_key in data:
            conf["ssl.ca.pem"] = data[security.tls.ca_key]
        if security.tls.cert_key and security.tls.key_key:
            conf["ssl.certificate.pem"] = data.get(security.tls.cert_key, "")
            conf["ssl.key.pem"] = data.get(security.tls.key_key, "")
    for key, value in spec.kafka.librdkafka.items():
        conf.setdefault(key, value)
    return conf


class LagReader:
    """Consumer-group lag from the broker: end offsets (read_committed) minus committed offsets.

    The committed offsets are read the way the health service reads them (`CommittedOffsets`), never with
    AdminClient.list_consumer_group_offsets, which can crash librdkafka on NOT_COORDINATOR (librdkafka#5040)
    and would take the operator down with it.
    """

    def __init__(self, conf: Mapping[str, Any], timeout: float = 10.0) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        from zeek_pipeline.kafka.offsets import CommittedOffsets

        try:
            self._admin = AdminClient(dict(conf))
            self._committed = CommittedOffsets(conf)
        except KafkaException as exc:  # e.g. ssl.ca.pem that is not PEM: no client exists to retry with
            error = exc.args[0] if exc.args else exc
            message = error.str() if hasattr(error, "str") else str(error)
            raise LagError(f"cannot create a Kafka client from the pipeline's settings: {message}") from exc
        self._timeout = timeout

    def close(self) -> None:
        self._committed.close()

    def partitions(self, topic: str) -> list[int]:
        from confluent_kafka import KafkaException

        try:
            metadata = self._admin.list_topics(topic, timeout=self._timeout)
        except KafkaException as exc:
            raise LagError(f"cannot reach the brokers for topic {topic}: {exc}", unreachable=True) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            reason = found.error if found is not None and found.error is not None else "missing"
            raise LagError(f"topic {topic}: {reason}")
        return sorted(found.partitions)

    def read(self, group: str, topic: str) -> GroupLag:
        from confluent_kafka import IsolationLevel, KafkaException, TopicPartition

        OffsetSpec: Any = importlib.import_module("confluent_kafka.admin").OffsetSpec  # noqa: N806

        partitions = self.partitions(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        try:
            committed = {partition: -1 if offset is None else offset for (_, partition), offset
                         in self._committed.read(group, tps, self._timeout).items()}
            ends = self._offsets(tps, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED)
            uncommitted = [tp for tp in tps if committed.get(tp.partition, -1) < 0]
            starts = self._offsets(uncommitted, OffsetSpec.earliest(), IsolationLevel.READ_COMMITTED) \
                if uncommitted else {}
        except KafkaException as exc:
            raise LagError(f"group {group} on {topic}: {exc}") from exc
        per_partition = {}
        for p in partitions:
            position = committed.get(p, -1)
            if position < 0:  # nothing committed yet: the group would start at the beginning
                position = starts.get(p, 0)
            per_partition[p] = max(0, ends.get(p, 0) - position)
        return GroupLag(group, topic, len(partitions), sum(per_partition.values()), per_partition,
                        sum(ends.get(p, 0) for p in partitions))

    def _offsets(self, tps: list[Any], spec: Any, isolation: Any) -> dict[int, int]:
        futures = self._admin.list_offsets(dict.fromkeys(tps, spec), isolation_level=isolation,
                                           request_timeout=self._timeout)
        return {tp.partition: int(future.result(self._timeout).offset) for tp, future in futures.items()}
