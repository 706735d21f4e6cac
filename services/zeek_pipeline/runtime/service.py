"""ServiceRuntime: the shell around a service's Kafka loop (signals, probes, status, health line, metrics).

A service builds one, calls `start()`, runs its loop until `stop_requested`, calling `tick()` between
batches, and ends with `close()`. The loop itself stays free of monitoring code.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import psutil
from confluent_kafka import KafkaError

from zeek_pipeline import __version__
from zeek_pipeline.kafka import config as kafka_config
from zeek_pipeline.runtime.metrics import ServiceMetrics
from zeek_pipeline.runtime.probes import ProbeServer
from zeek_pipeline.runtime.status import PartitionRef, State, StatusPublisher, StatusRecord
from zeek_pipeline.settings import Settings

SAMPLE_SECONDS = 5.0
HEALTH_LINE_SECONDS = 30.0


def instance_id(settings: Settings) -> str:
    """Stable per pod: the configured id, else POD_NAME (Kubernetes downward API), else the host name."""
    return settings.instance_id or os.environ.get("POD_NAME") or socket.gethostname()


class ServiceRuntime:
    def __init__(
        self,
        component: str,
        settings: Settings,
        http_port: int | None,
        *,
        http_host: str = "0.0.0.0",
        status_extra: Callable[[], dict[str, Any]] | None = None,
        health_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.component = component
        self.settings = settings
        self.instance = instance_id(settings)
        self.log = logging.getLogger(f"zeek_pipeline.{component}")
        self.metrics = ServiceMetrics(component)
        self.stop_event = threading.Event()
        self.state: State = "starting"
        self.reason = ""
        self.assigned: set[tuple[str, int]] = set()
        self.broker_reachable = True
        self.fatal_error: str | None = None
        self.started_at = time.time()
        self._status_extra = status_extra
        self._health_extra = health_extra
        self._http = (http_host, http_port)
        self._probes: ProbeServer | None = None
        self._status: StatusPublisher | None = None
        self._process = psutil.Process()
        self._next_sample = 0.0
        self._next_status = 0.0
        self._next_health = time.monotonic() + HEALTH_LINE_SECONDS
        self._config_hash = settings.config_hash()

    # --- lifecycle -------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT ask the loop to stop; a second signal is not needed (the loop exits in bounded time)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.log.info("signal %s received: finishing the current batch", signal.Signals(signum).name)
            self.request_stop(f"signal {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def start(self) -> None:
        host, port = self._http
        if port is not None:
            self._probes = ProbeServer(host, port, self.metrics.registry, self.readiness, self.status_dict).start()
            self.log.info("probes listening", extra={"context": {"port": self._probes.port}})
        try:
            self._status = StatusPublisher(kafka_config.producer(self.settings), self.settings.status.topic)
        except Exception as exc:  # noqa: BLE001 - status is best effort
            self.log.warning("status publisher unavailable: %s", exc)
        self.publish_status()

    @property
    def probe_port(self) -> int | None:
        return self._probes.port if self._probes else None

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self, reason: str) -> None:
        self.state = "stopping"
        self.reason = reason
        self.stop_event.set()

    def close(self) -> None:
        """Say "stopped", then tombstone the key: a clean exit leaves nothing for the health service to keep."""
        self.state = "stopped"
        self.publish_status()
        self.health_line()
        if self._status is not None:
            self._status.retire(f"{self.component}/{self.instance}")
            self._status.close()
        if self._probes is not None:
            self._probes.stop()

    # --- state the loop reports --------------------------------------------------------------------
    def set_state(self, state: State, reason: str = "") -> None:
        if (state, reason) != (self.state, self.reason):
            self.log.info("state %s", state, extra={"context": {"reason": reason} if reason else None})
        self.state, self.reason = state, reason

    def set_assignment(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.assigned = set(partitions)
        self.metrics.set_assigned(len(self.assigned))

    def on_kafka_error(self, err: KafkaError) -> None:
        """librdkafka's error_cb: remember reachability; a fatal error stops the service (Kubernetes restarts it)."""
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):  # noqa: SLF001
            self.broker_reachable = False
            self.set_state("degraded", f"broker unreachable: {err.str()}")
        if err.fatal():
            self.fatal_error = err.str()
            self.metrics.error(f"fatal kafka error: {err.str()}")
            self.request_stop(f"fatal kafka error: {err.str()}")
        else:
            self.log.warning("kafka: %s", err.str())

    def broker_ok(self) -> None:
        """Called when a broker round trip succeeded."""
        if not self.broker_reachable:
            self.broker_reachable = True
            if self.state == "degraded" and self.reason.startswith("broker unreachable"):
                self.set_state("ok")

    def readiness(self) -> tuple[bool, str]:
        """Ready = this instance can do its work: started (topics found, clients built), the broker answers,
        and no fault has paused it (a degraded writer: disk full, object store down).

        Owning partitions is not part of it. An instance without partitions is a healthy standby that takes
        some at the next rebalance; requiring them deadlocked every rollout once replicas reached the
        partition count (the surge pod never got one, so it never turned Ready and the rollout never went on).
        """
        if self.state in ("stopping", "stopped", "starting"):
            return False, self.state
        if not self.broker_reachable:
            return False, "broker unreachable"
        if self.state == "degraded":
            return False, self.reason or "degraded"
        return True, "ready"

    # --- periodic output ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Cheap when nothing is due: one monotonic clock read."""
        now = time.monotonic()
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_SECONDS
            self.metrics.sample(now)
        if now >= self._next_status:
            self._next_status = now + self.settings.status.interval_seconds
            self.publish_status()
        if now >= self._next_health:
            self._next_health = now + HEALTH_LINE_SECONDS
            self.health_line()

    def status_record(self) -> StatusRecord:
        return StatusRecord(
            component=self.component,
            instance=self.instance,
            version=__version__,
            config_hash=self._config_hash,
            state=self.state,
            reason=self.reason,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            interval_seconds=self.settings.status.interval_seconds,
            totals=self.metrics.totals(),
            rates=self.metrics.rates(),
            rss_bytes=self._process.memory_info().rss,
            buffer_pct=self.metrics.buffer_pct,
            assigned=[PartitionRef(topic=t, partition=p) for t, p in sorted(self.assigned)],
            reject_reasons=dict(self.metrics.reject_reasons),
            recent_rejects=self.metrics.recent_rejects.snapshot(),
            recent_files=self.metrics.recent_files.snapshot(),
            log_types=self.metrics.flows.snapshot(),
            lake=self.metrics.lake.snapshot(),
            last_error=self.metrics.last_error,
            extra=self._status_extra() if self._status_extra else {},
        )

    def status_dict(self) -> dict[str, Any]:
        return self.status_record().model_dump()

    def publish_status(self) -> None:
        if self._status is not None:
            self._status.publish(self.status_record())

    def health_line(self) -> None:
        """The seed's periodic line: `memory=612MB buffer=38% eps=8200` plus totals."""
        totals = self.metrics.totals()
        rates = self.metrics.rates()
        context: dict[str, Any] = {
            "memory": f"{self._process.memory_info().rss // (1024 * 1024)}MB",
            "buffer": f"{self.metrics.buffer_pct:.0f}%" if self.metrics.buffer_pct is not None else "n/a",
            "eps": f"{rates['in_eps']:.0f}",
            "consumed": totals["consumed"],
            "produced": totals["produced"],
            "rejected": totals["rejected"],
            "errors": totals["errors"],
            "state": self.state,
        }
        if self._health_extra:
            context.update(self._health_extra())
        logging.getLogger("zeek_pipeline.health").info("health", extra={"context": context})
