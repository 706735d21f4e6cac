"""Response models for every route: the JSON API's contract and the source of its OpenAPI schema.

Every string that comes from a status record has already been clipped by the view builder; these models only
describe shapes. Numbers are finite (non-finite inputs become null upstream) so responses stay valid JSON.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Health = Literal["ok", "degraded", "down", "stopped"]
VerdictState = Literal["ok", "degraded", "down"]
Severity = Literal["info", "degraded", "down"]
Trend = Literal["growing", "shrinking", "steady", "unknown"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Reason(_Model):
    """One reason behind the verdict; `subject` says what it is about (an instance key, a topic, "kafka")."""

    severity: Severity
    subject: str
    text: str


class Verdict(_Model):
    state: VerdictState
    reasons: list[Reason]


class PartitionRef(_Model):
    topic: str
    partition: int


class Rates(_Model):
    in_eps: float = Field(description="events/s consumed over the instance's last minute")
    out_eps: float = Field(description="events/s produced or written over the instance's last minute")


class Component(_Model):
    """One instance as the health service judges it (its own reported state plus heartbeat age)."""

    key: str = Field(description="<component>/<instance>, the status record's key")
    component: str
    instance: str
    state: Health
    reason: str
    reported_state: str = Field(description="the state the instance reported in its last record")
    heartbeat_at: float | None
    heartbeat_age_seconds: float | None
    interval_seconds: float | None
    down_after_seconds: float | None = Field(description="3 x interval: silence longer than this means down")
    started_at: float | None
    uptime_seconds: float | None
    version: str
    config_hash: str
    rates: Rates
    totals: dict[str, int]
    rss_bytes: int | None
    buffer_pct: float | None
    assigned: list[PartitionRef]
    reject_reasons: dict[str, int]
    last_error: str | None


class ComponentList(_Model):
    generated_at: float
    components: list[Component]


class LagPartition(_Model):
    partition: int
    committed: int | None = Field(description="the group's committed offset; null when it has none")
    log_start: int | None
    high_watermark: int | None
    lag: int | None = Field(description="high watermark - committed (or - log start when nothing is committed)")
    trend: Trend


class LagTopic(_Model):
    topic: str
    lag: int | None
    trend: Trend
    growing_for_seconds: float = Field(description="how long the topic's total lag has risen without a dip")
    error: str | None
    partitions: list[LagPartition]


class LagGroup(_Model):
    group: str
    role: str = Field(description="the component that consumes with this group")
    state: str | None = Field(description="the consumer group's state as the broker reports it")
    members: int | None
    error: str | None
    topics: list[LagTopic]


class Lag(_Model):
    reachable: bool
    checked_at: float | None = Field(description="when the figures were read; null before the first read")
    error: str | None
    groups: list[LagGroup]


class ThroughputPoint(_Model):
    at: float
    in_eps: float
    out_eps: float


class Throughput(_Model):
    window_seconds: float
    in_label: str
    out_label: str
    points: list[ThroughputPoint]


class Problem(_Model):
    """A status record that could not be used; shown (escaped) so a broken or hostile producer is visible."""

    at: float
    key: str
    partition: int | None
    offset: int | None
    error: str


class StatusChannel(_Model):
    topic: str
    reachable: bool
    loaded: bool = Field(description="the topic was read up to its end at least once since start")
    error: str | None
    records_read: int
    malformed: int
    instances: int
    kept_bytes: int = Field(0, description="JSON bytes of the kept (trimmed) records, bounded by health.max_status_mb")
    forgotten: int = Field(0, description="instances expired (no heartbeat for health.forget_after_seconds) or "
                                          "evicted to stay within the bounds, since start")
    problems: list[Problem]


class KafkaState(_Model):
    bootstrap: str
    reachable: bool
    checked_at: float | None = Field(description="when the broker was last asked; null before the first check")
    brokers: int | None
    error: str | None


class Pipeline(_Model):
    """Everything the dashboard's header, cards and chart need, in one response."""

    generated_at: float
    verdict: Verdict
    unreachable: list[str] = Field(description="what the health service cannot reach right now")
    kafka: KafkaState
    status_channel: StatusChannel
    components: list[Component]
    throughput: Throughput
    refresh_seconds: float


class Reject(_Model):
    at: float | None
    component: str
    instance: str
    reason: str
    detail: str
    source: str
    log_type: str = Field("", description="the Zeek log type when it could be read, else empty")
    preview: str = Field("", description="the first bytes of the original message, non-printables escaped")


class Rejects(_Model):
    generated_at: float
    total: int = Field(description="rejected records over all live records' totals")
    by_reason: dict[str, int]
    recent: list[Reject]


class FileWritten(_Model):
    at: float | None
    component: str
    instance: str
    path: str
    log_type: str
    rows: int | None
    bytes: int | None


class Files(_Model):
    generated_at: float
    recent: list[FileWritten]


class FlowPoint(_Model):
    at: float
    in_eps: float
    out_eps: float
    rejected_eps: float


class FlowRow(_Model):
    """One Zeek log type: totals since the live instances started, rates over the last minute, and a series."""

    log_type: str
    in_total: int = Field(description="records the normalizer read with this type")
    out_total: int = Field(description="rows the writer wrote (the normalizer's output when no writer reports)")
    rejected_total: int = Field(description="records of this type sent to a dead-letter topic")
    in_eps: float
    out_eps: float
    rejected_eps: float
    points: list[FlowPoint] = Field(description="rates between the health service's samples, oldest first")


class Flows(_Model):
    generated_at: float
    window_seconds: float = Field(description="how far back `points` and the rates can reach")
    rows: list[FlowRow]


class LakeCell(_Model):
    hour: str = Field(description="event hour, YYYY-MM-DDTHH (UTC), the Hive partition")
    rows: int
    files: int
    bytes: int


class LakeRow(_Model):
    log_type: str
    rows: int
    files: int
    bytes: int
    hours: list[LakeCell]


class Lake(_Model):
    """What the running writers wrote per log type and event hour since they started (newest hours first)."""

    generated_at: float
    hours: list[str]
    rows: list[LakeRow]


class Config(_Model):
    """The effective settings with every secret replaced by a mask."""

    config_hash: str
    settings: dict[str, Any]


class Probe(_Model):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
