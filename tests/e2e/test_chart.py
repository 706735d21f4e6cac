"""The Helm chart against helm itself and the real test API server (tests/e2e/conftest.py).

- `helm lint --strict` and `helm template` with the default values and every ci/*-values.yaml;
- the rendered manifests, zeekpipeline.yaml, config/examples/*.yaml and deploy/dev/redpanda.yaml pass
  `kubectl apply --dry-run=server` (the CRD's schema, defaults and CEL rules enforced); wrong values and
  invalid resources are refused with a message naming the field;
- `helm install`, then `kubectl apply -f zeekpipeline.yaml`: the operator creates the children. No node runs
  pods here, so the operator runs outside the cluster, as a subprocess with exactly the command, args and env
  of the installed Deployment (read back from the API server), authenticated as the chart's ServiceAccount
  (a TokenRequest token), so the chart's RBAC is what is tested: a missing rule shows up as a 403;
- `helm uninstall` removes everything the release made; the CRD stays, as Helm never deletes crds/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.go_tools import go_tool
from tests.infra.helm import helm_runner
from tests.infra.kube import K8S_VERSION
from tests.infra.waiting import ok, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "zeek-pipeline"
CRD_FILE = CHART / "crds" / "zeekpipelines.zeek-pipeline.io.yaml"
CRD_NAME = "zeekpipelines.zeek-pipeline.io"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DEV_VALUES = ROOT / "deploy" / "dev" / "values-dev.yaml"
VALUES_SETS = [None, *CI_VALUES, DEV_VALUES]
PIPELINE_FILE = ROOT / "zeekpipeline.yaml"  # the README's example, tuned for the dev setup
EXAMPLE_FILES = [PIPELINE_FILE, *sorted((ROOT / "config" / "examples").glob("*.yaml")),
                 ROOT / "deploy" / "dev" / "redpanda.yaml"]
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

Run = Callable[..., subprocess.CompletedProcess[str]]


def values_id(path: Path | None) -> str:
    return "default" if path is None else path.name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def helm(kube: Any, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`helm(*args)` against the test cluster, with its own (empty) Helm config, cache and data dirs."""
    return helm_runner(Path(kube.bin_dir), Path(kube.kubeconfig), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def crd(kubectl: Run) -> str:
    """The chart's CRD, established (as `helm install` would leave it)."""
    ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE)))
    wait_for("the CRD to be established", lambda: crd_established(kubectl))
    return CRD_NAME


def crd_established(kubectl: Run) -> bool:
    jsonpath = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    return kubectl("get", "crd", CRD_NAME, "-o", jsonpath).stdout == "True"


@pytest.fixture
def namespace(kubectl: Run) -> Iterator[str]:
    name = f"chart-{uuid.uuid4().hex[:8]}"
    ok(kubectl("create", "namespace", name))
    yield name
    # anything left behind (a failed test) must not keep the namespace Terminating: drop finalizers first
    left = kubectl("get", "zeekpipelines", "-n", name, "-o", "name")
    for ref in left.stdout.split():
        kubectl("patch", ref, "-n", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kubectl("delete", "namespace", name, "--wait=false")


def template(helm: Run, values: Path | None = None, *extra: str, namespace: str = "zeek") -> str:
    args = ["template", "zp", str(CHART), "--namespace", namespace, "--kube-version", K8S_VERSION.lstrip("v")]
    if values is not None:
        args += ["--values", str(values)]
    return ok(helm(*args, *extra)).stdout


def by_kind(rendered: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered if doc["kind"] == kind]


# ------------------------------------------------------------------------------------------- helm offline


@pytest.mark.parametrize("values", VALUES_SETS, ids=values_id)
def test_helm_lint_strict_passes(helm: Run, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", K8S_VERSION.lstrip("v")]
    if values is not None:
        args += ["--values", str(values)]
    result = ok(helm(*args))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values", VALUES_SETS, ids=values_id)
def test_helm_template_renders_a_secure_operator_and_least_privilege_rbac(helm: Run, values: Path | None) -> None:
    settings = yaml.safe_load(values.read_text()) if values else {}
    cluster_wide = bool(settings.get("rbac", {}).get("clusterWide"))
    rendered = docs(template(helm, values))
    deployment = by_kind(rendered, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["zeek-pipeline"]
    assert container["args"][0] == "operator"
    assert ("--all-namespaces" in container["args"]) == cluster_wide
    assert ("--namespace=zeek" in container["args"]) == (not cluster_wide)
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "readinessProbe" not in container and "startupProbe" not in container
    operator_tag = settings.get("operator", {}).get("image", {}).get("tag")
    tag = operator_tag or settings.get("image", {}).get("tag") or APP_VERSION
    assert container["image"].endswith(f":{tag}")
    assert container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
    # standard labels, the selector a stable subset of them
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "operator" and labels["app.kubernetes.io/managed-by"] == "Helm"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert "app.kubernetes.io/version" not in selector and "helm.sh/chart" not in selector
    # RBAC: namespaced unless asked, explicit verbs, no wildcard, secrets read-only (get)
    roles = by_kind(rendered, "ClusterRole" if cluster_wide else "Role")
    assert roles and (cluster_wide or not by_kind(rendered, "ClusterRole"))
    for role in [*by_kind(rendered, "Role"), *by_kind(rendered, "ClusterRole")]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"]
    pipelines = by_kind(rendered, "ZeekPipeline")
    assert len(pipelines) == int(bool(settings.get("pipeline", {}).get("enabled")))
    for pipeline in pipelines:
        image = pipeline["spec"]["image"]
        assert image["tag"] and image["repository"] and image["pullPolicy"]


def test_image_tag_defaults_to_the_app_version_and_follows_image_values(helm: Run) -> None:
    rendered = docs(template(helm, None, "--set", "pipeline.enabled=true"))
    operator = by_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert operator["image"] == f"ghcr.io/zeek-pipeline/zeek-pipeline:{APP_VERSION}"
    assert by_kind(rendered, "ZeekPipeline")[0]["spec"]["image"]["tag"] == APP_VERSION
    # what skaffold sets (image.repository / image.tag) reaches the operator and the pipeline's services
    rendered = docs(template(helm, DEV_VALUES, "--set", "image.repository=zeek-pipeline", "--set", "image.tag=abc123"))
    operator = by_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert operator["image"] == "zeek-pipeline:abc123"
    assert by_kind(rendered, "ZeekPipeline")[0]["spec"]["image"] == {
        "repository": "zeek-pipeline", "tag": "abc123", "pullPolicy": "IfNotPresent"}


def test_operator_replicas_value_runs_several_leader_electing_operators(helm: Run) -> None:
    rendered = docs(template(helm, None, "--set", "operator.replicas=2"))
    deployment = by_kind(rendered, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 2
    # one at a time: the stopping leader releases the Lease, the standby takes over
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-election" in args and "--lease-name=zeek-operator" in args
    # one replica keeps Recreate (two never run at once, not even briefly)
    single = by_kind(docs(template(helm, None, "--set", "operator.replicas=1")), "Deployment")[0]
    assert single["spec"]["replicas"] == 1 and single["spec"]["strategy"] == {"type": "Recreate"}
    # several replicas without leader election would all reconcile: refused
    result = helm("template", "zp", str(CHART), "--set", "operator.replicas=2",
                  "--set", "operator.extraArgs={--no-leader-election}")
    assert result.returncode != 0 and "operator.replicas > 1 needs leader election" in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.probePort=http", "at '/operator/probePort': got string, want integer"),
        ("operator.replicas=0", "at '/operator/replicas': minimum: got 0, want 1"),
        ("rbac.clusterwide=true", "at '/rbac': additional properties 'clusterwide' not allowed"),
        ("pipeline.writer.storage.type=gcs", "at '/pipeline/writer/storage/type': value must be one of 'pvc', 's3'"),
        ("pipeline.normalizer.replicas=-2", "at '/pipeline/normalizer/replicas': minimum: got -2, want 0"),
    ],
)
def test_wrong_values_fail_at_install_with_a_clear_message(
    helm: Run, crd: str, namespace: str, setting: str, message: str
) -> None:
    result = helm("install", "zp", str(CHART), "--namespace", namespace, "--set", setting)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr
    assert ok(helm("list", "--namespace", namespace, "-q")).stdout.strip() == ""  # nothing installed


# ------------------------------------------------------------------------------------ server-side checks


@pytest.mark.parametrize("values", VALUES_SETS, ids=values_id)
def test_rendered_manifests_pass_server_side_dry_run(
    helm: Run, kubectl: Run, crd: str, namespace: str, values: Path | None
) -> None:
    rendered = template(helm, values, namespace=namespace)
    result = ok(kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-", input=rendered))
    assert "deployment.apps/" in result.stdout and "(server dry run)" in result.stdout


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_pass_server_side_dry_run(kubectl: Run, crd: str, namespace: str, path: Path) -> None:
    # a file that names its namespaces (deploy/dev/redpanda.yaml: `redpanda`) needs them to exist for the
    # dry-run of its namespaced objects; the others go to the test's namespace
    named = {d["metadata"]["name"] for d in docs(path.read_text()) if d["kind"] == "Namespace"}
    named |= {d["metadata"]["namespace"] for d in docs(path.read_text()) if d["metadata"].get("namespace")}
    created = [ns for ns in sorted(named) if kubectl("create", "namespace", ns).returncode == 0]
    try:
        where = [] if named else ["-n", namespace]
        result = ok(kubectl("apply", "--dry-run=server", "--validate=strict", *where, "-f", str(path), "-o", "json"))
    finally:
        for ns in created:
            kubectl("delete", "namespace", ns, "--wait=false")
    applied = json.loads(result.stdout)
    objects = applied["items"] if applied.get("kind") == "List" else [applied]
    assert len(objects) == len(docs(path.read_text()))
    for obj in objects:
        if obj["kind"] == "ZeekPipeline":
            # the CRD's defaults are applied by the server: a minimal spec becomes a complete one
            spec = obj["spec"]
            assert spec["kafka"]["topics"]["raw"] and spec["writer"]["storage"]["type"] in ("pvc", "s3")
            assert spec["image"]["repository"] and spec["normalizer"]["resources"]["limits"]


INVALID = [
    ({"writer": {"storage": {"type": "s3"}}}, "storage type s3 needs s3.bucket"),
    ({"writer": {"storage": {"type": "gcs"}}}, 'spec.writer.storage.type: Unsupported value: "gcs"'),
    ({"kafka": {"bootstrapServers": ["k:9092"], "security": {"protocol": "SASL_SSL"}}},
     "protocol SASL_* needs sasl"),
    ({"normalizer": {"replicas": -1}}, "spec.normalizer.replicas: Invalid value: -1"),
    ({"normalizer": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
     "minReplicas must not exceed maxReplicas"),
    ({"writer": {"flush": {"bufferMB": 0, "intervalSeconds": 0, "eventCount": 0}}},
     "at least one of bufferMB, intervalSeconds, eventCount must be > 0"),
    ({"writer": {"compresion": "zstd"}}, 'unknown field "spec.writer.compresion"'),
    ({"enrich": {"geoip": {"secretName": "a", "claimName": "b"}}},
     "set exactly one of secretName, configMapName, claimName"),
    ({"enrich": {"geoip": {"claimName": "b", "cityFile": "", "asnFile": ""}}},
     "name at least one of cityFile, asnFile"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_zeekpipeline_is_rejected_naming_the_field(
    kubectl: Run, crd: str, namespace: str, spec: dict[str, Any], message: str
) -> None:
    body = {"apiVersion": "zeek-pipeline.io/v1alpha1", "kind": "ZeekPipeline", "metadata": {"name": "bad"},
            "spec": {"kafka": {"bootstrapServers": ["redpanda:9092"]}, **spec}}
    result = kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                     input=json.dumps(body))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# ----------------------------------------------------------------------------- install and the operator


def token_kubeconfig(kubectl: Run, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (TokenRequest API), on the same server and CA."""
    token = ok(kubectl("create", "token", service_account, "-n", namespace, "--duration=3600s")).stdout.strip()
    admin = json.loads(ok(kubectl("config", "view", "--raw", "--minify", "-o", "json")).stdout)
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account, "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def resolve_env(container: dict[str, Any], namespace: str, pod_name: str) -> dict[str, str]:
    """The container's env as the kubelet would set it (fieldRefs of the pod; literal values)."""
    fields = {"metadata.namespace": namespace, "metadata.name": pod_name}
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            assert field in fields, f"the test cannot stand in for {item}"
            env[item["name"]] = fields[field]
    return env


@contextlib.contextmanager
def operator_from_deployment(
    kubectl: Run, namespace: str, deployment_name: str, kubeconfig: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the operator exactly as the installed Deployment would: its command, args and env."""
    deployment = json.loads(ok(kubectl("get", "deployment", deployment_name, "-n", namespace, "-o", "json")).stdout)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    executable = Path(sys.executable).parent / command[0]  # the image's PATH has the venv's bin first too
    assert executable.exists(), f"{command[0]} is not installed in the venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "POD_"))}
    env.update(resolve_env(container, namespace, f"{deployment_name}-0"))
    env["KUBECONFIG"] = str(kubeconfig)
    with log.open("wb") as out:
        proc = subprocess.Popen([str(executable), *command[1:], *container.get("args", [])], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def liveness_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def forbidden_lines(log: Path) -> list[str]:
    pattern = re.compile(r"(?<![\w.:-])403(?![\w.-])|[Ff]orbidden")
    return [line for line in log.read_text(errors="replace").splitlines() if pattern.search(line)]


def children(kubectl: Run, namespace: str, pipeline: str) -> dict[str, set[str]]:
    from zeek_operator.resources import PIPELINE_LABEL

    out: dict[str, set[str]] = {}
    for kind in ("configmaps", "deployments", "services", "serviceaccounts", "persistentvolumeclaims", "cronjobs"):
        result = ok(kubectl("get", kind, "-n", namespace, "-l", f"{PIPELINE_LABEL}={pipeline}", "-o", "json"))
        out[kind] = {item["metadata"]["name"] for item in json.loads(result.stdout)["items"]}
    return out


def expected_children(pipeline: str) -> dict[str, set[str]]:
    from zeek_operator.render import COMPONENTS
    from zeek_operator.resources import configmap_name, cronjob_name, deployment_name, health_service_name

    return {
        "configmaps": {configmap_name(pipeline)},
        "deployments": {deployment_name(pipeline, c) for c in COMPONENTS},
        "services": {health_service_name(pipeline)},
        "cronjobs": {cronjob_name(pipeline)},  # compaction is on by default
    }


def assert_children_created(kubectl: Run, namespace: str, pipeline: str, uid: str) -> None:
    want = expected_children(pipeline)

    def created() -> bool:
        have = children(kubectl, namespace, pipeline)
        return all(names <= have[kind] for kind, names in want.items())

    wait_for(f"the children of {namespace}/{pipeline}", created, timeout=90)
    for kind, names in want.items():
        for name in names:
            obj = json.loads(ok(kubectl("get", kind, name, "-n", namespace, "-o", "json")).stdout)
            owners = obj["metadata"].get("ownerReferences", [])
            assert [o["uid"] for o in owners if o["kind"] == "ZeekPipeline"] == [uid], (kind, name)


def release_objects(kubectl: Run, namespace: str, release: str) -> list[str]:
    kinds = "deployments,serviceaccounts,roles,rolebindings,configmaps,services,secrets,zeekpipelines"
    result = ok(kubectl("get", kinds, "-n", namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"))
    cluster = ok(kubectl("get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release}",
                         "-o", "name"))
    return sorted(result.stdout.split() + cluster.stdout.split())


def test_helm_install_then_zeekpipeline_yaml_gives_a_pipeline_and_uninstall_keeps_only_the_crd(
    helm: Run, kubectl: Run, namespace: str, tmp_path: Path
) -> None:
    release, port = "zp", free_port()
    notes = ok(helm("install", release, str(CHART), "--namespace", namespace, "--set", f"operator.probePort={port}"))
    assert f"kubectl -n {namespace} apply -f zeekpipeline.yaml" in notes.stdout  # NOTES.txt: what to do next
    assert ok(kubectl("get", "crd", CRD_NAME, "-o", "name")).stdout.strip()
    installed = release_objects(kubectl, namespace, release)
    assert {f"deployment.apps/{release}-zeek-pipeline-operator", f"serviceaccount/{release}-zeek-pipeline-operator",
            f"role.rbac.authorization.k8s.io/{release}-zeek-pipeline-operator",
            f"rolebinding.rbac.authorization.k8s.io/{release}-zeek-pipeline-operator"} <= set(installed)
    sa = f"{release}-zeek-pipeline-operator"
    # least privilege, as the API server's authorizer sees it
    who = f"--as=system:serviceaccount:{namespace}:{sa}"
    assert ok(kubectl("auth", "can-i", "create", "deployments", "-n", namespace, who)).stdout.strip() == "yes"
    for verb, resource, where in [("list", "secrets", namespace), ("get", "deployments", "default"),
                                  ("delete", "zeekpipelines", namespace), ("create", "pods", namespace)]:
        assert kubectl("auth", "can-i", verb, resource, "-n", where, who).stdout.strip() == "no", (verb, resource)

    kubeconfig = token_kubeconfig(kubectl, namespace, sa, tmp_path / "operator.kubeconfig")
    log = tmp_path / "operator.log"
    pipeline_file = PIPELINE_FILE
    (pipeline_doc,) = [d for d in docs(pipeline_file.read_text()) if d["kind"] == "ZeekPipeline"]
    name = pipeline_doc["metadata"]["name"]
    with operator_from_deployment(kubectl, namespace, f"{release}-zeek-pipeline-operator", kubeconfig, log) as proc:
        wait_for("the operator's liveness endpoint", lambda: liveness_ok(port) or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        # what the README tells a user to do
        ok(kubectl("apply", "-n", namespace, "-f", str(pipeline_file)))
        uid = json.loads(ok(kubectl("get", "zp", name, "-n", namespace, "-o", "json")).stdout)["metadata"]["uid"]
        assert_children_created(kubectl, namespace, name, uid)
        table = ok(kubectl("get", "zp", "-n", namespace)).stdout
        assert table.split("\n")[0].split() == ["NAME", "READY", "NORMALIZERS", "WRITERS", "LAG", "AGE"]
        wait_for("status conditions", lambda: "Ready" in ok(kubectl(
            "get", "zp", name, "-n", namespace, "-o", "jsonpath={.status.conditions[*].type}")).stdout)
        # scaling, as the walkthrough shows it
        ok(kubectl("patch", "zp", name, "-n", namespace, "--type=merge", "-p",
                   '{"spec":{"normalizer":{"replicas":3}}}'))
        wait_for("3 normalizer replicas", lambda: ok(kubectl(
            "get", "deployment", f"{name}-normalizer-enricher", "-n", namespace, "-o",
            "jsonpath={.spec.replicas}")).stdout == "3")
        # the user deletes the pipeline while the operator runs: garbage collection removes its children
        ok(kubectl("delete", "zp", name, "-n", namespace, "--timeout=60s"))
        wait_for("the children to be garbage-collected", lambda: not any(
            children(kubectl, namespace, name)[k] for k in ("configmaps", "deployments", "services", "cronjobs")),
                 timeout=90)
        assert proc.poll() is None, log.read_text()
    assert proc.returncode == 0, log.read_text()[-3000:]  # SIGTERM: a clean stop
    assert forbidden_lines(log) == [], "the chart's RBAC lacks a rule"

    ok(helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s"))
    assert release_objects(kubectl, namespace, release) == []
    # Helm's rule: crds/ are installed but never upgraded nor deleted; the CRD stays and remains usable
    assert crd_established(kubectl)
    # the operator's own Lease (not a Helm object, released on shutdown) is all that is left in the namespace
    leftovers = ok(kubectl("get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases", "-n",
                           namespace, "-o", "name")).stdout.split()
    leftovers = [o for o in leftovers if o not in ("configmap/kube-root-ca.crt", "serviceaccount/default")]
    assert leftovers == ["lease.coordination.k8s.io/zeek-operator"], leftovers
    holder = ok(kubectl("get", "lease", "zeek-operator", "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}"))
    assert holder.stdout == ""


def test_cluster_wide_operator_handles_pipelines_in_other_namespaces(
    helm: Run, kubectl: Run, namespace: str, tmp_path: Path
) -> None:
    release, port = "zpc", free_port()
    other = f"{namespace}-other"
    ok(kubectl("create", "namespace", other))
    try:
        ok(helm("install", release, str(CHART), "--namespace", namespace, "--values",
                str(CHART / "ci" / "cluster-wide-values.yaml"), "--set", f"operator.probePort={port}"))
        objects = release_objects(kubectl, namespace, release)
        assert f"clusterrole.rbac.authorization.k8s.io/{release}-zeek-pipeline-operator" in objects
        sa = f"{release}-zeek-pipeline-operator"
        kubeconfig = token_kubeconfig(kubectl, namespace, sa, tmp_path / "operator.kubeconfig")
        log = tmp_path / "operator.log"
        with operator_from_deployment(kubectl, namespace, f"{release}-zeek-pipeline-operator", kubeconfig,
                                      log) as proc:
            wait_for("the operator's liveness endpoint", lambda: liveness_ok(port) or proc.poll() is not None)
            assert proc.poll() is None, log.read_text()
            ok(kubectl("apply", "-n", other, "-f", str(ROOT / "config" / "examples" / "zeekpipeline-s3.yaml")))
            uid = json.loads(ok(kubectl("get", "zp", "zeek-s3", "-n", other, "-o", "json")).stdout)["metadata"]["uid"]
            assert_children_created(kubectl, other, "zeek-s3", uid)
            ok(kubectl("delete", "zp", "zeek-s3", "-n", other, "--timeout=60s"))
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert forbidden_lines(log) == [], "the chart's cluster-wide RBAC lacks a rule"
        ok(helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s"))
        assert release_objects(kubectl, namespace, release) == []
    finally:
        kubectl("delete", "namespace", other, "--wait=false")


def run_like_a_pod(kubectl: Run, namespace: str, pod_spec: dict[str, Any], kubeconfig: Path,
                   timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a pod's (only) container to completion here, as the kubelet would: command, args, env."""
    (container,) = pod_spec["containers"]
    command = [*container["command"], *container.get("args", [])]
    executable = Path(sys.executable).parent / command[0]
    assert executable.exists(), f"{command[0]} is not installed in the venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "POD_"))}
    env.update(resolve_env(container, namespace, "hook-0"))
    env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([str(executable), *command[1:]], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_pipeline_from_values_is_finished_by_the_uninstall_hook_before_the_operator_goes(
    helm: Run, kubectl: Run, namespace: str, tmp_path: Path
) -> None:
    release, port = "zpv", free_port()
    notes = ok(helm("install", release, str(CHART), "--namespace", namespace, "--set", "pipeline.enabled=true",
                    "--set", f"operator.probePort={port}"))
    name = f"{release}-zeek-pipeline"
    # NOTES.txt: how to open this pipeline's dashboard
    assert f"kubectl -n {namespace} port-forward svc/{name}-health 8080:8080" in notes.stdout
    pipeline = json.loads(ok(kubectl("get", "zp", name, "-n", namespace, "-o", "json")).stdout)
    assert pipeline["spec"]["image"]["tag"] == APP_VERSION
    sa = f"{release}-zeek-pipeline-operator"
    kubeconfig = token_kubeconfig(kubectl, namespace, sa, tmp_path / "operator.kubeconfig")
    log = tmp_path / "operator.log"
    # `helm uninstall` first runs the pre-delete hook Job. No pod runs here, so the test stands in for the
    # Job: it creates the hook's ServiceAccount and RBAC and runs the Job's container as that ServiceAccount.
    hooks = docs(ok(helm("get", "hooks", release, "--namespace", namespace)).stdout)
    assert {h["kind"] for h in hooks} == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    assert all(h["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete" for h in hooks)
    rbac = [h for h in hooks if h["kind"] != "Job"]
    ok(kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                         "items": rbac})))
    job = next(h for h in hooks if h["kind"] == "Job")
    hook_sa = job["spec"]["template"]["spec"]["serviceAccountName"]
    who = f"--as=system:serviceaccount:{namespace}:{hook_sa}"
    assert ok(kubectl("auth", "can-i", "delete", f"zeekpipelines/{name}", "-n", namespace, who)).stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "zeekpipelines/other", "-n", namespace, who).stdout.strip() == "no"
    hook_kubeconfig = token_kubeconfig(kubectl, namespace, hook_sa, tmp_path / "hook.kubeconfig")
    with operator_from_deployment(kubectl, namespace, f"{release}-zeek-pipeline-operator", kubeconfig, log) as proc:
        wait_for("the operator's liveness endpoint", lambda: liveness_ok(port) or proc.poll() is not None)
        assert_children_created(kubectl, namespace, name, pipeline["metadata"]["uid"])
        hook = run_like_a_pod(kubectl, namespace, job["spec"]["template"]["spec"], hook_kubeconfig)
        assert hook.returncode == 0, hook.stdout + hook.stderr
        assert f"ZeekPipeline {namespace}/{name} deleted" in hook.stdout
        # the operator removed its finalizer; the garbage collector removes the children
        wait_for("the children to be garbage-collected", lambda: not any(
            children(kubectl, namespace, name)[k] for k in ("configmaps", "deployments", "services", "cronjobs")),
                 timeout=90)
        assert forbidden_lines(log) == [], "the chart's RBAC lacks a rule"
    assert proc.returncode == 0, log.read_text()[-3000:]
    # the rest of `helm uninstall`; the hook's objects go as hook-succeeded says
    ok(helm("uninstall", release, "--namespace", namespace, "--no-hooks", "--wait", "--timeout", "60s"))
    ok(kubectl("delete", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                          "items": rbac})))
    assert release_objects(kubectl, namespace, release) == []


def test_uninstall_hook_is_rendered_only_for_a_pipeline_from_values(helm: Run) -> None:
    assert not [d for d in docs(template(helm)) if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    hooks = [d for d in docs(template(helm, None, "--set", "pipeline.enabled=true"))
             if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert sorted(d["kind"] for d in hooks) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    job = next(d for d in hooks if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"] == f"ghcr.io/zeek-pipeline/zeek-pipeline:{APP_VERSION}"
    off = docs(template(helm, None, "--set", "pipeline.enabled=true", "--set", "pipeline.uninstallHook.enabled=false"))
    assert not [d for d in off if "helm.sh/hook" in d["metadata"].get("annotations", {})]


def rules_of(objects: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return sorted(
        (tuple(r["apiGroups"]), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
        for obj in objects for rule in [obj.get("rules", [])] for r in rule
    )


def test_chart_rbac_grants_what_operator_rbac_grants(helm: Run) -> None:
    """The chart's Role / ClusterRole are operator/rbac/'s (less `namespaces`: the chart never passes -n patterns)."""
    rbac = ROOT / "operator" / "rbac"
    role = [d for d in docs((rbac / "role.yaml").read_text()) if d["kind"] == "Role"]
    cluster_role = [d for d in docs((rbac / "cluster-role.yaml").read_text()) if d["kind"] == "ClusterRole"]
    namespaced = docs(template(helm))
    main = [d for d in by_kind(namespaced, "Role") if not d["metadata"]["name"].endswith("-leader-election")]
    assert rules_of(main) == rules_of(role)
    cluster = by_kind(docs(template(helm, CHART / "ci" / "cluster-wide-values.yaml")), "ClusterRole")
    assert rules_of(cluster) == [r for r in rules_of(cluster_role) if r[1] != ("namespaces",)]
    # leader election: the same verbs, the chart's narrowed to its one Lease for get/update
    lease = [d for d in by_kind(namespaced, "Role") if d["metadata"]["name"].endswith("-leader-election")]
    granted = {v for _, _, verbs in rules_of(lease) for v in verbs}
    election = [d for d in docs((rbac / "leader-election.yaml").read_text()) if d["kind"] == "Role"]
    assert granted == {v for _, _, verbs in rules_of(election) for v in verbs}
    assert any(r.get("resourceNames") == ["zeek-operator"] for r in lease[0]["rules"])


def test_skaffold_renders_a_dev_setup_the_api_server_accepts(
    kube: Any, kubectl: Run, crd: str, namespace: str, tmp_path: Path
) -> None:
    """skaffold's own parser, profiles and helm rendering (no image build), then a server-side dry-run.

    skaffold is not on the registries as a binary; it builds from its Go module (github.com/GoogleContainerTools/
    skaffold/v2, ~12 min on 2 cores, once) into the cache ($SKAFFOLD names another binary).
    """
    skaffold = str(go_tool("skaffold", override="SKAFFOLD"))
    home = tmp_path / "home"
    (home / ".skaffold").mkdir(parents=True)
    (home / ".skaffold" / "config").write_text(
        "global:\n  collect-metrics: false\n  update-check: false\n  survey:\n    disable-prompt: true\n")
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kube.kubeconfig), "SKAFFOLD_UPDATE_CHECK": "false",
           "PATH": f"{kube.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    diagnose = subprocess.run([skaffold, "diagnose", "--yaml-only", "-p", "kind"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    effective = yaml.safe_load(ok(diagnose).stdout)
    assert effective["build"]["local"]["push"] is False
    render = subprocess.run([skaffold, "render", "--offline=true", "--digest-source=tag", "-t", "dev", "-p", "kind",
                             "-n", namespace], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    # (-n is the release's namespace; Redpanda names its own: redpanda)
    rendered = docs(ok(render).stdout)
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds.count("Deployment") == 2 and "ZeekPipeline" in kinds  # Redpanda and the operator
    operator = next(d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))
    assert operator["spec"]["template"]["spec"]["containers"][0]["image"] == "zeek-pipeline:dev"
    pipeline = next(d for d in rendered if d["kind"] == "ZeekPipeline")
    assert pipeline["spec"]["image"] == {"repository": "zeek-pipeline", "tag": "dev", "pullPolicy": "IfNotPresent"}
    assert {d["metadata"].get("namespace") for d in rendered if d["kind"] != "Namespace"} == {namespace, "redpanda"}
    created = kubectl("create", "namespace", "redpanda").returncode == 0
    try:
        ok(kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=render.stdout))
    finally:
        if created:
            kubectl("delete", "namespace", "redpanda", "--wait=false")


def test_helm_package_carries_the_crd_and_schema_but_not_ci_values(helm: Run, tmp_path: Path) -> None:
    import tarfile

    result = ok(helm("package", str(CHART), "--destination", str(tmp_path)))
    (archive,) = tmp_path.glob("zeek-pipeline-*.tgz")
    assert archive.name == f"zeek-pipeline-{yaml.safe_load((CHART / 'Chart.yaml').read_text())['version']}.tgz"
    assert "Successfully packaged" in result.stdout
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        packaged_crd = tar.extractfile(f"zeek-pipeline/crds/{CRD_FILE.name}")
        assert packaged_crd is not None and packaged_crd.read() == CRD_FILE.read_bytes()
    assert {"zeek-pipeline/values.schema.json", "zeek-pipeline/templates/NOTES.txt"} <= names
    assert not [n for n in names if "/ci/" in n]


@pytest.mark.parametrize("values", VALUES_SETS, ids=values_id)
def test_helm4_lints_and_renders_what_helm3_renders(helm: Run, tmp_path: Path, values: Path | None) -> None:
    """Helm 4 (helm.sh/helm/v4, built once from the Go module proxy into the cache; $HELM4 names another)."""
    helm4 = str(go_tool("helm4", override="HELM4"))
    env = {**os.environ, **{f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}
    extra = ["--values", str(values)] if values else []
    lint = subprocess.run([helm4, "lint", "--strict", str(CHART), *extra], env=env, capture_output=True, text=True,
                          check=False, timeout=120)
    assert "1 chart(s) linted, 0 chart(s) failed" in ok(lint).stdout
    rendered = subprocess.run([helm4, "template", "zp", str(CHART), "--namespace", "zeek", *extra], env=env,
                              capture_output=True, text=True, check=False, timeout=120)
    assert docs(ok(rendered).stdout) == docs(template(helm, values))


def test_helm_installs_the_crd_with_a_pipeline_on_a_fresh_cluster_and_keeps_it_on_uninstall(
    kube: Any, tmp_path: Path
) -> None:
    """On an API server that has never seen the CRD, one `helm install` creates it (crds/) and then the
    ZeekPipeline that needs it; `helm uninstall` deletes the release's objects but never the CRD."""
    from tests.infra.kube import ControlPlane, run_kubectl

    if not isinstance(kube, ControlPlane):
        pytest.skip("needs a throw-away control plane (the session's cluster keeps its CRD)")
    with ControlPlane(workdir=tmp_path / "fresh") as fresh:
        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return run_kubectl(fresh.bin_dir, fresh.kubeconfig, *args)

        env = {**os.environ, "KUBECONFIG": str(fresh.kubeconfig),
               **{f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}

        def helm(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(fresh.bin_dir / "helm"), *args], env=env, capture_output=True, text=True,
                                  timeout=180, check=False)

        assert kubectl("get", "crd", CRD_NAME).returncode != 0
        ok(helm("install", "zp", str(CHART), "-n", "zeek", "--create-namespace", "--set", "pipeline.enabled=true"))
        assert ok(kubectl("get", "zp", "-n", "zeek", "-o", "name")).stdout.split() == [
            "zeekpipeline.zeek-pipeline.io/zp-zeek-pipeline"]
        # (no operator runs here, so the pipeline has no finalizer and the hook's pod could not run)
        ok(helm("uninstall", "zp", "-n", "zeek", "--no-hooks", "--wait", "--timeout", "60s"))
        assert ok(kubectl("get", "zp,deployments,roles,rolebindings,serviceaccounts", "-n", "zeek", "-o", "name"
                          )).stdout.split() == ["serviceaccount/default"]
        assert ok(kubectl("get", "crd", CRD_NAME, "-o", "name")).stdout.strip() == f"customresourcedefinition."\
            f"apiextensions.k8s.io/{CRD_NAME}"
