"""The ZeekPipeline spec as pydantic models: the single source of the CRD's schema and defaults.

`crd.py` generates the CustomResourceDefinition's OpenAPI schema from these models, so the defaults the API
server fills in and the defaults the operator assumes cannot drift apart. Field names are camelCase in the
resource (aliases) and snake_case in Python. `parse_spec()` turns a validation failure into a `SpecError`
whose problems name the resource field (`spec.writer.flush.intervalSeconds`), for the Degraded condition
and the Kubernetes event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

# Kubernetes resource quantity (`500m`, `1`, `2Gi`): an int or a string, like core/v1 ResourceRequirements.
# The pattern is controller-gen's for resource.Quantity; the API server checks it on strings only.
QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
                    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def _check_quantity(value: str | int) -> str | int:
    if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (like 250m, 1, 512Mi, 10Gi)")
    return value


Quantity = Annotated[
    str | int,
    AfterValidator(_check_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN,
                    "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
TOPIC_PATTERN = r"^[a-zA-Z0-9._-]{1,249}$"
BOOTSTRAP_PATTERN = r"^[^\s,]+:[0-9]{1,5}$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]{1,253}$"  # noqa: S105 (a key name pattern)
# librdkafka passthrough keys that would carry a secret in the resource: those must come from a Secret.
SECRET_LIBRDKAFKA_KEYS = ("password", "secret", "sasl.jaas.config", "ssl.key.pem", "ssl_key")


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """CRD `x-kubernetes-validations` (CEL) for a model, enforced by the API server on apply."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


# ----------------------------------------------------------------------------------------------- shared


class Resources(SpecModel):
    """CPU/memory requests and limits of a component's container (core/v1 ResourceRequirements)."""

    requests: dict[str, Quantity] = Field(default_factory=dict, description="Minimum resources, e.g. {cpu: 250m}.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources, e.g. {memory: 1Gi}.")


def _resources(req_cpu: str, req_mem: str, lim_cpu: str, lim_mem: str) -> Any:
    return Field(
        default_factory=lambda: Resources(requests={"cpu": req_cpu, "memory": req_mem},
                                          limits={"cpu": lim_cpu, "memory": lim_mem}),
        description="Container resources; the default suits a small pipeline.",
    )


class Autoscaling(SpecModel):
    """Scale on consumer-group lag between minReplicas and maxReplicas, never above the partition count."""

    model_config = ConfigDict(json_schema_extra=_cel(
        ("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas")))

    enabled: bool = Field(default=False,
                          description="Turn lag-based autoscaling on (replicas is then the initial count).")
    min_replicas: int = Field(default=1, ge=1, le=256, description="Never fewer replicas than this.")
    max_replicas: int = Field(default=4, ge=1, le=256,
                              description="Never more replicas than this (nor than partitions).")
    target_lag_per_replica: int = Field(default=
        10_000, ge=1, le=1_000_000_000, description="Messages of lag one replica is expected to absorb.")
    cooldown_seconds: int = Field(default=
        300, ge=0, le=86_400, description="Minimum time between two scaling changes of one component.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})")
        return self


class SecretKeyRef(SpecModel):
    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Secret in the pipeline's namespace.")


# ------------------------------------------------------------------------------------------------ image


class ImageSpec(SpecModel):
    """The one image of every service; the Deployment picks the subcommand."""

    repository: str = Field(default="ghcr.io/zeek-pipeline/zeek-pipeline", min_length=1, max_length=512,
                            pattern=r"^[^\s:@]+(:[0-9]+)?(/[^\s:@]+)*$", description="Image repository.")
    tag: str = Field(default="", max_length=128, pattern=r"^([\w][\w.-]{0,127})?$",
                     description="Image tag; empty means the operator's own version.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(default="IfNotPresent",
                                                                    description="imagePullPolicy.")
    pull_secrets: list[Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]] = Field(
        default_factory=list, description="Names of docker-registry Secrets for private registries.")


# ------------------------------------------------------------------------------------------------ kafka


class KafkaTopics(SpecModel):
    raw: str = Field(default="zeek-raw", pattern=TOPIC_PATTERN, description="Topic Zeek writes to (normalizer input).")
    normalized: str = Field(default="zeek-normalized", pattern=TOPIC_PATTERN,
                            description="Normalized three-layer documents (normalizer output, writer input).")
    dlq: str = Field(default="zeek-dlq", pattern=TOPIC_PATTERN, description="Rejected records with their reason.")
    status: str = Field(default="zeek-pipeline-status", pattern=TOPIC_PATTERN,
                        description="Compacted topic of per-instance status records (health service input).")


class ConsumerGroups(SpecModel):
    normalizer: str = Field(default="zeek-normalizer-enricher", min_length=1, max_length=249,
                            description="Consumer group of the normalizer-enricher on the raw topic.")
    writer: str = Field(default="zeek-parquet-writer", min_length=1, max_length=249,
                        description="Consumer group of the parquet-writer on the normalized topic.")


class SaslSpec(SpecModel):
    """SASL credentials, read from a Secret into the pods' environment (never written to the ConfigMap)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(default=
        "SCRAM-SHA-512", description="SASL mechanism.")
    secret_ref: SecretKeyRef = Field(..., description="Secret holding the username and password.")
    username_key: str = Field(default="username", pattern=SECRET_KEY_PATTERN, description="Key of the username.")
    password_key: str = Field(default="password", pattern=SECRET_KEY_PATTERN, description="Key of the password.")


class TlsSpec(SpecModel):
    """TLS material from a Secret, mounted read-only into the pods."""

    secret_ref: SecretKeyRef = Field(..., description="Secret holding the CA and, for mutual TLS, cert and key.")
    ca_key: str = Field(default="ca.crt", pattern=SECRET_KEY_PATTERN, description="Key of the CA certificate (PEM).")
    cert_key: str | None = Field(default=None, pattern=SECRET_KEY_PATTERN,
                                 description="Key of the client certificate (PEM), for mutual TLS.")
    key_key: str | None = Field(default=None, pattern=SECRET_KEY_PATTERN,
                                description="Key of the client private key (PEM), for mutual TLS.")

    @model_validator(mode="after")
    def _pair(self) -> TlsSpec:
        if (self.cert_key is None) != (self.key_key is None):
            raise ValueError("certKey and keyKey go together (mutual TLS needs both)")
        return self


class KafkaSecuritySpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=_cel(
        ("!self.protocol.startsWith('SASL_') || has(self.sasl)", "protocol SASL_* needs sasl"),
        ("self.protocol.startsWith('SASL_') || !has(self.sasl)", "sasl needs protocol SASL_PLAINTEXT or SASL_SSL"),
        ("self.protocol.endsWith('SSL') || !has(self.tls)", "tls needs protocol SSL or SASL_SSL"),
    ))

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(default=
        "PLAINTEXT", description="security.protocol of every Kafka client.")
    sasl: SaslSpec | None = Field(default=None, description="SASL credentials (protocol SASL_PLAINTEXT or SASL_SSL).")
    tls: TlsSpec | None = Field(default=None, description="CA / client certificate (protocol SSL or SASL_SSL); "
                                                  "without it the image's system CAs are used.")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecuritySpec:
        sasl_protocol = self.protocol.startswith("SASL_")
        if sasl_protocol and self.sasl is None:
            raise ValueError(f"protocol {self.protocol} needs sasl (mechanism and secretRef)")
        if self.sasl is not None and not sasl_protocol:
            raise ValueError(f"sasl is set but protocol is {self.protocol}; use SASL_PLAINTEXT or SASL_SSL")
        if self.tls is not None and not self.protocol.endswith("SSL"):
            raise ValueError(f"tls is set but protocol is {self.protocol}; use SSL or SASL_SSL")
        return self


class TopicCreation(SpecModel):
    enabled: bool = Field(default=False, description="Create the four topics when they are missing.")
    partitions: int = Field(default=6, ge=1, le=10_000, description="Partitions of created topics (caps the replicas).")
    replication_factor: int = Field(default=1, ge=1, le=16, description="Replication factor of created topics.")


class KafkaSpec(SpecModel):
    bootstrap_servers: list[Annotated[str, Field(pattern=BOOTSTRAP_PATTERN)]] = Field(default=
        ..., min_length=1, description="host:port of one or more brokers.")
    output_bootstrap_servers: list[Annotated[str, Field(pattern=BOOTSTRAP_PATTERN)]] | None = Field(
        default=None, min_length=1,
        description="Brokers of a separate output cluster (normalized, dlq and status topics, the writer's group); "
                    "default: bootstrapServers. Needs normalizer.processingGuarantee at_least_once (a Kafka "
                    "transaction cannot span two clusters). Security applies to both.")
    topics: KafkaTopics = Field(default=KafkaTopics(), description="Topic names.")
    consumer_groups: ConsumerGroups = Field(default=ConsumerGroups(), description="Consumer group ids.")
    security: KafkaSecuritySpec = Field(default=KafkaSecuritySpec(), description="SASL and TLS.")
    create_topics: TopicCreation = Field(default=TopicCreation(), description="Optional topic creation.")
    librdkafka: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties for every client (no secrets: use security.*.secretRef).")

    @model_validator(mode="after")
    def _no_inline_secrets(self) -> KafkaSpec:
        bad = sorted(key for key in self.librdkafka if any(word in key.lower() for word in SECRET_LIBRDKAFKA_KEYS))
        if bad:
            raise ValueError(f"librdkafka must not carry secrets inline ({', '.join(bad)}); "
                             "reference a Secret with security.sasl.secretRef or security.tls.secretRef")
        return self


# ------------------------------------------------------------------------------------------- components


class NormalizerSpec(SpecModel):
    replicas: int = Field(default=1, ge=0, le=256, description="Replicas (the initial count when autoscaling is on).")
    resources: Resources = _resources("250m", "256Mi", "1", "1Gi")
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(default=
        "exactly_once", description="exactly_once uses Kafka transactions; at_least_once may duplicate on failure.")
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="Messages per consume/produce batch.")
    autoscaling: Autoscaling = Field(default=Autoscaling(), description="Lag-based autoscaling.")


class PvcStorage(SpecModel):
    """Local Parquet on a PersistentVolumeClaim: an existing claim, or one the operator creates."""

    claim_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253,
                                   description="Use this existing claim (the operator creates none).")
    size: Quantity = Field(default="10Gi", description="Size of the claim the operator creates (without claimName).")
    storage_class_name: str | None = Field(default=None, max_length=253,
                                           description="StorageClass of the created claim (default class if unset).")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] = Field(default=
        ["ReadWriteOnce"], min_length=1,
        description="Access modes of the created claim; several writers on several nodes need ReadWriteMany.")
    keep_on_delete: bool = Field(default=True,
                                 description="Keep the created claim (the data) when the pipeline is deleted.")


class S3Credentials(SpecModel):
    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Secret with the S3 key pair.")
    access_key_key: str = Field(default="AWS_ACCESS_KEY_ID", pattern=SECRET_KEY_PATTERN,
                                description="Key of the access key.")
    secret_key_key: str = Field(default="AWS_SECRET_ACCESS_KEY", pattern=SECRET_KEY_PATTERN,
                                description="Key of the secret key.")


class S3Storage(SpecModel):
    bucket: str = Field(..., min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                        description="Bucket name.")
    prefix: str = Field(default="zeek", max_length=512, pattern=r"^([^/\s][^\s]*)?$",
                        description="Key prefix under the bucket (no leading slash).")
    endpoint: str | None = Field(default=None, max_length=512, pattern=r"^https?://[^\s/]+(/.*)?$",
                                 description="S3-compatible endpoint URL (MinIO, SeaweedFS); unset means AWS.")
    region: str = Field(default="us-east-1", min_length=1, max_length=64, description="Region.")
    credentials_secret: S3Credentials | None = Field(default=
        None, description="Secret with the key pair; unset means the pod's ambient credentials (IRSA, ...).")


class StorageSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=_cel(
        ("self.type != 's3' || has(self.s3)", "storage type s3 needs s3.bucket"),
    ))

    type: Literal["pvc", "s3"] = Field(default="pvc", description="Where the parquet-writer writes: pvc or s3.")
    pvc: PvcStorage = Field(default=PvcStorage(), description="Used when type is pvc.")
    s3: S3Storage | None = Field(default=None, description="Used when type is s3.")

    @model_validator(mode="after")
    def _kind(self) -> StorageSpec:
        if self.type == "s3" and self.s3 is None:
            raise ValueError("storage type s3 needs s3 (bucket, and credentialsSecret unless the pod has ambient ones)")
        return self


class FlushSpec(SpecModel):
    """When the writer closes a Parquet file: any one condition triggers; 0 disables a condition."""

    model_config = ConfigDict(json_schema_extra=_cel(
        ("self.bufferMB > 0.0 || self.intervalSeconds > 0.0 || self.eventCount > 0",
         "at least one of bufferMB, intervalSeconds, eventCount must be > 0"),
    ))

    buffer_mb: float = Field(default=64, ge=0, le=65_536, alias="bufferMB",
                             description="Flush at this buffered size (MB).")
    interval_seconds: float = Field(default=60, ge=0, le=86_400, description="Flush at least this often (s).")
    event_count: int = Field(default=0, ge=0, le=1_000_000_000, description="Flush after this many events.")
    max_memory_mb: float = Field(default=128, gt=0, le=65_536, alias="maxMemoryMB",
                                 description="Cap over all open buffers (MB); keep below the memory limit.")

    @model_validator(mode="after")
    def _some_condition(self) -> FlushSpec:
        if not (self.buffer_mb or self.interval_seconds or self.event_count):
            raise ValueError("at least one of bufferMB, intervalSeconds, eventCount must be > 0")
        return self


class SecretValueRef(SpecModel):
    """One key of a Secret in the pipeline's namespace (like core/v1 SecretKeySelector)."""

    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Secret in the pipeline's namespace.")
    key: str = Field(..., pattern=SECRET_KEY_PATTERN, description="Key of the value in the Secret.")


class IcebergS3(SpecModel):
    """Object storage of an s3:// warehouse (the data and metadata files of the tables)."""

    endpoint: str | None = Field(default=None, max_length=512, pattern=r"^https?://[^\s/]+(/.*)?$",
                                 description="S3-compatible endpoint URL (MinIO, SeaweedFS); unset means AWS.")
    region: str = Field(default="us-east-1", min_length=1, max_length=64, description="Region.")
    credentials_secret: S3Credentials | None = Field(default=
        None, description="Secret with the key pair; unset means the pod's ambient credentials (IRSA, ...).")


ICEBERG_SQLITE_MESSAGE = (
    "an Iceberg sql catalog without uri is an SQLite file on the writer's claim, which only one writer may use: "
    "it needs writer.storage.type pvc, accessModes without ReadWriteMany (SQLite's locks do not hold on a "
    "shared network volume), replicas 1 and autoscaling.maxReplicas 1; for more writers set "
    "iceberg.catalog.uri to a PostgreSQL database (postgresql+psycopg2://user@host/db, password from "
    "passwordSecretRef) or use type rest")


class IcebergCatalogSpec(SpecModel):
    """Where the Iceberg tables are listed. Credentials come from Secrets only (the writer's environment), never
    from the resource or the ConfigMap."""

    model_config = ConfigDict(json_schema_extra=_cel(
        ("self.type != 'rest' || has(self.uri)", "a rest catalog needs uri"),
        ("self.type == 'sql' || !has(self.passwordSecretRef)", "passwordSecretRef is for a sql catalog"),
        ("self.type == 'rest' || (!has(self.credentialSecretRef) && !has(self.tokenSecretRef))",
         "credentialSecretRef and tokenSecretRef are for a rest catalog"),
    ))

    type: Literal["sql", "rest"] = Field(default="sql", description="sql (SQLite or PostgreSQL) or rest.")
    uri: str | None = Field(default=None, max_length=1024, pattern=r"^[a-z][a-z0-9+.-]*://[^\s]+$",
                            description="sql: postgresql+psycopg2://user@host:5432/db (unset: SQLite on the "
                                        "writer's claim, one writer only); rest: the server's URL. No password "
                                        "in it: use passwordSecretRef.")
    password_secret_ref: SecretValueRef | None = Field(default=None,
                                                       description="sql: the database password.")
    credential_secret_ref: SecretValueRef | None = Field(default=None,
                                                         description="rest: OAuth2 client credential id:secret.")
    token_secret_ref: SecretValueRef | None = Field(default=None, description="rest: a bearer token.")
    warehouse: str | None = Field(default=None, min_length=1, max_length=1024,
                                  description="sql: s3://bucket/prefix (unset: on s3 storage "
                                              "s3://<bucket>/<prefix>-iceberg, on a pvc _iceberg/warehouse in "
                                              "the claim); rest: the server's warehouse name or location "
                                              "(unset: the server's default).")
    s3: IcebergS3 | None = Field(default=None, description="S3 of an s3:// warehouse (unset: the writer's "
                                                            "storage.s3 endpoint, region and credentials).")

    @model_validator(mode="after")
    def _consistent(self) -> IcebergCatalogSpec:
        if self.type == "rest" and self.uri is None:
            raise ValueError("a rest catalog needs uri (the server's URL)")
        if self.type == "sql" and (self.credential_secret_ref or self.token_secret_ref):
            raise ValueError("credentialSecretRef and tokenSecretRef are for a rest catalog")
        if self.type == "rest" and self.password_secret_ref is not None:
            raise ValueError("passwordSecretRef is for a sql catalog")
        if self.uri is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(self.uri)
            if parts.password is not None:
                raise ValueError("uri must not carry a password; put it in a Secret and name it in passwordSecretRef")
            if self.type == "sql" and parts.scheme.startswith("sqlite"):
                raise ValueError("leave uri unset for SQLite (the operator puts catalog.db on the writer's claim)")
        if self.type == "sql" and self.warehouse is not None and not self.warehouse.startswith("s3://"):
            raise ValueError("a sql catalog's warehouse is s3://bucket/prefix, or unset for the writer's output")
        if self.sqlite and self.warehouse is not None:
            raise ValueError("leave warehouse unset for SQLite: its warehouse is the _iceberg directory on the "
                             "writer's claim, beside catalog.db")
        return self

    @property
    def sqlite(self) -> bool:
        return self.type == "sql" and self.uri is None


class IcebergSpec(SpecModel):
    """Iceberg tables (one per log type) written by the parquet-writer beside the Hive-layout Parquet; with
    compaction on, `<name>-iceberg-maintenance` maintains them on the compaction schedule."""

    enabled: bool = Field(default=False, description="Write the Iceberg tables.")
    namespace: str = Field(default="zeek", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_]+$",
                           description="Namespace of the tables in the catalog.")
    catalog: IcebergCatalogSpec = Field(default=IcebergCatalogSpec(), description="The Iceberg catalog.")


SINGLE_WRITER_MESSAGE = (
    "more than one parquet-writer (replicas > 1, or autoscaling with maxReplicas > 1) needs a volume every "
    "writer can mount: set writer.storage.pvc.accessModes to [ReadWriteMany] (with a StorageClass or claim "
    "that offers it) or use writer.storage.type s3; on a ReadWriteOnce claim keep replicas 1 and "
    "autoscaling.maxReplicas 1 (a second writer on another node would wait forever on Multi-Attach)")


class WriterSpec(SpecModel):
    """The parquet-writer. Several writers on a pvc need ReadWriteMany: a ReadWriteOnce volume attaches to
    one node only, so a second writer scheduled elsewhere never starts (Multi-Attach error)."""

    model_config = ConfigDict(json_schema_extra=_cel(
        ("self.storage.type != 'pvc' || self.storage.pvc.accessModes.exists(m, m == 'ReadWriteMany') || "
         "(self.replicas <= 1 && (!self.autoscaling.enabled || self.autoscaling.maxReplicas <= 1))",
         SINGLE_WRITER_MESSAGE),
        ("!self.iceberg.enabled || self.iceberg.catalog.type != 'sql' || has(self.iceberg.catalog.uri) || "
         "(self.storage.type == 'pvc' && !self.storage.pvc.accessModes.exists(m, m == 'ReadWriteMany') && "
         "self.replicas <= 1 && (!self.autoscaling.enabled || self.autoscaling.maxReplicas <= 1))",
         ICEBERG_SQLITE_MESSAGE),
    ))

    replicas: int = Field(default=1, ge=0, le=256, description="Replicas (the initial count when autoscaling is on).")
    # RSS <= flush.maxMemoryMB + 256 MB: request that, limit 1.25 x, at the default 128 (docs/writer-durability.md)
    resources: Resources = _resources("250m", "384Mi", "1", "480Mi")
    autoscaling: Autoscaling = Field(default=Autoscaling(), description="Lag-based autoscaling.")
    storage: StorageSpec = Field(default=StorageSpec(), description="Where Parquet files go.")
    flush: FlushSpec = Field(default=FlushSpec(), description="File flush conditions.")
    compression: Literal["none", "snappy", "gzip", "lz4", "zstd"] = Field(default="zstd", description="Parquet codec.")
    file_prefix: str = Field(default="events", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64,
                             description="File name prefix.")
    row_group_size: int = Field(default=131_072, ge=1024, le=100_000_000, description="Rows per Parquet row group.")
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="Messages per consume batch.")
    flush_threads: int = Field(default=2, ge=1, le=32,
                               description="Threads typing and encoding buffers in parallel; match the CPU limit.")
    iceberg: IcebergSpec = Field(default=IcebergSpec(), description="Iceberg tables beside the Parquet lake.")

    @model_validator(mode="after")
    def _one_writer_per_single_node_volume(self) -> WriterSpec:
        storage = self.storage
        several = self.replicas > 1 or (self.autoscaling.enabled and self.autoscaling.max_replicas > 1)
        if storage.type == "pvc" and "ReadWriteMany" not in storage.pvc.access_modes and several:
            raise ValueError(SINGLE_WRITER_MESSAGE)
        catalog = self.iceberg.catalog
        if self.iceberg.enabled and catalog.sqlite:
            if storage.type != "pvc" or "ReadWriteMany" in storage.pvc.access_modes or several:
                raise ValueError(ICEBERG_SQLITE_MESSAGE)
        if (self.iceberg.enabled and catalog.type == "sql" and catalog.warehouse is None and storage.type == "s3"
                and storage.s3 is not None and not storage.s3.prefix.strip("/")):
            raise ValueError("set iceberg.catalog.warehouse: the default, <prefix>-iceberg beside the Parquet "
                             "lake, needs storage.s3.prefix (the whole bucket is the lake)")
        return self

    @property
    def iceberg_s3(self) -> IcebergS3:
        """The S3 of the Iceberg warehouse: iceberg.catalog.s3, else the Parquet output's bucket settings."""
        if self.iceberg.catalog.s3 is not None:
            return self.iceberg.catalog.s3
        s3 = self.storage.s3
        if self.storage.type == "s3" and s3 is not None:
            return IcebergS3(endpoint=s3.endpoint, region=s3.region, credentials_secret=s3.credentials_secret)
        return IcebergS3()


# Five fields (minute hour day-of-month month day-of-week) of digits, names, `*`, `?`, ranges, steps, lists,
# or one of the macros: what the CronJob controller accepts, checked here so that a typo is reported on the
# resource instead of failing every apply of the CronJob.
CRON_PATTERN = (r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
                r"|([0-9A-Za-z*?/,-]+\s+){4}[0-9A-Za-z*?/,-]+)$")


class CompactionSpec(SpecModel):
    """`zeek-pipeline compact` of closed hours as a CronJob: merges each closed (log type, hour)'s small files
    into files of about targetMB, with the writer's output settings (S3 credentials, the volume, config.json).

    Unset `enabled` means on, except on a ReadWriteOncePod claim (only the writer's pod may mount it). On a
    ReadWriteOnce claim the Job is scheduled onto the writer's node (pod affinity): the volume attaches to
    one node, which every pod there may mount.
    """

    enabled: bool | None = Field(default=None,
                                 description="Run compaction (unset: on unless the writer's claim is "
                                             "ReadWriteOncePod only).")
    schedule: str = Field(default="7 * * * *", max_length=128, pattern=CRON_PATTERN,
                          description="Cron schedule of the CronJob (default: hourly, 7 minutes past).")
    suspend: bool = Field(default=False, description="Keep the CronJob but start no new Job.")
    grace_seconds: int = Field(default=3600, ge=0, le=30 * 86_400,
                               description="An hour is closed this long after its end (late data still lands "
                                           "as a new small file, merged by the next run).")
    target_mb: int = Field(default=128, ge=1, le=16_384, alias="targetMB",
                           description="Size of the merged files (MB).")
    active_deadline_seconds: int = Field(default=3000, ge=60, le=7 * 86_400,
                                         description="A run taking longer is stopped (a later run recovers it).")
    # Measured: a run over 31 hours (1240 files, 183 MB) peaked at 1.75 GB RSS with compaction.slice_mb 16,
    # all of it in one ssl hour (2.0M rows); see docs/operator.md "Compaction".
    resources: Resources = _resources("100m", "512Mi", "1", "2560Mi")


class HealthSpec(SpecModel):
    enabled: bool = Field(default=True, description="Run the health dashboard and its Service.")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP",
                                                                           description="Service type.")
    port: int = Field(default=8080, ge=1, le=65535, description="Service port of the dashboard.")
    resources: Resources = _resources("50m", "128Mi", "500m", "256Mi")


class ConfigMapRef(SpecModel):
    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap in the pipeline's namespace.")
    rules_key: str = Field(default="normalization.json", pattern=SECRET_KEY_PATTERN,
                           description="Key holding normalization.json (JSON or YAML); absent means the default.")
    schema_key: str = Field(default="schema.json", pattern=SECRET_KEY_PATTERN,
                            description="Key holding schema.json (JSON or YAML); absent means the default.")


_PRESERVE = WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})


class NormalizationSpec(SpecModel):
    """Overrides of config/normalization.json and config/schema.json: inline, or from a ConfigMap."""

    rules: Annotated[dict[str, Any] | None, _PRESERVE] = Field(default=
        None, description="Inline normalization.json (log type -> promote/static/enrich rule).")
    schema_: Annotated[dict[str, Any] | None, _PRESERVE] = Field(default=
        None, alias="schema", description="Inline schema.json (log type -> raw field types).")
    config_map_ref: ConfigMapRef | None = Field(default=None, description="Read the files from this ConfigMap instead.")

    @model_validator(mode="after")
    def _one_source(self) -> NormalizationSpec:
        if self.config_map_ref is not None and (self.rules is not None or self.schema_ is not None):
            raise ValueError("use either inline rules/schema or configMapRef, not both")
        return self


class LogSpec(SpecModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO",
                                                                description="Log level of every service.")
    format: Literal["text", "json"] = Field(default="json", description="json for log collectors, text for people.")


GEOIP_FILE_PATTERN = r"^([-._a-zA-Z0-9]+(/[-._a-zA-Z0-9]+)*)?$"  # relative, no leading slash


def _no_parent(value: str) -> str:
    if ".." in value.split("/"):
        raise ValueError(f"{value!r} must stay inside the volume (no '..')")
    return value


GeoIpFile = Annotated[str, Field(max_length=253, pattern=GEOIP_FILE_PATTERN), AfterValidator(_no_parent)]


class GeoIpSpec(SpecModel):
    """MaxMind DB files (GeoLite2/GeoIP2 City and ASN) for GeoIP/ASN enrichment, from exactly one source.

    The source is mounted read-only into the normalizer-enricher at a fixed path and the config points at
    the two files. A Secret or ConfigMap holds at most 1 MiB (enough for a Country or ASN database, not for
    GeoLite2-City): put larger files on a volume (claimName).
    """

    model_config = ConfigDict(json_schema_extra=_cel(
        ("[has(self.secretName), has(self.configMapName), has(self.claimName)].filter(x, x).size() == 1",
         "set exactly one of secretName, configMapName, claimName"),
        ("self.cityFile != '' || self.asnFile != ''", "name at least one of cityFile, asnFile"),
    ))

    secret_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN,
                                    description="Secret holding the database files as keys.")
    config_map_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN,
                                        description="ConfigMap holding the database files as binaryData keys.")
    claim_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN,
                                   description="PersistentVolumeClaim holding the database files (mounted "
                                               "read-only; several replicas on several nodes need ReadOnlyMany).")
    city_file: GeoIpFile = Field(default="GeoLite2-City.mmdb",
                                 description="The City (or Country) database: key of the Secret/ConfigMap, or "
                                             "path inside the volume; empty: no city database.")
    asn_file: GeoIpFile = Field(default="GeoLite2-ASN.mmdb",
                                description="The ASN database: key of the Secret/ConfigMap, or path inside the "
                                            "volume; empty: no ASN database.")
    cache_size: int = Field(default=100_000, ge=0, le=10_000_000,
                            description="Addresses whose answers are cached (LRU); 0 disables the cache.")

    @model_validator(mode="after")
    def _one_source(self) -> GeoIpSpec:
        sources = [name for name, value in (("secretName", self.secret_name), ("configMapName", self.config_map_name),
                                            ("claimName", self.claim_name)) if value is not None]
        if len(sources) != 1:
            raise ValueError(f"set exactly one of secretName, configMapName, claimName (got {sources or 'none'})")
        if not self.city_file and not self.asn_file:
            raise ValueError("name at least one of cityFile, asnFile")
        if self.claim_name is None:
            bad = [name for name in (self.city_file, self.asn_file) if name and "/" in name]
            if bad:
                raise ValueError(f"{bad[0]!r}: a Secret or ConfigMap key has no '/' (paths are for claimName)")
        return self

    @property
    def files(self) -> list[str]:
        return [name for name in (self.city_file, self.asn_file) if name]


class EnrichSpec(SpecModel):
    local_networks: list[str] | None = Field(default=
        None, max_length=1000, description="CIDRs that count as local (default: RFC 1918 and friends).")
    community_id_seed: int = Field(default=0, ge=0, le=65535, description="Community ID seed.")
    geoip: GeoIpSpec | None = Field(default=None, description="GeoIP/ASN enrichment from MaxMind DB files "
                                                              "(off when unset).")


class PipelineSpec(SpecModel):
    """Everything a ZeekPipeline runs: Kafka, the three services, storage, rules."""

    kafka: KafkaSpec = Field(..., description="The Kafka (or Redpanda) cluster and topics.")
    image: ImageSpec = Field(default=ImageSpec(), description="Container image of the services.")
    normalizer: NormalizerSpec = Field(default=NormalizerSpec(), description="The normalizer-enricher.")
    writer: WriterSpec = Field(default=WriterSpec(), description="The parquet-writer.")
    health: HealthSpec = Field(default=HealthSpec(), description="The health dashboard.")
    compaction: CompactionSpec = Field(default=CompactionSpec(),
                                       description="Scheduled compaction of the Parquet lake's closed hours.")
    normalization: NormalizationSpec = Field(default_factory=NormalizationSpec,
                                             description="normalization.json / schema.json overrides.")
    log: LogSpec = Field(default=LogSpec(), description="Logging of the services.")
    enrich: EnrichSpec = Field(default=EnrichSpec(), description="Enrichment settings.")

    @model_validator(mode="after")
    def _compaction_can_mount(self) -> PipelineSpec:
        if self.compaction.enabled and not compaction_can_mount(self.writer.storage):
            raise ValueError("compaction.enabled needs a volume a second pod can mount: the writer's claim is "
                             "ReadWriteOncePod only (add ReadWriteOnce or ReadWriteMany, use s3, or leave "
                             "compaction.enabled unset)")
        return self

    @property
    def compaction_enabled(self) -> bool:
        """compaction.enabled, or when unset: on wherever the compactor's pod can reach the output."""
        enabled = self.compaction.enabled
        return compaction_can_mount(self.writer.storage) if enabled is None else enabled

    @property
    def iceberg_maintenance_enabled(self) -> bool:
        """`compact --iceberg` runs on the compaction schedule wherever the Iceberg output is on."""
        return self.writer.iceberg.enabled and self.compaction_enabled


def compaction_can_mount(storage: StorageSpec) -> bool:
    """S3, or a claim a pod beside the writer may mount (ReadWriteOncePod admits the writer's pod only)."""
    return storage.type == "s3" or any(mode != "ReadWriteOncePod" for mode in storage.pvc.access_modes)


# ------------------------------------------------------------------------------------------------ parse


class SpecError(ValueError):
    """An invalid spec: `problems` are `(field path, message)`, the path as written in the resource."""

    def __init__(self, problems: list[tuple[str, str]], reason: str = "InvalidSpec") -> None:
        self.problems = problems
        self.reason = reason
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))

    @property
    def field(self) -> str:
        return self.problems[0][0] if self.problems else "spec"


def _path(loc: tuple[int | str, ...]) -> str:
    text = "spec"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def parse_spec(raw: Mapping[str, Any] | None) -> PipelineSpec:
    """Validate a resource's spec (as the API server stored it); raise SpecError naming each bad field."""
    try:
        return PipelineSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            message = item["msg"].removeprefix("Value error, ")
            problems.append((_path(tuple(item["loc"])), message))
        raise SpecError(problems) from None
