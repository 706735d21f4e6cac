"""librdkafka configuration dictionaries derived from Settings.

`kafka.librdkafka` passes through to every client and wins over derived values; `kafka.librdkafka_consumer`
and `kafka.librdkafka_producer` pass through to one kind of client only and win over both.

Two clusters, one the default for both: the input cluster (`kafka.brokers`) holds zeek-raw and the
normalizer-enricher's group; the output cluster (`output.kafka.brokers`) holds zeek-normalized, zeek-dlq, the
status topic and the parquet-writer's group. Producers always write to the output cluster; consumers and
admin clients name theirs.
"""

from __future__ import annotations

from typing import Any, Literal

from zeek_pipeline.kafka.client_log import librdkafka_logger
from zeek_pipeline.settings import KafkaSecurity, Settings


def _security(security: KafkaSecurity) -> dict[str, Any]:
    conf: dict[str, Any] = {"security.protocol": security.protocol}
    if security.sasl_mechanism:
        conf["sasl.mechanism"] = security.sasl_mechanism
    if security.sasl_username:
        conf["sasl.username"] = security.sasl_username
    if security.sasl_password is not None:
        conf["sasl.password"] = security.sasl_password.get_secret_value()
    for key, value in (
        ("ssl.ca.location", security.ssl_ca_location),
        ("ssl.certificate.location", security.ssl_certificate_location),
        ("ssl.key.location", security.ssl_key_location),
    ):
        if value:
            conf[key] = value
    if security.ssl_key_password is not None:
        conf["ssl.key.password"] = security.ssl_key_password.get_secret_value()
    return conf


Cluster = Literal["input", "output"]


def bootstrap_servers(settings: Settings, cluster: Cluster) -> str:
    return settings.input_bootstrap_servers if cluster == "input" else settings.output_bootstrap_servers


def common(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """Connection settings every client shares."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap or settings.kafka.bootstrap_servers,
        "client.id": f"zeek-pipeline-{settings.instance_id or 'local'}",
        "socket.keepalive.enable": True,
        # librdkafka's own lines (`%4|…|GETPID|…`) through logging, rate-limited, never raw on stderr.
        "logger": librdkafka_logger(),
    }
    conf.update(_security(settings.kafka.security))
    conf.update(settings.kafka.librdkafka)
    return conf


def consumer(settings: Settings, group_id: str, *, cluster: Cluster = "input", **overrides: Any) -> dict[str, Any]:
    """A manual-commit, read_committed consumer with cooperative rebalancing, on the cluster its topic lives on."""
    conf = common(settings, bootstrap_servers(settings, cluster))
    conf.update({
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 30_000,
        "max.poll.interval.ms": 300_000,
        # Bound what librdkafka prefetches so a large backlog cannot grow memory without limit (part of the
        # services' fixed overhead: 4 MB queued and 4 MB in flight consumed the real mix as fast as 8 + 8, and
        # 32 + 16 before that, at ~280k events/s, 5x what a writer types; a bare consumer peaked 7 MB lower) ...
        "queued.max.messages.kbytes": 4_096,
        "fetch.max.bytes": 4 * 1024 * 1024,
        # ... and fetch again soon after the application has made room: librdkafka's default waits a whole
        # second once that bound is reached, which capped both services (and a bare consume loop) at about
        # 80k events/s on a backlog however fast they processed (bench/README.md).
        "fetch.queue.backoff.ms": 20,
    })
    conf.update(settings.kafka.librdkafka)
    conf.update(settings.kafka.librdkafka_consumer)
    conf.update(overrides)
    return conf


def producer(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, compressed, batching producer for the output topics (always the output cluster)."""
    conf = common(settings, bootstrap_servers(settings, "output"))
    conf.update({
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.output.kafka.compression,
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 65_536,
        "queue.buffering.max.messages": 200_000,
        "message.max.bytes": settings.normalizer.max_message_bytes + 65_536,
    })
    conf.update(settings.kafka.librdkafka)
    conf.update(settings.kafka.librdkafka_producer)
    conf.update(overrides)
    return conf


def admin(settings: Settings, cluster: Cluster = "input") -> dict[str, Any]:
    return common(settings, bootstrap_servers(settings, cluster))
