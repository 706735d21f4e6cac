"""The normalized layer: promotions and static fields of config/normalization.json, compiled per log type.

A rule compiles once into a `TypePlan` whose `normalize` is a function generated for that log type:
straight-line code, one `record.get` per field, to_us's float and ISO cases inlined, no loop, rule lookup or
tuple unpacking per promotion (part of the transform's CPU cut, bench/README.md;
tests/unit/test_transform_golden.py holds the output to the loop's that it replaced). Promoted values are checked
against their canonical field: a Zeek time (ts, or any field schema.json types `time`) becomes ms since
the epoch; a `*_ip` target takes a non-empty string; a `*_port` target an integer 0-65535. A value that
does not fit stays in `raw` only (it is never lost), except an unparsable time, which rejects the record
("invalid_time"): every Zeek time field is checked, promoted or not.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from zeek_pipeline.core.decode import INVALID_TIME, Rejected
from zeek_pipeline.core.rules import LogTypeRule, NormalizationRules
from zeek_pipeline.core.timefmt import EXACT_FLOAT_SECONDS, iso_to_us, to_us

PLAIN, TIME, IP, PORT = 0, 1, 2, 3
UNKNOWN_LOG = "$unknown_log"  # time_fields key for log types without their own entry
_MAX_PLANS = 5_000

Normalized = tuple[dict[str, Any], int | None] | Rejected
NormalizeFn = Callable[[dict[str, Any], Any, int], Normalized]  # (record, _write_ts, ingest ms)


class TypePlan:
    """Everything the hot path needs about one log type, precomputed."""

    __slots__ = ("default_protocol", "enrich_network", "enrich_time", "ip_promotions", "key_fields", "log_type",
                 "normalize", "plain_promotions", "port_promotions", "service", "service_field", "source", "static",
                 "time_checks", "time_promotions", "zeek_locality")

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
        self.source = _normalize_source(self)
        self.normalize: NormalizeFn = _compile(self.source, self.static)


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

    def normalize(self, plan: TypePlan, record: dict[str, Any], write_ts: Any, ingest_ms: int) -> Normalized:
        """(normalized layer, event time in ms or None), or Rejected(invalid_time)."""
        return plan.normalize(record, write_ts, ingest_ms)


def _time_us(name: str, indent: str) -> list[str]:
    """Lines that set `us` from `value` (not None), or return the reject; to_us's float and ISO cases inlined."""
    return [f"{indent}if type(value) is float and -{EXACT_FLOAT_SECONDS!r} < value < {EXACT_FLOAT_SECONDS!r}:",
            f"{indent}    us = round(value * 1_000_000)",
            f"{indent}else:",  # to_us's ISO case called directly
            f"{indent}    us = (iso_to_us(value) if type(value) is str and len(value) >= 16 and value[4] == '-'",
            f"{indent}          else to_us(value))",
            f"{indent}    if us is None:",
            f"{indent}        return bad_time({name!r}, value)"]


def _normalize_source(plan: TypePlan) -> str:
    """The Python source of `plan.normalize`: times, addresses, ports, the other promotions (each group in
    file order), the unpromoted time checks, ingest_time, the static fields, zeek_write_ts.

    Field names enter the source only as repr() literals."""
    lines = ["def normalize(record, write_ts, ingest_ms):",
             "    get = record.get",
             "    normalized = {}",
             "    event_ms = None"]
    for raw, target in plan.time_promotions:
        lines += [f"    value = get({raw!r})", "    if value is not None:", *_time_us(raw, "        ")]
        lines.append(f"        normalized[{target!r}] = {'event_ms = ' if target == 'event_time' else ''}us // 1000")
    for raw, target in plan.ip_promotions:
        lines += [f"    value = get({raw!r})", "    if type(value) is str and value:",
                  f"        normalized[{target!r}] = value"]
    for raw, target in plan.port_promotions:
        lines += [f"    value = get({raw!r})", "    if type(value) is int and 0 <= value <= 65535:",
                  f"        normalized[{target!r}] = value"]
    for raw, target in plan.plain_promotions:
        lines += [f"    value = get({raw!r})", "    if value is not None:", f"        normalized[{target!r}] = value"]
    for name in plan.time_checks:
        lines += [f"    value = get({name!r})",
                  "    if value is not None and not (type(value) is float and "
                  f"-{EXACT_FLOAT_SECONDS!r} < value < {EXACT_FLOAT_SECONDS!r}) and to_us(value) is None:",
                  f"        return bad_time({name!r}, value)"]
    lines.append("    normalized['ingest_time'] = ingest_ms")
    if plan.static:
        lines.append("    normalized.update(static)")
    lines += ["    if write_ts is not None:", "        value = write_ts", *_time_us("_write_ts", "        "),
              "        normalized['zeek_write_ts'] = us // 1000",
              "    return normalized, event_ms"]
    return "\n".join(lines) + "\n"


def _compile(source: str, static: dict[str, Any]) -> NormalizeFn:
    namespace: dict[str, Any] = {"to_us": to_us, "iso_to_us": iso_to_us, "bad_time": _bad_time, "static": static}
    exec(compile(source, "<normalize plan>", "exec"), namespace)  # noqa: S102 - our own source, names as literals
    return namespace["normalize"]  # type: ignore[no-any-return]


def _bad_time(field: str, value: Any) -> Rejected:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return Rejected(INVALID_TIME, f"{field}={shown} is not a Zeek time (epoch seconds or ISO 8601)")
