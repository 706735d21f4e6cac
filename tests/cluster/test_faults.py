"""Faults on the real cluster while real data flows: `kubectl delete pod` and `kill -9` of the container process
of the normalizer-enricher and the parquet-writer, and a containerd restart; afterwards every published record
is in Parquet exactly once (counted by (partition, offset) with DuckDB). Also measures how long read_committed
readers of the normalized topic stall after the normalizer is killed in the middle of a transaction."""

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
    release,
    small,
    wait_deployments,
)
from tests.infra.cluster.cluster import Cluster
from tests.infra.waiting import ok, wait_for
from tests.infra.zeek_data import json_logs, read_lines

NAMESPACE = "zeek-faults"
RESULTS = ROOT / "output" / "cluster-measurements.json"


def _publisher(bootstrap: str, topic: str, files: list[Path], rate: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "zeek-pipeline"), "publish", "--topic", topic, "--brokers", bootstrap,
         "--rate", f"{rate}/s", "--json", *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


class CommittedWatcher:
    """Reads the normalized topic read_committed and notes the time of every batch: the longest gap after a
    kill is the stall that an open transaction of the killed instance causes."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex[:8]}",
                                   "isolation.level": "read_committed", "auto.offset.reset": "latest",
                                   "enable.auto.commit": False})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if any(m.error() is None for m in self._consumer.consume(500, timeout=0.2)):
                self.arrivals.append(time.monotonic())

    def stall_after(self, moment: float) -> float:
        """Seconds from `moment` to the first committed record after it."""
        later = [t for t in self.arrivals if t > moment]
        return (later[0] - moment) if later else float("inf")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()


def test_pod_deletion_kill_9_and_containerd_restart_lose_and_duplicate_nothing(
    cluster: Cluster, helm, kubectl, project_image, host_bootstrap: str  # type: ignore[no-untyped-def]
) -> None:
    with release(helm, kubectl, "zf", NAMESPACE, project_image):
        stalls = run_faults(cluster, kubectl, project_image, host_bootstrap)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**previous, **stalls}, indent=1))
    print(f"measured: {stalls}")


def run_faults(cluster: Cluster, kubectl, project_image, host_bootstrap: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    changes = small(**isolated("faults"))
    changes.update({"writer__flush__intervalSeconds": 10, "normalizer__autoscaling": {"enabled": False}})
    apply(kubectl, NAMESPACE, pipeline_manifest(project_image, name="faults", **changes))
    wait_deployments(kubectl, NAMESPACE, "faults")

    files = json_logs()
    expected = sum(1 for path in files for _ in read_lines(path))
    watcher = CommittedWatcher(host_bootstrap, "faults-normalized")
    publisher = _publisher(host_bootstrap, "faults-raw", files, rate=6000)  # ~35 s of flow
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
        summary = json.loads(publisher.communicate(timeout=300)[0].strip().splitlines()[-1])
        assert publisher.returncode == 0 and summary["records"] == expected
        stalls["read_committed_stall_after_kill_9_s"] = round(watcher.stall_after(killed_at), 1)
    finally:
        if publisher.poll() is None:
            publisher.kill()
        watcher.close()

    claim = claim_directory(kubectl, NAMESPACE, "faults-parquet")
    total, distinct, _types = wait_for(
        "every record in Parquet", lambda: (r := parquet_rows(claim))[0] >= expected and r, timeout=300, interval=5)
    assert total == expected, f"{total} rows for {expected} published records"
    assert distinct == total, f"{total - distinct} duplicates by (partition, offset)"
    # the pods came back by themselves after every fault
    for service in ("normalizer-enricher", "parquet-writer", "health"):
        assert pod_names(kubectl, NAMESPACE, f"faults-{service}")
    return stalls
