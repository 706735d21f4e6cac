"""What the cluster tests do as a user would: install the chart, apply a ZeekPipeline, publish real Zeek logs,
forward a Service's port, and count what landed in the Parquet files of the writer's claim."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition
from tests.infra.cluster.cluster import Cluster, rollout_failure
from tests.infra.waiting import ok, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "zeek-pipeline"
PIPELINE_FILE = ROOT / "zeekpipeline.yaml"  # the README's example

Run = Callable[..., subprocess.CompletedProcess[str]]


def install_chart(helm: Run, release: str, namespace: str, image: tuple[str, str], *extra: str) -> None:
    """`helm install` of the chart with the locally built image (imported, never pulled), waiting for the operator."""
    repository, tag = image
    ok(helm("install", release, str(CHART), "-n", namespace, "--create-namespace",
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never", *extra, "--wait", "--timeout", "5m", timeout=400))


@contextlib.contextmanager
def release(helm: Run, kubectl: Run, name: str, namespace: str, image: tuple[str, str], *extra: str) -> Iterator[None]:
    """The chart installed for the block; afterwards, pass or fail, its pipelines are deleted while the operator
    still runs (it removes their finalizers), the release is uninstalled and the namespace deleted, so the
    node's CPU is free for the next test."""
    install_chart(helm, name, namespace, image, *extra)
    try:
        yield
    finally:
        kubectl("-n", namespace, "delete", "zp", "--all", "--timeout=120s", timeout=180)
        helm("uninstall", name, "-n", namespace, "--wait", "--timeout", "3m", timeout=300)
        kubectl("delete", "namespace", namespace, "--wait=false")


# Test pipelines other than the README's ask for little CPU: the node has two cores for all of them.
SMALL = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1536Mi"}}


def small(**changes: Any) -> dict[str, Any]:
    """spec changes with small CPU requests for the three services (kept unless `changes` say otherwise)."""
    return {"normalizer__resources": SMALL, "writer__resources": SMALL, **changes}


def pipeline_manifest(image: tuple[str, str], name: str | None = None, **spec_changes: Any) -> dict[str, Any]:
    """zeekpipeline.yaml as shipped, with only the image set the documented way (spec.image) and what a test
    changes on purpose."""
    manifest = yaml.safe_load(PIPELINE_FILE.read_text())
    repository, tag = image
    manifest["spec"]["image"].update(repository=repository, tag=tag, pullPolicy="Never")
    if name:
        manifest["metadata"]["name"] = name
    for path, value in spec_changes.items():
        target = manifest["spec"]
        keys = path.split("__")
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return manifest


def isolated(prefix: str) -> dict[str, Any]:
    """spec changes that give a pipeline its own topics and consumer groups on the shared dev broker."""
    return {
        "kafka__topics": {"raw": f"{prefix}-raw", "normalized": f"{prefix}-normalized", "dlq": f"{prefix}-dlq",
                          "status": f"{prefix}-status"},
        "kafka__consumerGroups": {"normalizer": f"{prefix}-normalizer", "writer": f"{prefix}-writer"},
    }


def pod_names(kubectl: Run, namespace: str, deployment: str) -> list[str]:
    """Running pods of one of a pipeline's Deployments (the operator labels them by component)."""
    selector = json.loads(ok(kubectl("-n", namespace, "get", "deployment", deployment, "-o", "json")).stdout)
    labels = ",".join(f"{k}={v}" for k, v in selector["spec"]["selector"]["matchLabels"].items())
    pods = json.loads(ok(kubectl("-n", namespace, "get", "pods", "-l", labels, "-o", "json")).stdout)["items"]
    return [p["metadata"]["name"] for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def container_pid(cluster: Cluster, kubectl: Run, namespace: str, pod: str) -> int:
    """The host PID of a pod's (first) container, from containerd: what `kill -9` on the node aims at."""
    status = json.loads(ok(kubectl("-n", namespace, "get", "pod", pod, "-o", "json")).stdout)["status"]
    container_id = status["containerStatuses"][0]["containerID"].split("://", 1)[1]
    assert cluster.node is not None
    for line in cluster.node.ctr("tasks", "ls").stdout.splitlines()[1:]:
        task, pid, _state = line.split()
        if task == container_id:
            return int(pid)
    raise AssertionError(f"no containerd task for {pod} ({container_id})")


def pod_rss_mb(kubectl: Run, namespace: str, pods: list[str]) -> dict[str, float]:
    """Resident memory (MB, rss + mapped files as the kernel counts them for the pod's cgroup) of each pod,
    read from the node's cgroup v1 memory controller."""
    from tests.infra.cluster.host import CGROUP_ROOT

    out = {}
    base = Path("/sys/fs/cgroup/memory") / CGROUP_ROOT
    for pod in pods:
        uid = ok(kubectl("-n", namespace, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")).stdout.strip()
        found = [d for d in base.rglob(f"pod{uid}") if d.is_dir()]
        if not found:
            continue
        stat = dict(line.split() for line in (found[0] / "memory.stat").read_text().splitlines())
        out[pod] = round((int(stat["total_rss"]) + int(stat["total_mapped_file"])) / 1e6, 1)
    return out


def apply(kubectl: Run, namespace: str, manifest: dict[str, Any]) -> None:
    ok(kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest)))


def rollout(kubectl: Run, namespace: str, deployment: str, timeout: int = 300) -> None:
    failure = rollout_failure(kubectl, namespace, deployment, timeout)
    assert failure is None, failure


def wait_deployments(kubectl: Run, namespace: str, pipeline: str, timeout: int = 300) -> None:
    for service in ("normalizer-enricher", "parquet-writer", "health"):
        wait_for(f"deployment {pipeline}-{service}",
                 lambda s=service: kubectl("-n", namespace, "get", "deployment", f"{pipeline}-{s}").returncode == 0,
                 timeout=120, interval=1)
        rollout(kubectl, namespace, f"{pipeline}-{service}", timeout)


def publish(bootstrap: str, topic: str, files: list[Path], *extra: str) -> dict[str, Any]:
    """`zeek-pipeline publish` from this machine; returns its JSON summary."""
    result = ok(subprocess.run(
        [str(ROOT / ".venv" / "bin" / "zeek-pipeline"), "publish", "--topic", topic, "--brokers", bootstrap,
         "--json", *extra, *map(str, files)],
        capture_output=True, text=True, timeout=600, check=False))
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def claim_directory(kubectl: Run, namespace: str, claim: str) -> Path:
    """The directory on this machine that holds a claim's volume (local-path provisioner)."""
    volume = wait_for(f"claim {claim} bound", lambda: kubectl(
        "-n", namespace, "get", "pvc", claim, "-o", "jsonpath={.spec.volumeName}").stdout.strip(), timeout=180)
    pv = json.loads(ok(kubectl("get", "pv", volume, "-o", "json")).stdout)
    spec = pv["spec"]
    return Path((spec.get("hostPath") or spec.get("local"))["path"])


def parquet_rows(directory: Path, typed: str = "dns") -> tuple[int, int, dict[str, str]]:
    """(rows, distinct (partition, offset) pairs, column -> DuckDB type of a file of log type `typed`) of every
    Parquet file below `directory`, read with DuckDB (an independent reader)."""
    import duckdb

    files = [p for p in directory.rglob("*.parquet") if not p.name.startswith(".")]
    if not files:
        return 0, 0, {}
    con = duckdb.connect()
    glob = f"{directory}/**/*.parquet"
    rows, distinct = con.execute(
        "select count(*), count(distinct (_kafka_partition, _kafka_offset)) "
        f"from read_parquet('{glob}', union_by_name=true)").fetchone()  # type: ignore[misc]
    types: dict[str, str] = {}
    typed_files = [p for p in files if p.relative_to(directory).parts[0] == typed]
    if typed_files:
        types = dict(con.execute(f"select column_name, column_type from (describe select * from "
                                 f"read_parquet('{typed_files[0]}'))").fetchall())
    return int(rows), int(distinct), types


def count_topic(bootstrap: str, topic: str, timeout: float = 30) -> tuple[int, list[dict[str, str]]]:
    """All messages of a topic (read_committed) and the headers of each, read from the beginning."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p.partition, 0) for p in partitions])
        seen = dict.fromkeys(ends, 0)
        headers: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=1):
                if message.error():
                    continue
                seen[message.partition()] = message.offset() + 1
                headers.append({k: (v or b"").decode(errors="replace") for k, v in message.headers() or []})
        return len(headers), headers
    finally:
        consumer.close()


MEASUREMENTS = ROOT / "output" / "cluster-measurements.json"


def record_measurements(figures: dict[str, Any]) -> None:
    """Keep what a cluster test measured (no assertion on it) in output/cluster-measurements.json."""
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(MEASUREMENTS.read_text()) if MEASUREMENTS.exists() else {}
    MEASUREMENTS.write_text(json.dumps({**previous, **figures}, indent=1))
    print(f"measured: {figures}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def port_forward(cluster: Cluster, namespace: str, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` of a Service or pod to a free local port, for the duration of the block."""
    local = free_port()
    process = subprocess.Popen(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "port-forward",
         target, f"{local}:{port}", "--address", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(f"port-forward {target}", lambda: _connects(local) or process.poll() is not None, timeout=60)
        output = process.stdout.read() if process.poll() is not None and process.stdout else ""
        assert process.poll() is None, f"port-forward {target} exited: {output}"
        yield local
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _connects(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
