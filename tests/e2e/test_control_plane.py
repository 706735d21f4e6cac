"""The real control plane the operator tests run against: API server, controller-manager, kubectl and helm."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.waiting import ok, wait_for

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: nginx
          image: nginx:1.27
          ports: [{containerPort: 80}]
"""


def items(kubectl: Kubectl, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
    result = ok(kubectl("get", kind, "-n", namespace, *selector, "-o", "json"))
    return list(json.loads(result.stdout)["items"])


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    ok(kubectl("create", "namespace", name))
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def test_api_server_is_ready(kube: Any, kubectl: Kubectl) -> None:
    assert kube.server.startswith("https://")
    assert Path(kube.kubeconfig).is_file()
    readyz = ok(kubectl("get", "--raw", "/readyz?verbose"))
    assert "readyz check passed" in readyz.stdout
    version = json.loads(ok(kubectl("version", "-o", "json")).stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    # the admin user is in system:masters, authorized by RBAC
    assert ok(kubectl("auth", "can-i", "*", "*", "--all-namespaces")).stdout.strip() == "yes"
    namespaces = {ns["metadata"]["name"] for ns in json.loads(ok(kubectl("get", "ns", "-o", "json")).stdout)["items"]}
    assert {"default", "kube-system", "kube-public"} <= namespaces


def test_deployment_creates_replicaset_and_gc_removes_it(kubectl: Kubectl, namespace: str) -> None:
    ok(kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT))

    # the deployment controller of kube-controller-manager creates a ReplicaSet owned by the Deployment
    replicasets = wait_for("a ReplicaSet", lambda: items(kubectl, "replicasets", namespace, "-l", "app=web"))
    assert len(replicasets) == 1
    owners = replicasets[0]["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o.get("controller")) for o in owners] == [("Deployment", "web", True)]
    assert replicasets[0]["spec"]["replicas"] == 2

    # ... whose replicaset controller creates the pods; no node or scheduler exists, so they stay Pending
    pods = wait_for(
        "2 pods",
        lambda: (
            len(items(kubectl, "pods", namespace, "-l", "app=web")) == 2
            and items(kubectl, "pods", namespace, "-l", "app=web")
        ),
    )
    assert {p["status"]["phase"] for p in pods} == {"Pending"}
    assert all(not p["spec"].get("nodeName") for p in pods)
    assert {p["metadata"]["ownerReferences"][0]["kind"] for p in pods} == {"ReplicaSet"}

    # deleting the Deployment lets the garbage collector remove its ReplicaSet and their pods
    ok(kubectl("delete", "deployment", "web", "-n", namespace, "--cascade=background", "--wait=true"))
    wait_for(
        "the ReplicaSet to be garbage-collected",
        lambda: items(kubectl, "replicasets", namespace, "-l", "app=web") == [],
    )
    wait_for("the pods to be garbage-collected", lambda: items(kubectl, "pods", namespace, "-l", "app=web") == [])


def test_server_side_dry_run_rejects_invalid_object(kubectl: Kubectl, namespace: str) -> None:
    invalid = DEPLOYMENT.replace("replicas: 2", "replicas: -1")
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=invalid)
    assert result.returncode != 0
    assert "is invalid" in result.stderr and "spec.replicas" in result.stderr, result.stderr

    # a selector that does not match the template labels is a server-side validation error too
    mismatched = DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: other}")
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=mismatched)
    assert result.returncode != 0
    assert "selector" in result.stderr, result.stderr

    # the valid object passes the same dry run and, being a dry run, is not persisted
    ok(kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=DEPLOYMENT))
    assert items(kubectl, "deployments", namespace) == []


def test_helm_runs_from_cache_and_installs_a_chart(kube: Any, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    helm = Path(kube.bin_dir) / "helm"
    env = dict(
        os.environ,
        HELM_CACHE_HOME=str(tmp_path / "helm-cache"),
        HELM_CONFIG_HOME=str(tmp_path / "helm-config"),
        HELM_DATA_HOME=str(tmp_path / "helm-data"),
        KUBECONFIG=str(kube.kubeconfig),
    )

    def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120, check=False)

    version = ok(run_helm("version", "--short")).stdout.strip()
    assert version.startswith("v3."), version

    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    ok(run_helm("install", "probe", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait", "--timeout", "60s"))
    cm = json.loads(ok(kubectl("get", "configmap", "probe-cm", "-n", namespace, "-o", "json")).stdout)
    assert cm["data"] == {"greeting": "hi"}
    ok(run_helm("uninstall", "probe", "-n", namespace, "--wait"))
    assert kubectl("get", "configmap", "probe-cm", "-n", namespace).returncode != 0
