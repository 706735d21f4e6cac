"""Faults on the real cluster while real data flows: `kubectl delete pod` and `kill -9` of the container process
of the normalizer-enricher and the parquet-writer, a containerd restart, and a forced deletion (SIGKILL and a
new pod name) of the normalizer; afterwards every published record is in Parquet exactly once (counted by
(partition, offset) with DuckDB). Also measures how long read_committed readers of the normalized topic stall
after the normalizer is killed in the middle of a transaction (same pod restarted; pod replaced)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer
from tests.cluster.support import (
    ROOT,
    apply,
    claim_directory,
    container_pid,
    isolated,
    parquet_rows,
    pipeline_manifest,
    pod_names,
    record_measurements,
    release,
    small,
    wait_deployments,
)
from tests.infra.cluster.cluster import Cluster
from tests.infra.waiting import ok, wait_for
from tests.infra.zeek_data import json_logs, read_lines

NAMESPACE = "zeek-faults"


def _publisher(bootstrap: str, topic: str, files: list[Path], rate: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "zeek-pipeline"), "publish", "--topic", topic, "--brokers", bootstrap,
         "--rate", f"{rate}/s", "--json", *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


class ArrivalWatcher:
    """Reads the normalized topic and notes when records arrive, per partition. Two of them, read_committed
    and read_uncommitted, show the stall that a killed instance's open transaction causes: the new instance's
    records are visible uncommitted at once, committed only once the old transaction is aborted."""

    def __init__(self, bootstrap: str, topic: str, isolation: str) -> None:
        self.arrivals: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex[:8]}",
                                   "isolation.level": isolation, "auto.offset.reset": "latest",
                                   "enable.auto.commit": False})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for message in self._consumer.consume(500, timeout=0.2):
                if message.error() is None:
                    self.arrivals.setdefault(message.partition(), []).append(now)

    def first_after(self, partition: int, moment: float) -> float | None:
        later = [t for t in self.arrivals.get(partition, []) if t > moment]
        return later[0] if later else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()


def read_committed_gap(committed: ArrivalWatcher, killed_at: float) -> float:
    """The longest time, over partitions, from the kill to the first record a read_committed reader gets after
    it: the replacement's start, its wait for the partitions (the group's session timeout after a crash) and
    any stall from the killed instance's open transaction."""
    gaps = [t - killed_at for p in committed.arrivals if (t := committed.first_after(p, killed_at + 1.0))]
    return round(max(gaps), 1) if gaps else float("nan")


def read_committed_stall(committed: ArrivalWatcher, uncommitted: ArrivalWatcher, killed_at: float) -> float:
    """The longest time, over partitions, between the replacement's first record (seen read_uncommitted) and
    the first record a read_committed reader gets after the kill."""
    stalls = []
    for partition in uncommitted.arrivals:
        new_output = uncommitted.first_after(partition, killed_at + 1.0)  # the killed process sends nothing
        visible = committed.first_after(partition, killed_at + 1.0)
        if new_output is not None and visible is not None:
            stalls.append(max(0.0, visible - new_output))
    return round(max(stalls), 1) if stalls else float("nan")


def test_pod_deletion_kill_9_and_containerd_restart_lose_and_duplicate_nothing(
    cluster: Cluster, helm, kubectl, project_image, host_bootstrap: str  # type: ignore[no-untyped-def]
) -> None:
    with release(helm, kubectl, "zf", NAMESPACE, project_image):
        stalls = run_faults(cluster, kubectl, project_image, host_bootstrap)
    record_measurements(stalls)


def run_faults(cluster: Cluster, kubectl, project_image, host_bootstrap: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    changes = small(**isolated("faults"))
    changes.update({"writer__flush__intervalSeconds": 10, "normalizer__autoscaling": {"enabled": False}})
    apply(kubectl, NAMESPACE, pipeline_manifest(project_image, name="faults", **changes))
    wait_deployments(kubectl, NAMESPACE, "faults")

    files = json_logs()
    expected = sum(1 for path in files for _ in read_lines(path))
    committed = ArrivalWatcher(host_bootstrap, "faults-normalized", "read_committed")
    uncommitted = ArrivalWatcher(host_bootstrap, "faults-normalized", "read_uncommitted")
    publisher = _publisher(host_bootstrap, "faults-raw", files, rate=4000)  # ~52 s of flow
    stalls: dict[str, float] = {}
    try:
        time.sleep(6)
        normalizer = pod_names(kubectl, NAMESPACE, "faults-normalizer-enricher")[0]
        ok(kubectl("-n", NAMESPACE, "delete", "pod", normalizer, "--wait=false"))
        time.sleep(6)
        writer = pod_names(kubectl, NAMESPACE, "faults-parquet-writer")[0]
        os.kill(container_pid(cluster, kubectl, NAMESPACE, writer), signal.SIGKILL)
        time.sleep(6)
        normalizer = wait_for("a running normalizer", lambda: pod_names(kubectl, NAMESPACE,
                                                                         "faults-normalizer-enricher"), timeout=120)[0]
        killed_at = time.monotonic()
        os.kill(container_pid(cluster, kubectl, NAMESPACE, normalizer), signal.SIGKILL)
        time.sleep(4)
        assert cluster.node is not None
        cluster.node.restart_containerd()
        time.sleep(8)
        # a crash that replaces the pod (a new name, so a new transactional.id): force-delete = SIGKILL
        normalizer = wait_for("a running normalizer", lambda: pod_names(kubectl, NAMESPACE,
                                                                         "faults-normalizer-enricher"), timeout=120)[0]
        replaced_at = time.monotonic()
        ok(kubectl("-n", NAMESPACE, "delete", "pod", normalizer, "--grace-period=0", "--force", "--wait=false"))
        summary = json.loads(publisher.communicate(timeout=300)[0].strip().splitlines()[-1])
        assert publisher.returncode == 0 and summary["records"] == expected
        claim = claim_directory(kubectl, NAMESPACE, "faults-parquet")
        total, distinct, _types = wait_for(
            "every record in Parquet", lambda: (r := parquet_rows(claim))[0] >= expected and r, timeout=300,
            interval=5)
        stalls["read_committed_stall_after_kill_9_s"] = read_committed_stall(committed, uncommitted, killed_at)
        stalls["read_committed_stall_after_forced_replacement_s"] = read_committed_stall(
            committed, uncommitted, replaced_at)
        stalls["read_committed_gap_after_kill_9_s"] = read_committed_gap(committed, killed_at)
        stalls["read_committed_gap_after_forced_replacement_s"] = read_committed_gap(committed, replaced_at)
    finally:
        if publisher.poll() is None:
            publisher.kill()
        committed.close()
        uncommitted.close()
    assert total == expected, f"{total} rows for {expected} published records"
    assert distinct == total, f"{total - distinct} duplicates by (partition, offset)"
    # the pods came back by themselves after every fault
    for service in ("normalizer-enricher", "parquet-writer", "health"):
        assert pod_names(kubectl, NAMESPACE, f"faults-{service}")
    return stalls
