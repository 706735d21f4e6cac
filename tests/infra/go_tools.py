"""The Go tools the tests run (skaffold, Helm 4, CoreDNS, the local-path provisioner), built once from the Go
module proxy by scripts/go-tools.sh into ~/.cache/zeek-pipeline: a test that needs one builds it rather
than skipping (`make infra` builds them all ahead)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "go-tools.sh"


def go_tool(name: str, override: str | None = None) -> Path:
    """The binary of `name` (coredns, local-path, skaffold, helm4); `$override` names one to use instead."""
    if override and os.environ.get(override):
        return Path(os.environ[override])
    result = subprocess.run(["bash", str(SCRIPT), name], stdout=subprocess.PIPE, text=True, timeout=3600,
                            check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{SCRIPT} {name} failed with exit code {result.returncode}")
    return Path(lines[-1].split(" ", 1)[1])
