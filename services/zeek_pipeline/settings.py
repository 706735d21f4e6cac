"""Typed settings for config/config.json, with environment overrides for Kubernetes.

The file keeps the seed's shape (kafka, output.parquet, output.kafka, log, write) and adds one section per
service. Every value can be overridden from the environment: the variable name is `ZEEK_PIPELINE_` plus the
key path in upper case joined by `_`, e.g. `ZEEK_PIPELINE_KAFKA_BROKERS=a:9092,b:9092` or
`ZEEK_PIPELINE_OUTPUT_PARQUET_BASE_PATH=s3://lake/zeek`. Lists take comma-separated values, other values
are parsed as JSON when they parse (numbers, booleans, objects) and kept as strings otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from zeek_pipeline.core.config_file import config_file, read_json
from zeek_pipeline.core.rules import EnrichSettings

ENV_PREFIX = "ZEEK_PIPELINE_"
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
ParquetCompression = Literal["none", "snappy", "gzip", "lz4", "zstd"]
Port = Annotated[int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSecurity(_Section):
    """SASL/TLS for every Kafka client; secrets come from the environment (a Kubernetes Secret), never the file."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None


class KafkaSettings(_Section):
    """The source side: the broker list, the raw topic and the normalizer-enricher's consumer group."""

    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    topic: str = Field("zeek-raw", min_length=1)
    group_id: str = Field("zeek-normalizer-enricher", min_length=1)
    max_poll_records: int = Field(1000, ge=1, le=100_000)
    security: KafkaSecurity = KafkaSecurity()
    # Passed verbatim to librdkafka (e.g. "socket.keepalive.enable": true); wins over derived settings.
    # `librdkafka` reaches every client; the two below only consumers or only producers, so a consumer-only
    # key such as session.timeout.ms does not make producers warn.
    librdkafka: dict[str, str | int | float | bool] = Field(default_factory=dict)
    librdkafka_consumer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    librdkafka_producer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # Topic name -> Zeek log type, for topics that carry one type of untagged record.
    topic_log_types: dict[str, str] = Field(default_factory=dict)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(self.brokers)


class S3Settings(_Section):
    """Object storage for `output.parquet.base_path = s3://bucket/prefix`."""

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    scheme: Literal["http", "https"] = "https"


class ParquetOutput(_Section):
    enabled: bool = True
    base_path: str = "./output"
    file_prefix: str = Field("events", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    compression: ParquetCompression = "zstd"
    compression_level: int | None = None
    row_group_size: int = Field(128 * 1024, ge=1024)
    dictionary: bool = True
    statistics: bool = True
    s3: S3Settings = S3Settings()


class KafkaOutput(_Section):
    enabled: bool = True
    brokers: list[str] | None = None  # default: kafka.brokers
    topic: str = Field("zeek-normalized", min_length=1)
    dlq_topic: str = Field("zeek-dlq", min_length=1)
    compression: Compression = "lz4"


class OutputSettings(_Section):
    parquet: ParquetOutput = ParquetOutput()
    kafka: KafkaOutput = KafkaOutput()


class LogSettings(_Section):
    path: str | None = "./log"  # a directory for pipeline.log; null logs to stdout only
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class WriteSettings(_Section):
    """The parquet-writer's flush conditions (any one triggers; 0 disables that condition)."""

    flush_buffer_mb: float = Field(64, ge=0)
    flush_interval_seconds: float = Field(60, ge=0)
    flush_event_count: int = Field(0, ge=0)
    max_memory_mb: float = Field(512, gt=0)  # cap over all open buffers

    @model_validator(mode="after")
    def _some_condition(self) -> WriteSettings:
        if not (self.flush_buffer_mb or self.flush_interval_seconds or self.flush_event_count):
            raise ValueError("at least one of flush_buffer_mb, flush_interval_seconds, flush_event_count must be > 0")
        return self


class NormalizerSettings(_Section):
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    batch_size: int = Field(5000, ge=1, le=100_000)
    batch_timeout_ms: int = Field(500, ge=1)
    transaction_timeout_ms: int = Field(60_000, ge=1000)
    key_field: Literal["uid", "community_id"] = "uid"
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    http_port: Port = 8081
    # SIGTERM/SIGINT: finish the batch, commit and close within this many seconds (Kubernetes'
    # terminationGracePeriodSeconds should be a little longer).
    shutdown_timeout_seconds: float = Field(30, gt=0)


class WriterSettings(_Section):
    topic: str | None = None  # default: output.kafka.topic
    group_id: str = Field("zeek-parquet-writer", min_length=1)
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_threads: int = Field(2, ge=1, le=32)  # flushes typed and encoded at once, ahead of their commit
    http_port: Port = 8082


class HealthSettings(_Section):
    host: str = "0.0.0.0"
    port: Port = 8080
    refresh_seconds: float = Field(5, gt=0)


class StatusSettings(_Section):
    """The status channel: every instance publishes a status record to a compacted topic, keyed by instance."""

    topic: str = Field("zeek-pipeline-status", min_length=1)
    interval_seconds: float = Field(30, gt=0)


class Settings(_Section):
    kafka: KafkaSettings = KafkaSettings()
    output: OutputSettings = OutputSettings()
    log: LogSettings = LogSettings()
    write: WriteSettings = WriteSettings()
    normalizer: NormalizerSettings = NormalizerSettings()
    writer: WriterSettings = WriterSettings()
    health: HealthSettings = HealthSettings()
    status: StatusSettings = StatusSettings()
    enrich: EnrichSettings = EnrichSettings()
    instance_id: str | None = None  # default: the pod / host name

    @property
    def output_bootstrap_servers(self) -> str:
        return ",".join(self.output.kafka.brokers or self.kafka.brokers)

    @property
    def writer_topic(self) -> str:
        return self.writer.topic or self.output.kafka.topic

    def config_hash(self) -> str:
        """A short stable digest of the effective settings, shown by the health service."""
        text = self.model_dump_json(exclude={"instance_id"})
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able data, secrets masked (SecretStr dumps as '**********')."""
        data: dict[str, Any] = self.model_dump(mode="json")
        return data


class SettingsError(ValueError):
    """A config problem a user can fix: names the file, the key path, the bad value and what is allowed."""


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: {error.error_count()} invalid setting(s)"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        value = item.get("input")
        shown = "<secret>" if "password" in path or "secret" in path or "key" in path.split(".")[-1] else value
        lines.append(f"  {path}: {item['msg']} (got {json.dumps(shown, default=str)[:200]})")
    return "\n".join(lines)


def _field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf key path of the settings tree, with its annotation, for env override names."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _field_paths(annotation, (*prefix, name))
        else:
            yield (*prefix, name), annotation


@cache
def _env_names() -> dict[str, tuple[tuple[str, ...], Any]]:
    names: dict[str, tuple[tuple[str, ...], Any]] = {}
    for path, annotation in _field_paths(Settings):
        names[ENV_PREFIX + "_".join(path).upper()] = (path, annotation)
    return names


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(arg) is list for arg in get_args(annotation))


def _is_text(annotation: Any) -> bool:
    """str / SecretStr fields (optionally None): a password like 123456, true or null is the text itself."""
    if annotation in (str, SecretStr):
        return True
    if get_origin(annotation) not in (Union, UnionType):
        return False
    args = get_args(annotation)
    return any(arg in (str, SecretStr) for arg in args) and all(arg in (str, SecretStr, type(None)) for arg in args)


def _parse_env_value(raw: str, annotation: Any) -> Any:
    if _is_text(annotation):
        return raw
    if _is_list(annotation) and not raw.lstrip().startswith("["):
        return [part.strip() for part in raw.split(",") if part.strip()]
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ZEEK_PIPELINE_* variables on the file's data (environment wins)."""
    names = _env_names()
    merged: dict[str, Any] = json.loads(json.dumps(data))
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name not in names:
            continue
        path, annotation = names[name]
        value = _parse_env_value(raw, annotation)
        if isinstance(value, int | float) and annotation in (str, str | None):
            value = raw
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return merged


def resolve_config_file(path: Path | str | None) -> Path:
    """`--config` may name config.json or the config directory; the default is ./config/config.json."""
    return config_file(path or os.environ.get("ZEEK_PIPELINE_CONFIG", "config"), "config.json")


def load_settings(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, overlay the environment and validate; every problem becomes one SettingsError naming the file."""
    file = resolve_config_file(path)
    data = read_json(file, SettingsError)
    if not isinstance(data, dict):
        raise SettingsError(f"{file}: the top level must be a JSON object, got {type(data).__name__}")
    data = apply_env(data, os.environ if environ is None else environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_format_errors(str(file), exc)) from exc
