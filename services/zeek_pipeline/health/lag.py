"""Consumer-group lag per topic and partition, its trend, and broker reachability.

Watermarks, metadata and group state come from the AdminClient; committed offsets from a Consumer in the group
that never subscribes (`zeek_pipeline.kafka.offsets`, which says why not the AdminClient).

Lag is the high watermark minus the group's committed offset (minus the log start when the group has committed
nothing, since the services start from the earliest offset). A short in-memory history gives each partition a
trend and each topic a "growing for N s" figure the verdict uses; nothing is persisted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # exported, not in __all__

from zeek_pipeline.health.models import KafkaState, Lag, LagGroup, LagPartition, LagTopic, Trend
from zeek_pipeline.kafka.offsets import CommittedOffsets

log = logging.getLogger("zeek_pipeline.health.lag")

HISTORY_SECONDS = 900.0
TREND_WINDOW_SECONDS = 60.0
Sample = tuple[float, int]


@dataclass(frozen=True)
class GroupSpec:
    group: str
    topic: str
    role: str
    bootstrap: str = ""  # the cluster of the topic and the group; empty: the monitor's own brokers


class _Cluster:
    """One Kafka cluster the monitor reads: its admin client, its committed-offsets reader, its groups."""

    def __init__(self, conf: Mapping[str, Any], groups: Sequence[GroupSpec]) -> None:
        self.conf = dict(conf)
        self.bootstrap = str(conf.get("bootstrap.servers", ""))
        self.groups = list(groups)
        self.admin: AdminClient | None = None
        self.offsets = CommittedOffsets(self.conf)


@dataclass(frozen=True)
class LagSnapshot:
    lag: Lag
    kafka: KafkaState
    running: bool = True


def trend(samples: Sequence[Sample], now: float, window: float = TREND_WINDOW_SECONDS) -> Trend:
    """Compare the latest lag with the oldest one inside the window."""
    if len(samples) < 2:
        return "unknown"
    inside = [s for s in samples if s[0] >= now - window]
    past = inside[0] if len(inside) >= 2 else samples[-2]
    current = samples[-1][1]
    if current > past[1]:
        return "growing"
    if current < past[1]:
        return "shrinking"
    return "steady"


def growing_for(samples: Sequence[Sample]) -> float:
    """Seconds the lag has risen without ever dipping (plateaus allowed, a leading plateau not counted).

    A healthy consumer under load makes the lag saw-tooth, which resets this; a stalled one lets it climb.
    """
    if len(samples) < 2:
        return 0.0
    start = len(samples) - 1
    while start > 0 and samples[start - 1][1] <= samples[start][1]:
        start -= 1
    while start < len(samples) - 1 and samples[start + 1][1] == samples[start][1]:
        start += 1
    if samples[-1][1] > samples[start][1]:
        return samples[-1][0] - samples[start][0]
    return 0.0


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return str(err.str()) if hasattr(err, "str") else str(err)
    return str(exc) or type(exc).__name__


def _result(future: Future[Any], timeout: float) -> Any:
    return future.result(timeout=timeout)


class LagMonitor:
    """The lag source the app uses: `refresh()` reads everything once; `start()` refreshes in a thread.

    Each group is read on its own cluster (GroupSpec.bootstrap): with `output.kafka.brokers` set, the
    normalizer-enricher's group on the input cluster and the parquet-writer's on the output one. `kafka` then
    describes both: reachable only when both are, the brokers summed, each error prefixed by its cluster."""

    def __init__(self, admin_conf: Mapping[str, Any], groups: Sequence[GroupSpec], *, interval: float = 5.0,
                 clock: Callable[[], float] = time.time, timeout: float = 5.0) -> None:
        default = str(admin_conf.get("bootstrap.servers", ""))
        self._groups = list(groups)
        by_bootstrap: dict[str, list[GroupSpec]] = {}
        for spec in self._groups:
            by_bootstrap.setdefault(spec.bootstrap or default, []).append(spec)
        self._clusters = [_Cluster({**admin_conf, "bootstrap.servers": bootstrap}, specs)
                          for bootstrap, specs in by_bootstrap.items()] or [_Cluster(admin_conf, [])]
        self._bootstrap = "; ".join(cluster.bootstrap for cluster in self._clusters)
        self._interval = interval
        self._clock = clock
        self._timeout = timeout
        self._history: dict[tuple[str, ...], deque[Sample]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)
        self._snapshot = LagSnapshot(
            Lag(reachable=False, checked_at=None, error="not read yet",
                groups=[LagGroup(group=g.group, role=g.role, state=None, members=None, error="not read yet",
                                 topics=[]) for g in self._groups]),
            KafkaState(bootstrap=self._bootstrap, reachable=False, checked_at=None, brokers=None,
                       error="not checked yet"))

    # --- the source protocol ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._timeout * 4)
        if not self._thread.is_alive():
            self.close()

    def close(self) -> None:
        """Close the group consumers (they never joined their groups, so this leaves no trace)."""
        for cluster in self._clusters:
            cluster.offsets.close()

    def snapshot(self) -> LagSnapshot:
        with self._lock:
            snap = self._snapshot
        if self._thread.ident is not None and not self._thread.is_alive() and not self._stop.is_set():
            return LagSnapshot(snap.lag, snap.kafka, running=False)
        return snap

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep refreshing; the page shows the last error
                log.exception("lag refresh failed")
            self._stop.wait(self._interval)

    # --- one read -----------------------------------------------------------------------------
    def refresh(self) -> LagSnapshot:
        now = self._clock()
        with self._lock:
            old = {group.group: group for group in self._snapshot.lag.groups}
            old_checked = self._snapshot.lag.checked_at
        states: list[KafkaState] = []
        views: dict[str, LagGroup] = {}
        errors: list[str] = []
        for cluster in self._clusters:
            state, read, error = self._read_cluster(cluster, now)
            states.append(state)
            if error:
                errors.append(self._in_cluster(cluster, error))
            for spec in cluster.groups:
                view = read.get(spec.group) if read is not None else old.get(spec.group)
                if view is not None:
                    views[spec.group] = view
        kafka = self._combined(states, now)
        read_any = any(state.reachable for state in states)
        lag = Lag(reachable=kafka.reachable, checked_at=now if read_any else old_checked,
                  error="; ".join(errors) or None, groups=[views[spec.group] for spec in self._groups
                                                          if spec.group in views])
        snapshot = LagSnapshot(lag, kafka)
        with self._lock:
            self._snapshot = snapshot
        return snapshot

    def _in_cluster(self, cluster: _Cluster, text: str) -> str:
        return text if len(self._clusters) == 1 else f"{cluster.bootstrap}: {text}"

    def _combined(self, states: list[KafkaState], now: float) -> KafkaState:
        if len(states) == 1:
            return states[0]
        brokers = [state.brokers for state in states]
        errors = [state.error for state in states if state.error]
        return KafkaState(bootstrap=self._bootstrap, reachable=all(state.reachable for state in states),
                          checked_at=now, brokers=None if None in brokers else sum(b or 0 for b in brokers),
                          error="; ".join(errors) or None)

    def _read_cluster(self, cluster: _Cluster, now: float
                      ) -> tuple[KafkaState, dict[str, LagGroup] | None, str | None]:
        """One cluster's state, its groups' views (None when it is unreachable) and the error to show."""
        if cluster.admin is None:
            cluster.admin = AdminClient(cluster.conf)
        admin = cluster.admin
        admin.poll(0)  # serves librdkafka's log lines to the `logger` in the conf (they queue up otherwise)
        try:
            metadata = admin.list_topics(timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - unreachable is a state to show, not a crash
            error = f"Kafka unreachable: {_error_text(exc)}"
            return (KafkaState(bootstrap=cluster.bootstrap, reachable=False, checked_at=now, brokers=None,
                               error=self._in_cluster(cluster, error)), None, error)
        kafka = KafkaState(bootstrap=cluster.bootstrap, reachable=True, checked_at=now,
                           brokers=len(metadata.brokers), error=None)
        topic_partitions = {name: sorted(t.partitions) for name, t in metadata.topics.items() if t.error is None}

        committed, group_errors = self._committed(cluster, topic_partitions)
        described = self._describe(admin, cluster.groups)
        wanted: list[TopicPartition] = []
        group_topics: dict[str, list[str]] = {}
        for spec in cluster.groups:
            names = [spec.topic]
            group_topics[spec.group] = names
            for name in names:
                wanted.extend(TopicPartition(name, p) for p in topic_partitions.get(name, []))
        latest, earliest, offsets_error = self._watermarks(admin, wanted)

        groups = {}
        for spec in cluster.groups:
            state, members = described.get(spec.group, (None, None))
            topics = []
            for name in group_topics[spec.group]:
                topics.append(self._topic_view(spec.group, name, topic_partitions.get(name), committed.get(
                    spec.group, {}).get(name, {}), latest, earliest, offsets_error, now))
            groups[spec.group] = LagGroup(group=spec.group, role=spec.role, state=state, members=members,
                                          error=group_errors.get(spec.group), topics=topics)
        return kafka, groups, offsets_error

    def _committed(self, cluster: _Cluster, topic_partitions: dict[str, list[int]]
                   ) -> tuple[dict[str, dict[str, dict[int, int | None]]], dict[str, str]]:
        """group -> topic -> partition -> committed offset (None when the group has none), read the safe way
        (`CommittedOffsets`: not AdminClient.list_consumer_group_offsets, librdkafka#5040)."""
        result: dict[str, dict[str, dict[int, int | None]]] = {}
        errors: dict[str, str] = {}
        for spec in cluster.groups:
            partitions = [TopicPartition(spec.topic, p) for p in topic_partitions.get(spec.topic, [])]
            topics = result.setdefault(spec.group, {})
            if not partitions:
                continue
            try:
                answer = cluster.offsets.read(spec.group, partitions, self._timeout)
            except Exception as exc:  # noqa: BLE001 - one group's failure must not hide the other
                errors[spec.group] = f"committed offsets unavailable: {_error_text(exc)}"
                continue
            for (topic, partition), offset in answer.items():
                topics.setdefault(topic, {})[partition] = offset
        return result, errors

    def _describe(self, admin: AdminClient, groups: Sequence[GroupSpec]) -> dict[str, tuple[str | None, int | None]]:
        names = sorted({spec.group for spec in groups})
        described: dict[str, tuple[str | None, int | None]] = {}
        try:
            futures = admin.describe_consumer_groups(names, request_timeout=self._timeout)
        except Exception:  # noqa: BLE001 - the state is a nicety; lag does not depend on it
            return described
        for name, future in futures.items():
            try:
                description = _result(future, self._timeout * 2)
            except Exception as exc:  # noqa: BLE001 - see above
                log.debug("describe %s: %s", name, _error_text(exc))
                continue
            state = getattr(description.state, "name", None)
            described[name] = (state.lower() if isinstance(state, str) else None, len(description.members or []))
        return described

    def _watermarks(self, admin: AdminClient, partitions: list[TopicPartition]
                    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int], str | None]:
        latest: dict[tuple[str, int], int] = {}
        earliest: dict[tuple[str, int], int] = {}
        if not partitions:
            return latest, earliest, None
        error = None
        specs = ((OffsetSpec.latest(), latest), (OffsetSpec.earliest(), earliest))  # type: ignore[no-untyped-call]
        for spec, into in specs:
            try:
                futures = admin.list_offsets(dict.fromkeys(partitions, spec), request_timeout=self._timeout)
            except Exception as exc:  # noqa: BLE001 - shown on the page
                error = f"watermarks unavailable: {_error_text(exc)}"
                continue
            for tp, future in futures.items():
                try:
                    into[(tp.topic, tp.partition)] = int(_result(future, self._timeout * 2).offset)
                except Exception as exc:  # noqa: BLE001 - shown on the page
                    error = f"watermarks unavailable: {_error_text(exc)}"
        return latest, earliest, error

    def _topic_view(self, group: str, topic: str, partitions: list[int] | None, committed: dict[int, int | None],
                    latest: dict[tuple[str, int], int], earliest: dict[tuple[str, int], int],
                    offsets_error: str | None, now: float) -> LagTopic:
        if partitions is None:
            return LagTopic(topic=topic, lag=None, trend="unknown", growing_for_seconds=0.0,
                            error=f"topic {topic} does not exist", partitions=[])
        rows = []
        total: int | None = 0
        for partition in partitions:
            high = latest.get((topic, partition))
            start = earliest.get((topic, partition))
            done = committed.get(partition)
            lag: int | None = None
            if high is not None:
                base = done if done is not None else start
                lag = max(high - base, 0) if base is not None else None
            samples = self._remember((group, topic, str(partition)), now, lag)
            rows.append(LagPartition(partition=partition, committed=done, log_start=start, high_watermark=high,
                                     lag=lag, trend=trend(samples, now)))
            total = None if lag is None or total is None else total + lag
        samples = self._remember((group, topic), now, total)
        return LagTopic(topic=topic, lag=total, trend=trend(samples, now),
                        growing_for_seconds=round(growing_for(samples), 1),
                        error=offsets_error, partitions=rows)

    def _remember(self, key: tuple[str, ...], now: float, value: int | None) -> list[Sample]:
        history = self._history.setdefault(key, deque())
        if value is not None:
            history.append((now, value))
        while history and now - history[0][0] > HISTORY_SECONDS:
            history.popleft()
        return list(history)
