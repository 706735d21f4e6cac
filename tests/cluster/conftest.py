"""Fixtures for the cluster tier: one real single-node Kubernetes cluster per test session (tests/infra/cluster).

The pods run the project's image built from docker/Dockerfile, the broker is the development Kafka at
redpanda.redpanda.svc.cluster.local:9092 (127.0.0.1:19092 from here), and everything is asserted from
outside, as a user would check it: kubectl, helm, the published records, the Parquet files on the claim.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.cluster.support import record_measurements
from tests.infra.cluster.cluster import HOST_BOOTSTRAP, Cluster
from tests.infra.helm import helm_runner

CLUSTER_DIR = Path(__file__).resolve().parent
ROOT = CLUSTER_DIR.parents[1]
CHART = ROOT / "charts" / "zeek-pipeline"

Run = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster for the whole session: built (cached), started, and stopped with the host restored.

    Its work directory is not below pytest's temporary directory: another pytest session on the machine may
    rotate that away (rename it to garbage-*) while kubelet still has volumes mounted in it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="zeek-pipeline-cluster-", dir="/var/tmp"))
    instance = Cluster(workdir=workdir)
    try:
        instance.start()
        sys.stderr.write(f"\ncluster ready in {instance.started_in:.1f}s {instance.timings}\n")
        instance.write_summary()
        record_measurements({"cluster_ready_s": round(instance.started_in, 1),
                             **{f"cluster_{step.replace(' ', '_')}_s": t for step, t in instance.timings.items()}})
        yield instance
    finally:
        problems = instance.stop()
        if not problems:
            shutil.rmtree(workdir, ignore_errors=True)
        assert not problems, f"the cluster left the host changed: {problems}"


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Run:
    return cluster.kubectl


@pytest.fixture(scope="session")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`helm(*args)` against the cluster, with its own Helm config, cache and data directories."""
    return helm_runner(cluster.bin_dir, cluster.kubeconfig, tmp_path_factory.mktemp("helm-home"), 300)


@pytest.fixture(scope="session")
def project_image(cluster: Cluster) -> tuple[str, str]:
    """(repository, tag) of the image built from docker/Dockerfile and imported into the node."""
    repository, tag = cluster.images["project"].rsplit(":", 1)
    return repository, tag


@pytest.fixture(scope="session")
def host_bootstrap(cluster: Cluster) -> str:
    return HOST_BOOTSTRAP
