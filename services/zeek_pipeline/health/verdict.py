"""The rules that turn status records, lag and activity into instance states and one pipeline verdict.

Pure functions of their inputs and a clock, so every rule is tested without Kafka. Severity: "down" beats
"degraded" beats "ok"; "info" reasons are shown without changing the verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from zeek_pipeline.health.models import (
    Component,
    Health,
    KafkaState,
    Lag,
    Reason,
    Severity,
    StatusChannel,
    Verdict,
    VerdictState,
)
from zeek_pipeline.runtime.status import StatusRecord

DOWN_AFTER_INTERVALS = 3
STALE_AFTER_SECONDS = 3600.0  # a down instance replaced by a live one stops counting after this
FUTURE_TOLERANCE_SECONDS = 60.0
LAG_GROWING_ALERT_SECONDS = 300.0
REJECT_RATE_ALERT = 0.01
REJECT_MIN_EVENTS = 100
BUFFER_ALERT_PCT = 90.0
EXPECTED_COMPONENTS = ("normalizer-enricher", "parquet-writer")
LIVE: tuple[Health, ...] = ("ok", "degraded")


@dataclass(frozen=True)
class Activity:
    """What one component did over a window, from the health service's own history of status totals."""

    component: str
    window_seconds: float
    consumed: int
    rejected: int
    errors: int
    since_start: bool = False  # True when the history is too short and totals since start were used
    last_error: str | None = None

    @property
    def basis(self) -> str:
        return "since start" if self.since_start else f"over {duration(self.window_seconds)}"


def duration(seconds: float) -> str:
    """95 s, 5 min, 3 h: what a person reads at a glance."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86_400:.0f} d"


def judge_instance(record: StatusRecord, now: float) -> tuple[Health, str]:
    """An instance is down when its heartbeat is older than 3 of its own intervals, whatever it last said."""
    age = now - record.heartbeat_at
    limit = DOWN_AFTER_INTERVALS * record.interval_seconds
    if record.state == "stopped":
        return "stopped", f"stopped cleanly{': ' + record.reason if record.reason else ''}"
    if age > limit:
        return "down", f"no heartbeat for {duration(age)} (down after {duration(limit)})"
    if age < -FUTURE_TOLERANCE_SECONDS:
        return "degraded", f"heartbeat is {duration(-age)} in the future (clock skew?)"
    if record.state == "ok":
        return "ok", ""
    if record.state == "degraded":
        return "degraded", record.reason or "degraded"
    return "degraded", record.state + (f": {record.reason}" if record.reason else "")


def _labels(components: Sequence[Component]) -> dict[str, str]:
    """The component name when it has one instance, else component/instance."""
    per_component = Counter(c.component for c in components)
    return {c.key: c.component if per_component[c.component] == 1 else c.key for c in components}


def _component_reasons(components: Sequence[Component]) -> list[Reason]:
    reasons: list[Reason] = []
    labels = _labels(components)
    live = {c.component for c in components if c.state in LIVE}
    for c in components:
        label = labels[c.key]
        if c.state == "down":
            silent = c.heartbeat_age_seconds or 0.0
            replaced = c.component in live and silent > STALE_AFTER_SECONDS
            reasons.append(Reason(severity="info" if replaced else "degraded", subject=c.key,
                                  text=f"{label} no heartbeat for {duration(silent)}"
                                       + (" (replaced by a live instance)" if replaced else "")))
        elif c.state == "degraded":
            reasons.append(Reason(severity="degraded", subject=c.key, text=f"{label}: {c.reason}"))
        elif c.state == "stopped" and c.component not in live:
            severity: Severity = "degraded" if c.component in EXPECTED_COMPONENTS else "info"
            reasons.append(Reason(severity=severity, subject=c.key, text=f"{label} stopped"))
        if c.state in LIVE and c.buffer_pct is not None and c.buffer_pct >= BUFFER_ALERT_PCT:
            reasons.append(Reason(severity="degraded", subject=c.key,
                                  text=f"{label} buffer {c.buffer_pct:.0f} % full"))
    return reasons


def _activity_reasons(activity: Sequence[Activity]) -> list[Reason]:
    reasons: list[Reason] = []
    for a in activity:
        if a.consumed >= REJECT_MIN_EVENTS and a.rejected / a.consumed >= REJECT_RATE_ALERT:
            rate = 100.0 * a.rejected / a.consumed
            reasons.append(Reason(severity="degraded", subject=a.component,
                                  text=f"{a.component} reject rate {rate:.1f} % {a.basis}"))
        if a.errors > 0 and not a.since_start:
            last = f" (last: {a.last_error})" if a.last_error else ""
            reasons.append(Reason(severity="degraded", subject=a.component,
                                  text=f"{a.component}: {a.errors} error(s) {a.basis}{last}"))
    return reasons


def _lag_reasons(lag: Lag) -> list[Reason]:
    reasons: list[Reason] = []
    for group in lag.groups:
        if group.error:
            reasons.append(Reason(severity="info", subject=group.group, text=f"{group.group}: {group.error}"))
        for topic in group.topics:
            if topic.growing_for_seconds <= 0 and topic.trend != "growing":
                continue
            behind = f", {topic.lag} behind" if topic.lag is not None else ""
            alert = topic.growing_for_seconds >= LAG_GROWING_ALERT_SECONDS
            since = f" for {duration(topic.growing_for_seconds)}" if topic.growing_for_seconds >= 1 else ""
            # Said even below the alert threshold, so the verdict never contradicts the lag table.
            reasons.append(Reason(
                severity="degraded" if alert else "info", subject=topic.topic,
                text=f"lag on {topic.topic} growing{since} ({group.role}{behind})"
                     + ("" if alert else f"; degraded after {duration(LAG_GROWING_ALERT_SECONDS)}")))
    return reasons


def pipeline_verdict(components: Sequence[Component], kafka: KafkaState, status: StatusChannel, lag: Lag,
                     activity: Sequence[Activity]) -> Verdict:
    reasons: list[Reason] = []
    if kafka.checked_at is None:
        reasons.append(Reason(severity="info", subject="kafka", text="Kafka not checked yet"))
    elif not kafka.reachable:
        reasons.append(Reason(severity="down", subject="kafka", text=kafka.error or "Kafka unreachable"))
    elif not status.reachable:
        reasons.append(Reason(severity="degraded", subject="status",
                              text=f"status topic {status.topic} unreadable: {status.error or 'unreachable'}"))
    elif status.error:
        reasons.append(Reason(severity="degraded", subject="status", text=status.error))
    reasons.extend(_component_reasons(components))
    present = {c.component for c in components}
    known = status.loaded and status.reachable  # else absence says nothing
    for expected in EXPECTED_COMPONENTS:
        if expected not in present:
            reasons.append(Reason(
                severity="degraded" if known else "info", subject=expected,
                text=f"no {expected} has reported on {status.topic}" if known
                else f"reading {status.topic}: no {expected} seen yet"))
    if status.loaded and components and not any(c.state in LIVE for c in components):
        reasons.append(Reason(severity="down", subject="pipeline", text="no component is running"))
    reasons.extend(_lag_reasons(lag))
    reasons.extend(_activity_reasons(activity))
    if status.problems:
        reasons.append(Reason(severity="info", subject="status",
                              text=f"{len(status.problems)} unusable status record(s), listed under problems"))
    order = {"down": 0, "degraded": 1, "info": 2}
    reasons.sort(key=lambda r: order[r.severity])
    state: VerdictState = "down" if any(r.severity == "down" for r in reasons) else (
        "degraded" if any(r.severity == "degraded" for r in reasons) else "ok")
    return Verdict(state=state, reasons=reasons)
