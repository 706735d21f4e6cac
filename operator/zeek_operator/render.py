"""Render the services' configuration files from a ZeekPipeline spec.

config.json is built as the services' own `Settings` model, so the operator can never hand the pods a
configuration they would refuse. Secrets never appear in it: SASL and S3 credentials reach the pods as
`ZEEK_PIPELINE_*` environment variables from Secrets (see resources.py). normalization.json and
schema.json are the project's defaults unless the spec overrides them; overrides are validated with the
core's own parsers so a bad rule is reported on the resource instead of crash-looping the pods.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from zeek_operator.spec import PipelineSpec, SpecError

CONFIG_DIR = "/etc/zeek-pipeline"
CONFIG_FILE = f"{CONFIG_DIR}/config.json"
PARQUET_DIR = "/var/lib/zeek-pipeline/parquet"
TLS_DIR = "/var/run/secrets/zeek-pipeline/kafka-tls"
TLS_FILES = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}
GEOIP_DIR = "/var/lib/zeek-pipeline/geoip"  # the MaxMind DB files of spec.enrich.geoip, read-only
COMPONENTS = ("normalizer-enricher", "parquet-writer", "health")
COMPACTOR = "compactor"  # the CronJob's component label and container name (no Deployment, no port)
ICEBERG_MAINTENANCE = "iceberg-maintenance"  # the second CronJob: `compact --iceberg`
ICEBERG_DIR = "_iceberg"  # under the lake's base; the Hive layout skips top-level names starting with `_`
PORTS = {"normalizer-enricher": 8081, "parquet-writer": 8082, "health": 8080}
DEFAULTS_ENV = "ZEEK_OPERATOR_DEFAULTS_DIR"
FILES = ("config.json", "normalization.json", "schema.json")


@dataclass(frozen=True)
class Overrides:
    """normalization.json / schema.json text read from a referenced ConfigMap (None: use the default)."""

    rules: str | None = None
    schema: str | None = None


def defaults_dir() -> Path:
    """Where the default normalization.json and schema.json live.

    $ZEEK_OPERATOR_DEFAULTS_DIR, else /etc/zeek-pipeline (the image's copy of config/), else the
    repository's config/ (running from a checkout).
    """
    candidates = [Path(os.environ[DEFAULTS_ENV])] if os.environ.get(DEFAULTS_ENV) else []
    candidates += [Path(CONFIG_DIR), Path(__file__).resolve().parents[2] / "config"]
    for candidate in candidates:
        if (candidate / "normalization.json").is_file() and (candidate / "schema.json").is_file():
            return candidate
    raise FileNotFoundError(f"no normalization.json + schema.json in {', '.join(map(str, candidates))}; "
                            f"set {DEFAULTS_ENV}")


@cache
def default_file(name: str) -> str:
    return (defaults_dir() / name).read_text()


def _s3_endpoint(url: str | None) -> tuple[str | None, str]:
    """`https://host:port` -> ("host:port", "https"): the settings keep the scheme apart (pyarrow style)."""
    if not url:
        return None, "https"
    parts = urlsplit(url)
    return parts.netloc + parts.path.rstrip("/"), parts.scheme or "https"


def parquet_base_path(spec: PipelineSpec) -> str:
    """Where the lake is, as the writer's config and `zeek-pipeline compact --output` spell it."""
    s3 = spec.writer.storage.s3
    if spec.writer.storage.type != "s3" or s3 is None:
        return PARQUET_DIR
    prefix = s3.prefix.strip("/")
    return f"s3://{s3.bucket}/{prefix}" if prefix else f"s3://{s3.bucket}"


def iceberg_settings(spec: PipelineSpec) -> dict[str, Any]:
    """output.iceberg of config.json (secrets excluded: they reach the pods as env from Secrets).

    SQLite (a sql catalog without uri) is a file on the writer's claim, with its warehouse beside it (the
    warehouse's mkdir makes the directory SQLite needs). A sql catalog's warehouse defaults to
    `<prefix>-iceberg` beside the Parquet lake on S3, so that a `**/*.parquet` glob over the lake does not
    find the tables' data files; on a claim (the pods' root filesystem is read-only) to `_iceberg/warehouse`
    in it, where pyarrow's dataset discovery skips it (`_`) but a DuckDB glob over the whole claim does not."""
    iceberg = spec.writer.iceberg
    catalog = iceberg.catalog
    uri = catalog.uri
    if catalog.sqlite:
        uri = f"sqlite:///{PARQUET_DIR}/{ICEBERG_DIR}/catalog.db"
    warehouse = catalog.warehouse
    if warehouse is None and catalog.type == "sql":
        base = parquet_base_path(spec)
        warehouse = f"{base}-iceberg" if base.startswith("s3://") else f"{base}/{ICEBERG_DIR}/warehouse"
    s3 = spec.writer.iceberg_s3
    endpoint, scheme = _s3_endpoint(s3.endpoint)
    return {"enabled": True, "namespace": iceberg.namespace,
            "catalog": {"type": catalog.type, "uri": uri, "warehouse": warehouse,
                        "s3": {"endpoint": endpoint, "region": s3.region, "scheme": scheme}}}


def settings_data(spec: PipelineSpec) -> dict[str, Any]:
    """The config.json document (before validation) for every component of one pipeline."""
    kafka = spec.kafka
    security: dict[str, Any] = {"protocol": kafka.security.protocol}
    if kafka.security.sasl is not None:
        security["sasl_mechanism"] = kafka.security.sasl.mechanism  # username/password come from env
    if kafka.security.tls is not None:
        security["ssl_ca_location"] = f"{TLS_DIR}/{TLS_FILES['ca']}"
        if kafka.security.tls.cert_key:
            security["ssl_certificate_location"] = f"{TLS_DIR}/{TLS_FILES['cert']}"
            security["ssl_key_location"] = f"{TLS_DIR}/{TLS_FILES['key']}"
    storage = spec.writer.storage
    parquet: dict[str, Any] = {
        "enabled": True,
        "base_path": parquet_base_path(spec),
        "file_prefix": spec.writer.file_prefix,
        "compression": spec.writer.compression,
        "row_group_size": spec.writer.row_group_size,
    }
    if storage.type == "s3" and storage.s3 is not None:
        endpoint, scheme = _s3_endpoint(storage.s3.endpoint)
        parquet["s3"] = {"endpoint": endpoint, "region": storage.s3.region, "scheme": scheme}
    enrich: dict[str, Any] = {"community_id_seed": spec.enrich.community_id_seed}
    if spec.enrich.local_networks is not None:
        enrich["local_networks"] = list(spec.enrich.local_networks)
    geoip = spec.enrich.geoip
    if geoip is not None:
        enrich["geoip"] = {
            "city_db": f"{GEOIP_DIR}/{geoip.city_file}" if geoip.city_file else None,
            "asn_db": f"{GEOIP_DIR}/{geoip.asn_file}" if geoip.asn_file else None,
            "cache_size": geoip.cache_size,
        }
    flush = spec.writer.flush
    return {
        "kafka": {
            "brokers": list(kafka.bootstrap_servers),
            "topic": kafka.topics.raw,
            "group_id": kafka.consumer_groups.normalizer,
            "security": security,
            "librdkafka": dict(kafka.librdkafka),
        },
        "output": {
            "parquet": parquet,
            "kafka": {"enabled": True, "topic": kafka.topics.normalized, "dlq_topic": kafka.topics.dlq,
                      **({"brokers": list(kafka.output_bootstrap_servers)} if kafka.output_bootstrap_servers else {})},
            # absent when off, so that turning the feature on is the only change to an existing ConfigMap
            **({"iceberg": iceberg_settings(spec)} if spec.writer.iceberg.enabled else {}),
        },
        "log": {"path": None, "level": spec.log.level, "format": spec.log.format},  # stdout only in a pod
        "write": {
            "flush_buffer_mb": flush.buffer_mb,
            "flush_interval_seconds": flush.interval_seconds,
            "flush_event_count": flush.event_count,
            "max_memory_mb": flush.max_memory_mb,
        },
        "normalizer": {
            "processing_guarantee": spec.normalizer.processing_guarantee,
            "batch_size": spec.normalizer.batch_size,
            "http_port": PORTS["normalizer-enricher"],
        },
        "writer": {
            "topic": kafka.topics.normalized,
            "group_id": kafka.consumer_groups.writer,
            "batch_size": spec.writer.batch_size,
            "flush_threads": spec.writer.flush_threads,
            "http_port": PORTS["parquet-writer"],
        },
        "health": {"host": "0.0.0.0", "port": PORTS["health"]},
        "status": {"topic": kafka.topics.status},
        "enrich": enrich,
    }


# config.json key -> the spec field a user would fix, for messages when the services' model refuses a value.
_SETTINGS_TO_SPEC = {
    "kafka.brokers": "spec.kafka.bootstrapServers",
    "output.kafka.brokers": "spec.kafka.outputBootstrapServers",
    "kafka.librdkafka": "spec.kafka.librdkafka",
    "write": "spec.writer.flush",
    "output.parquet": "spec.writer",
    "output.iceberg": "spec.writer.iceberg",
    "enrich.local_networks": "spec.enrich.localNetworks",
    "enrich.geoip": "spec.enrich.geoip",
    "enrich": "spec.enrich",
}


def _spec_field(config_path: str) -> str:
    for prefix, field in _SETTINGS_TO_SPEC.items():
        if config_path == prefix or config_path.startswith(prefix + "."):
            return field
    return "spec"


def render_config(spec: PipelineSpec) -> str:
    """config.json text, validated by the services' Settings model (SpecError names the spec field)."""
    from zeek_pipeline.settings import Settings

    data = settings_data(spec)
    try:
        Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            message = str(item["msg"]).removeprefix("Value error, ")
            # A check across sections (no location) starts its message with the key it is about.
            path = ".".join(str(part) for part in item["loc"]) or message.split(" ", 1)[0]
            problems.append((_spec_field(path), f"{message} (config.json {path})"))
        raise SpecError(problems) from None
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _load_text(text: str, field: str) -> Any:
    import importlib

    yaml: Any = importlib.import_module("yaml")  # PyYAML ships no type stubs

    try:
        return yaml.safe_load(text)  # JSON is YAML, so both spellings are accepted
    except yaml.YAMLError as exc:
        raise SpecError([(field, f"neither JSON nor YAML: {exc}")], reason="InvalidNormalization") from None


def _check_rules(data: Any, field: str) -> None:
    from zeek_pipeline.core.rules import ConfigError, parse_rules

    try:
        parse_rules(data, field)
    except ConfigError as exc:
        raise SpecError([(field, str(exc).removeprefix(f"{field}: "))], reason="InvalidNormalization") from None


def _check_schema(data: Any, field: str) -> None:
    from zeek_pipeline.core.rules import ConfigError
    from zeek_pipeline.core.schema import parse_schema

    try:
        parse_schema(data, field)
    except ConfigError as exc:
        raise SpecError([(field, str(exc).removeprefix(f"{field}: "))], reason="InvalidNormalization") from None


def render_files(spec: PipelineSpec, overrides: Overrides | None = None) -> dict[str, str]:
    """The ConfigMap's data: config.json, normalization.json, schema.json (validated)."""
    overrides = overrides or Overrides()
    files = {"config.json": render_config(spec)}
    norm = spec.normalization
    sources: list[tuple[str, Any, str]] = []  # (file, parsed data or None for the default, field)
    if norm.config_map_ref is not None:
        ref = norm.config_map_ref
        base = f"spec.normalization.configMapRef(name={ref.name})"
        rules = _load_text(overrides.rules, f"{base}.{ref.rules_key}") if overrides.rules is not None else None
        schema = _load_text(overrides.schema, f"{base}.{ref.schema_key}") if overrides.schema is not None else None
        sources = [("normalization.json", rules, f"{base}.{ref.rules_key}"),
                   ("schema.json", schema, f"{base}.{ref.schema_key}")]
    else:
        sources = [("normalization.json", norm.rules, "spec.normalization.rules"),
                   ("schema.json", norm.schema_, "spec.normalization.schema")]
    for file, data, field in sources:
        if data is None:
            files[file] = default_file(file)
            continue
        (_check_rules if file == "normalization.json" else _check_schema)(data, field)
        files[file] = json.dumps(data, indent=2) + "\n"
    return files


def config_hash(files: Mapping[str, str]) -> str:
    """A short digest of the ConfigMap's data; in the pod template, so any change rolls the pods."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()[:16]
