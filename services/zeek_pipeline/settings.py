"""Typed settings for config/config.json, with environment overrides for Kubernetes (pydantic-settings).

The file keeps the seed's shape (kafka, output.parquet, output.kafka, log, write) and adds one section per
service. Every value can be overridden from the environment the way pydantic-settings users expect: the
prefix `ZEEK_PIPELINE_`, then the key path with `__` between the levels, e.g.
`ZEEK_PIPELINE_KAFKA__BROKERS=a:9092,b:9092` or `ZEEK_PIPELINE_OUTPUT__PARQUET__BASE_PATH=s3://lake/zeek`.

Why `__` and not `_`: keys contain `_` themselves, and Kubernetes injects service-link variables such as
`ZEEK_PIPELINE_HEALTH_PORT=tcp://10.0.0.5:8080` for a Service named `zeek-pipeline-health`. With a single
`_` those read as config keys and every service refused to start; with `__` a service link can never name a
nested key, and variables that name no field are ignored. A variable that does name a section but a key
it lacks (`ZEEK_PIPELINE_KAFKA__BROKER`) is still an error, so a typo is not silently dropped.

Text fields take the value as it is (a password `123456` stays text); lists take comma-separated values
or a JSON list; dicts (`kafka.librdkafka`) take JSON; numbers and booleans are parsed by pydantic.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from zeek_pipeline.core.config_file import config_file, read_json
from zeek_pipeline.core.rules import EnrichSettings

ENV_PREFIX = "ZEEK_PIPELINE_"
ENV_DELIMITER = "__"
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
    """The output cluster: zeek-normalized, zeek-dlq, the status topic and the writer's group live here.

    `brokers` unset (the default) means the input cluster, `kafka.brokers`. Security is `kafka.security` for
    both clusters."""

    enabled: bool = True
    brokers: list[str] | None = Field(None, min_length=1)  # default: kafka.brokers
    topic: str = Field("zeek-normalized", min_length=1)
    dlq_topic: str = Field("zeek-dlq", min_length=1)
    compression: Compression = "lz4"


class IcebergCatalog(_Section):
    """Where the Iceberg tables are listed (zeek_pipeline.iceberg.catalog; docs/iceberg.md).

    `sql` with no `uri` is an SQLite file at `output/iceberg/catalog.db`; a `postgresql+psycopg2://` uri makes a
    shared catalog, its password from `password` (an env secret) so the file holds none. `rest` needs `uri`, and
    `credential` (OAuth2 client `id:secret`) or `token` when the server asks for one."""

    type: Literal["sql", "rest"] = "sql"
    uri: str | None = None
    password: SecretStr | None = None  # sql: the database password, put into the uri
    credential: SecretStr | None = None  # rest
    token: SecretStr | None = None  # rest
    # a directory or s3://bucket/prefix; unset: ./output/iceberg/warehouse for sql, the server's choice for rest
    warehouse: str | None = None
    s3: S3Settings = S3Settings()


class IcebergOutput(_Section):
    """Iceberg tables beside (or instead of) the Hive-layout Parquet: one table per log type in `namespace`."""

    enabled: bool = False
    namespace: str = Field("zeek", pattern=r"^[A-Za-z0-9_]+$")
    catalog: IcebergCatalog = IcebergCatalog()


class OutputSettings(_Section):
    parquet: ParquetOutput = ParquetOutput()
    kafka: KafkaOutput = KafkaOutput()
    iceberg: IcebergOutput = IcebergOutput()


class LogSettings(_Section):
    path: str | None = "./log"  # a directory for pipeline.log; null logs to stdout only
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class WriteSettings(_Section):
    """The parquet-writer's flush conditions (any one triggers; 0 disables that condition)."""

    flush_buffer_mb: float = Field(64, ge=0)
    flush_interval_seconds: float = Field(60, ge=0)
    flush_event_count: int = Field(0, ge=0)
    max_memory_mb: float = Field(128, gt=0)  # cap over all open buffers

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
    # What is kept of the status channel (health/retention.py): instances, MiB of their trimmed JSON, and how
    # long an instance that stopped heartbeating without a tombstone stays on the page.
    max_instances: int = Field(1000, ge=1, le=100_000)
    max_status_mb: float = Field(8, gt=0)
    forget_after_seconds: float = Field(86_400, gt=0)


class StatusSettings(_Section):
    """The status channel: every instance publishes a status record to a compacted topic, keyed by instance."""

    topic: str = Field("zeek-pipeline-status", min_length=1)
    interval_seconds: float = Field(30, gt=0)


class CompactionSettings(_Section):
    """`zeek-pipeline compact`: merging a closed hour's small files into few large ones (docs/parquet-layout.md).

    An hour is closed once its end plus `grace_seconds` (late data) has passed and no file of it changed for
    `min_quiet_seconds`; its files are merged into files of about `target_mb`, sorted by event_time."""

    grace_seconds: float = Field(3600, ge=0)
    min_quiet_seconds: float = Field(600, ge=0)
    target_mb: float = Field(128, gt=0)
    # How much compressed input one sorted slice of an output reads at once (bounds the run's memory).
    slice_mb: float = Field(16, gt=0)
    # A run's claim on an hour expires after this long; a later run then fences it and cleans up.
    lease_seconds: float = Field(900, gt=0)


TWO_CLUSTERS_NEED_AT_LEAST_ONCE = (
    "output.kafka.brokers names another cluster than kafka.brokers, which normalizer.processing_guarantee "
    "exactly_once cannot serve: a Kafka transaction cannot span two clusters (the input offsets would be "
    "committed on the output cluster, never where the group reads them). Set "
    "normalizer.processing_guarantee to at_least_once, or use one cluster (leave output.kafka.brokers unset)")


class Settings(BaseSettings):
    """The whole config.json. The environment naming is declared here, the pydantic-settings way, but only
    `load_settings` / `settings_from` read the environment: `Settings(...)` and `model_validate` validate exactly
    the data given, so the operator's check of a rendered config.json is not changed by its own environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER,
                                      case_sensitive=False, extra="forbid", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    output: OutputSettings = OutputSettings()
    log: LogSettings = LogSettings()
    write: WriteSettings = WriteSettings()
    normalizer: NormalizerSettings = NormalizerSettings()
    writer: WriterSettings = WriterSettings()
    health: HealthSettings = HealthSettings()
    status: StatusSettings = StatusSettings()
    enrich: EnrichSettings = EnrichSettings()
    compaction: CompactionSettings = CompactionSettings()
    instance_id: str | None = None  # default: the pod / host name

    @model_validator(mode="after")
    def _transactions_on_one_cluster(self) -> Settings:
        if self.normalizer.processing_guarantee == "exactly_once" and self.separate_output_cluster:
            raise ValueError(TWO_CLUSTERS_NEED_AT_LEAST_ONCE)
        return self

    @property
    def input_bootstrap_servers(self) -> str:
        """The input cluster: zeek-raw, the normalizer-enricher's group and its committed offsets."""
        return self.kafka.bootstrap_servers

    @property
    def output_bootstrap_servers(self) -> str:
        """The output cluster: zeek-normalized, zeek-dlq, the status topic, the parquet-writer's group."""
        return ",".join(self.output.kafka.brokers or self.kafka.brokers)

    @property
    def separate_output_cluster(self) -> bool:
        """True when output.kafka.brokers names other brokers than kafka.brokers (order and repeats aside)."""
        brokers = self.output.kafka.brokers
        return brokers is not None and set(brokers) != set(self.kafka.brokers)

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the data passed in; `env_overrides` reads the environment explicitly (see the class doc)."""
        del settings_cls, env_settings, dotenv_settings, file_secret_settings
        return (init_settings,)


class SettingsError(ValueError):
    """A config problem a user can fix: names the file, the key path, the bad value and what is allowed."""


def env_name(*path: str) -> str:
    """The variable that overrides one key, e.g. env_name("kafka", "brokers") -> ZEEK_PIPELINE_KAFKA__BROKERS.

    The operator and the tests name variables through this, so they follow the loader's scheme.
    """
    return ENV_PREFIX + ENV_DELIMITER.join(part.upper() for part in path)


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(arg) is list for arg in get_args(annotation))


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping (tests, one-off overrides) and taking
    comma-separated lists (`a:9092,b:9092`, as documented since the first release) besides JSON lists."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self._environ is None:
            return super()._load_env_vars()
        return {key.lower(): value for key, value in self._environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if field is not None and _is_list(field.annotation) and isinstance(value, str) \
                and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return super().decode_complex_value(field_name, field, value)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, section by section (an env variable replaces one key, not its whole section)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ZEEK_PIPELINE_* variables as nested settings data (os.environ when no mapping is given)."""
    try:
        return _EnvSource(Settings, environ)()
    except SourceError as exc:
        raise SettingsError(f"environment: {exc} (variables are {ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY>; "
                            "lists take a,b or a JSON list, objects JSON)") from None


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: {error.error_count()} invalid setting(s)"]
    for item in error.errors():
        if not item["loc"]:  # a check across sections: its message names the keys; the input is everything
            lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
            continue
        path = ".".join(str(part) for part in item["loc"])
        value = item.get("input")
        shown = "<secret>" if "password" in path or "secret" in path or "key" in path.split(".")[-1] else value
        lines.append(f"  {path}: {item['msg']} (got {json.dumps(shown, default=str)[:200]})")
    return "\n".join(lines)


def settings_from(data: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                  source: str = "settings") -> Settings:
    """Validate file data with the environment laid over it; every problem becomes one SettingsError."""
    merged = _merge(dict(data), env_overrides(environ))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(_format_errors(source, exc)) from exc


def resolve_config_file(path: Path | str | None) -> Path:
    """`--config` may name config.json or the config directory; the default is ./config/config.json."""
    return config_file(path or os.environ.get("ZEEK_PIPELINE_CONFIG", "config"), "config.json")


def load_settings(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, overlay the environment and validate; every problem becomes one SettingsError naming the file."""
    file = resolve_config_file(path)
    data = read_json(file, SettingsError)
    if not isinstance(data, dict):
        raise SettingsError(f"{file}: the top level must be a JSON object, got {type(data).__name__}")
    return settings_from(data, environ, str(file))
