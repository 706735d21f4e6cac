"""`helm` as the tests run it: the cached binary against one cluster, with its own empty config, cache and data
directories (so nothing of the machine's Helm set-up leaks in)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

Run = Callable[..., subprocess.CompletedProcess[str]]


def helm_runner(bin_dir: Path, kubeconfig: Path, home: Path, default_timeout: float = 180) -> Run:
    """`run(*args, timeout=…)` -> CompletedProcess[str] (check=False) of `bin_dir/helm` against `kubeconfig`."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, timeout: float = default_timeout) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bin_dir / "helm"), *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)

    return run
