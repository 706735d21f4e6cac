"""The normalized layer: promotions and static fields of config/normalization.json, compiled per log type.

A rule compiles once into a `TypePlan` (tuples, no per-record rule lookups). Promoted values are checked
against their canonical field: a Zeek time (ts, or any field schema.json types `time`) becomes ms since
the epoch; a `*_ip` target takes a non-empty string; a `*_port` target an integer 0-65535. A value that
does not fit stays in `raw` only (it is never lost), except an unparsable time, which rejects the record
("invalid_time"): every Zeek time field is checked, promoted or not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from zeek_pipeline.core.decode import INVALID_TIME, Rejected
from zeek_pipeline.core.rules import LogTypeRule, NormalizationRules
from zeek_pipeline.core.timefmt import to_us

PLAIN, TIME, IP, PORT = 0, 1, 2, 3
UNKNOWN_LOG = "$unknown_log"  # time_fields key for log types without their own entry
_MAX_PLANS = 5_000


class TypePlan:
    """Everything the hot path needs about one log type, precomputed."""

    __slots__ = ("default_protocol", "enrich_network", "enrich_time", "ip_promotions", "key_fields", "log_type",
                 "plain_promotions", "port_promotions", "service", "service_field", "static", "time_checks",
                 "time_promotions", "zeek_locality")

    def __init__(self, log_type: str, rule: LogTypeRule, time_fields: Collection[str]) -> None:
        self.log_type = log_type
        promotions: list[tuple[str, str, int]] = []
        for raw, target in rule.promote.items():
            if target == "event_time" or raw in time_fields:
                kind = TIME
            elif target.endswith("_ip"):
                kind = IP
            elif target.endswith("_port"):
                kind = PORT
            else:
                kind = PLAIN
            promotions.append((raw, target, kind))
        # Grouped by kind so the per-record loops carry no type dispatch; the normalized layer lists times,
        # addresses, ports, then the other promotions, each group in file order.
        self.time_promotions = tuple((raw, target) for raw, target, kind in promotions if kind == TIME)
        self.ip_promotions = tuple((raw, target) for raw, target, kind in promotions if kind == IP)
        self.port_promotions = tuple((raw, target) for raw, target, kind in promotions if kind == PORT)
        self.plain_promotions = tuple((raw, target) for raw, target, kind in promotions if kind == PLAIN)
        promoted_times = {raw for raw, _ in self.time_promotions}
        # Zeek time fields that are not promoted are still validated; `ts` always is.
        self.time_checks = tuple(sorted(({"ts"} | set(time_fields)) - promoted_times))
        self.static: dict[str, Any] = {
            name: value.replace("{log_type}", log_type) if isinstance(value, str) else value
            for name, value in rule.static.items()
        }
        self.enrich_time = rule.enrich.time
        self.enrich_network = rule.enrich.network
        self.key_fields = tuple(rule.key)
        self.default_protocol = rule.default_protocol
        self.service = rule.service
        self.service_field = rule.service_field
        self.zeek_locality = rule.zeek_locality


class Normalizer:
    """Builds the normalized layer; `time_fields` is log type -> names of its Zeek `time` fields."""

    __slots__ = ("_rules", "_time_fields", "plans")

    def __init__(self, rules: NormalizationRules, time_fields: Mapping[str, Collection[str]] | None = None) -> None:
        self._rules = rules
        self._time_fields = {name: frozenset(fields) for name, fields in (time_fields or {}).items()}
        self.plans: dict[str, TypePlan] = {}  # log type -> its plan; `plan()` fills it, callers may read it

    def plan(self, log_type: str) -> TypePlan:
        plan = self.plans.get(log_type)
        if plan is None:
            times = self._time_fields.get(log_type)
            if times is None:
                times = self._time_fields.get(UNKNOWN_LOG, frozenset())
            plan = TypePlan(log_type, self._rules.rule_for(log_type), times)
            if len(self.plans) >= _MAX_PLANS:  # unknown types are unbounded in theory
                self.plans.clear()
            self.plans[log_type] = plan
        return plan

    def normalize(self, plan: TypePlan, record: dict[str, Any], write_ts: Any,
                  ingest_ms: int) -> tuple[dict[str, Any], int | None] | Rejected:
        """(normalized layer, event time in ms or None), or Rejected(invalid_time)."""
        get = record.get
        normalized: dict[str, Any] = {}
        event_ms: int | None = None
        for raw, target in plan.time_promotions:
            value = get(raw)
            if value is not None:
                us = to_us(value)
                if us is None:
                    return _bad_time(raw, value)
                normalized[target] = ms = us // 1000
                if target == "event_time":
                    event_ms = ms
        for raw, target in plan.ip_promotions:
            value = get(raw)
            if type(value) is str and value:
                normalized[target] = value
        for raw, target in plan.port_promotions:
            value = get(raw)
            if type(value) is int and 0 <= value <= 65535:
                normalized[target] = value
        for raw, target in plan.plain_promotions:
            value = get(raw)
            if value is not None:
                normalized[target] = value
        for name in plan.time_checks:
            value = get(name)
            if value is not None and to_us(value) is None:
                return _bad_time(name, value)
        normalized["ingest_time"] = ingest_ms
        if plan.static:
            normalized.update(plan.static)
        if write_ts is not None:
            us = to_us(write_ts)
            if us is None:
                return _bad_time("_write_ts", write_ts)
            normalized["zeek_write_ts"] = us // 1000
        return normalized, event_ms


def _bad_time(field: str, value: Any) -> Rejected:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return Rejected(INVALID_TIME, f"{field}={shown} is not a Zeek time (epoch seconds or ISO 8601)")
