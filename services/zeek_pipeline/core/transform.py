"""Message body -> three-layer JSON document (or a reject): the hot path of the normalizer and `normalize`.

    {"source": "zeek", "log_type": ..., "raw": {...}, "normalized": {...}, "enriched": {...}}

`Transformer.transform` never raises, whatever the bytes; every failure is a `Rejected` with a reason code
of core/decode.py. Per message it costs one orjson parse, a few dict operations driven by a per-type plan,
cached address/time lookups, one SHA-1 for the Community ID and one orjson dump.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from zeek_pipeline.core.decode import INTERNAL_ERROR, INVALID_JSON, Rejected, check_log_type, decode
from zeek_pipeline.core.enrich import Enricher
from zeek_pipeline.core.normalize import UNKNOWN_LOG, Normalizer
from zeek_pipeline.core.rules import ConfigError, EnrichSettings, NormalizationRules, load_rules, parse_enrich

__all__ = ["Accepted", "Rejected", "Transformer", "load_time_fields"]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~0.6 µs per record (object.__setattr__)
class Accepted:
    log_type: str
    key: bytes | None  # Kafka message key: the flow id (uid; fuid for files) or the Community ID
    value: bytes  # the three-layer document, orjson-serialised
    event_time_ms: int | None


class Transformer:
    """decode -> normalize -> enrich -> serialize, configured once."""

    def __init__(
        self,
        rules: NormalizationRules,
        enrich: EnrichSettings,
        *,
        key_field: Literal["uid", "community_id"] = "uid",
        topic_log_types: Mapping[str, str] | None = None,
        max_message_bytes: int = 8 * 1024 * 1024,
        time_fields: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """`time_fields` (log type -> its Zeek `time` fields, from schema.json) adds validation and ms
        conversion of promoted time fields beyond `ts`; `from_config_dir` fills it in."""
        self.rules = rules
        self.enrich_settings = enrich
        self._normalizer = Normalizer(rules, time_fields)
        self._enricher = Enricher(enrich)
        # Bound once: the hot path uses them for every record.
        self._plans = self._normalizer.plans
        self._enrich = self._enricher.enrich
        self._by_community_id = key_field == "community_id"
        self._topics = dict(topic_log_types or {})
        self._max = max_message_bytes

    @classmethod
    def from_config_dir(cls, config_dir: Path | str, **kw: Any) -> Transformer:
        """normalization.json, the "enrich" section of config.json (defaults when absent) and the time
        fields of schema.json (when present) from one config directory; raises ConfigError."""
        directory = Path(config_dir)
        rules = load_rules(directory / "normalization.json")
        enrich = kw.pop("enrich", None)
        if enrich is None:
            enrich = _load_enrich(directory / "config.json")
        if "time_fields" not in kw:
            kw["time_fields"] = load_time_fields(directory / "schema.json")
        return cls(rules, enrich, **kw)

    def transform(self, body: bytes | bytearray | memoryview, *, topic: str | None = None,
                  ingest_time_ms: int | None = None) -> Accepted | Rejected:
        try:
            decoded = decode(body, max_bytes=self._max,
                             topic_log_type=self._topics.get(topic) if topic is not None else None)
            if type(decoded) is Rejected:
                return decoded
            log_type, record, write_ts = decoded  # type: ignore[misc]
            return self._build(log_type, record, write_ts, ingest_time_ms)
        except Exception as exc:  # noqa: BLE001 - the contract: never raise for any input
            return Rejected(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:300])

    def transform_record(self, log_type: str, record: dict[str, Any], *,
                         ingest_time_ms: int | None = None) -> Accepted | Rejected:
        """An already-decoded record (TSV input); `record` is used as the raw layer, not copied."""
        try:
            bad = check_log_type(log_type)
            if bad is not None:
                return bad
            write_ts = record.pop("_write_ts", None)
            record.pop("_path", None)
            return self._build(log_type, record, write_ts, ingest_time_ms)
        except Exception as exc:  # noqa: BLE001
            return Rejected(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:300])

    def _build(self, log_type: str, record: dict[str, Any], write_ts: Any,
               ingest_time_ms: int | None) -> Accepted | Rejected:
        plan = self._plans.get(log_type)
        if plan is None:
            plan = self._normalizer.plan(log_type)
        if ingest_time_ms is None:
            ingest_time_ms = time.time_ns() // 1_000_000
        result = plan.normalize(record, write_ts, ingest_time_ms)
        if type(result) is Rejected:
            return Rejected(result.reason, result.detail, log_type)
        normalized, event_ms = result  # type: ignore[misc]
        enriched = self._enrich(plan, record, normalized, event_ms)
        try:
            value = orjson.dumps({"source": "zeek", "log_type": log_type, "raw": record,
                                  "normalized": normalized, "enriched": enriched})
        except TypeError as exc:  # only reachable through transform_record with non-JSON values
            return Rejected(INVALID_JSON, f"record cannot be serialised as JSON: {exc}"[:300], log_type)
        if self._by_community_id:
            cid = enriched.get("community_id")
            if cid is not None:
                return Accepted(log_type, cid.encode(), value, event_ms)
        for name in plan.key_fields:
            flow = normalized.get(name)
            if type(flow) is str and flow:
                return Accepted(log_type, flow.encode(), value, event_ms)
        return Accepted(log_type, None, value, event_ms)


def _load_enrich(path: Path) -> EnrichSettings:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return EnrichSettings()
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    return parse_enrich(data.get("enrich"), str(path))


def load_time_fields(path: Path | str) -> dict[str, list[str]]:
    """log type -> its fields of Zeek type `time`, read from schema.json ({} when the file is absent).

    Only the shape fixed by the contract is read ({"<type>": {"fields": {"<name>": "<zeek type>"}}}, plus
    `$all_logs` fields for every type and `$unknown_log` for types it does not list); validating the rest
    of the file is core/schema.py's job.
    """
    file = Path(path)
    try:
        data = orjson.loads(file.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        return {}

    def times(spec: Any) -> list[str]:
        fields = spec.get("fields") if isinstance(spec, dict) else None
        return [name for name, zeek_type in fields.items() if zeek_type == "time"] if isinstance(fields, dict) else []

    common = times(data.get("$all_logs"))  # fields any log type may carry
    result = {log_type: times(spec) + common for log_type, spec in data.items() if not log_type.startswith("$")}
    result[UNKNOWN_LOG] = times(data.get(UNKNOWN_LOG)) + common  # used for log types schema.json lacks
    return {log_type: names for log_type, names in result.items() if names}
