"""`skaffold run` of the dev setup onto the real cluster, with skaffold built from its Go module: the `local`
profile (on by itself on the kube context zeek-local) builds docker/Dockerfile with buildah, imports the image
into the node's containerd, and installs the chart with deploy/dev/values-dev.yaml; the dev pipeline runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.cluster.support import ROOT, wait_deployments
from tests.infra.cluster.cluster import Cluster
from tests.infra.go_tools import go_tool
from tests.infra.kube import CACHE_ROOT
from tests.infra.waiting import ok


def test_skaffold_run_builds_imports_and_deploys_the_dev_setup(
    cluster: Cluster, kubectl, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    skaffold = go_tool("skaffold", override="SKAFFOLD")
    home = tmp_path / "home"
    (home / ".skaffold").mkdir(parents=True)
    (home / ".skaffold" / "config").write_text(
        "global:\n  survey:\n    disable-prompt: true\n  collect-metrics: false\n  update-check: false\n")
    assert cluster.summary()["docker_host"], "podman's API service is not running (make system-deps)"
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(cluster.kubeconfig),
           "DOCKER_HOST": cluster.summary()["docker_host"], "ZEEK_PIPELINE_CACHE": str(CACHE_ROOT),
           "PATH": f"{cluster.bin_dir}:{os.environ['PATH']}", "SKAFFOLD_UPDATE_CHECK": "false",
           **{f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}
    ok(kubectl("create", "namespace", "skaffold-dev"))
    try:
        run_and_delete(skaffold, env, kubectl)
    finally:
        kubectl("delete", "namespace", "skaffold-dev", "--wait=false")


def run_and_delete(skaffold: Path, env: dict[str, str], kubectl) -> None:  # type: ignore[no-untyped-def]
    # --cache-artifacts=false: a cache hit skips the custom build, and with it the import into containerd
    run = subprocess.run([str(skaffold), "run", "--cache-artifacts=false", "--digest-source=tag",
                          "--status-check=true", "--port-forward=off", "--interactive=false",
                          "--namespace=skaffold-dev"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    ok(run)
    assert "Build [zeek-pipeline] succeeded" in run.stdout, run.stdout[-3000:]
    wait_deployments(kubectl, "skaffold-dev", "zeek-dev")
    operator = json.loads(ok(kubectl("-n", "skaffold-dev", "get", "deployment", "-l",
                                     "app.kubernetes.io/instance=zeek", "-o", "json")).stdout)["items"][0]
    image = operator["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0].endswith("zeek-pipeline") and ":" in image, image
    delete = subprocess.run([str(skaffold), "delete", "--namespace=skaffold-dev"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    ok(delete)
