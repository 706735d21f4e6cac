"""Fixtures for the e2e tests: one real Kubernetes control plane (etcd + kube-apiserver + controller-manager).

By default the session starts its own (binaries built once by scripts/k8s-binaries.sh, see tests/infra/kube.py).
With `ZEEK_PIPELINE_USE_EXISTING_CLUSTER=1` and `KUBECONFIG` set, the tests use that cluster instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.infra.kube import ControlPlane, ExistingCluster, run_kubectl

E2E_DIR = Path(__file__).resolve().parent

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees the whole session's items: mark only the ones under tests/e2e.
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _use_existing_cluster() -> bool:
    return os.environ.get("ZEEK_PIPELINE_USE_EXISTING_CLUSTER") == "1" and bool(os.environ.get("KUBECONFIG"))


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane | ExistingCluster]:
    """The control plane for the whole session (attributes: kubeconfig, server, bin_dir, log_path(name))."""
    if _use_existing_cluster():
        existing = ExistingCluster.from_env()
        try:
            yield existing
        finally:
            existing.cleanup()
        return
    cp = ControlPlane(workdir=tmp_path_factory.mktemp("kube"))
    try:
        cp.start()
        sys.stderr.write(f"\nkube-apiserver {cp.server} ready in {cp.started_in:.1f}s\n")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubectl(kube: ControlPlane | ExistingCluster) -> Kubectl:
    """`kubectl(*args, input=None, timeout=120)` -> CompletedProcess[str] (check=False) against `kube`."""

    def run(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_kubectl(kube.bin_dir, kube.kubeconfig, *args, input=input, timeout=timeout)

    return run
