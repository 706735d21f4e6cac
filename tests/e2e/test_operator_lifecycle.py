"""The operator against the real API server: children, status, spec changes, self-healing, GC, bad specs.

The operator runs as a subprocess (`zeek-pipeline operator`, the chart's command) with the least-privilege
RBAC of operator/rbac/ (a ServiceAccount token, not the admin), so these tests also prove the Role is
enough. There is no node: pods stay Pending, so the status the operator can know is asserted (Ready=False
ComponentsNotReady, Progressing=True RollingOut, Degraded=False); Ready=True needs running pods and is
covered by the unit tests of the status computation.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.infra.kube import free_port
from tests.infra.waiting import ok, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "operator" / "crds" / "zeekpipelines.zeek-pipeline.io.yaml"
RBAC = ROOT / "operator" / "rbac"
ZEEK_PIPELINE = Path(sys.executable).parent / "zeek-pipeline"
KOPF = Path(sys.executable).parent / "kopf"
TICK_SECONDS = 2.0
COMPONENTS = ("normalizer-enricher", "parquet-writer", "health")

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


# ------------------------------------------------------------------------------------------- helpers


def get(kubectl: Kubectl, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json")
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def apply(kubectl: Kubectl, *documents: dict[str, Any], namespace: str) -> None:
    ok(kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                      "items": list(documents)})))


def pipeline(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "zeek-pipeline.io/v1alpha1", "kind": "ZeekPipeline", "metadata": {"name": name},
            "spec": spec}


def condition(zp: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((zp or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def events(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    result = ok(kubectl("get", "events", "-n", namespace, "-o", "json",
                        "--field-selector", f"involvedObject.kind=ZeekPipeline,involvedObject.name={name}"))
    return list(json.loads(result.stdout)["items"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def install_crd(kubectl: Kubectl) -> None:
    ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD)))
    # (kubectl wait fails outright while the new CRD has no status yet, so poll)
    wait_for("the CRD to be established", lambda: any(
        c["type"] == "Established" and c["status"] == "True"
        for c in ((get(kubectl, "crd", "zeekpipelines.zeek-pipeline.io", "default") or {}).get("status") or {})
        .get("conditions") or []))


def install_rbac(kubectl: Kubectl, kube: Any, namespace: str, workdir: Path) -> Path:
    """operator/rbac/ (ServiceAccount, Role, leader-election Role) in `namespace`; a kubeconfig with its token."""
    documents = []
    for file in ("service-account.yaml", "role.yaml", "leader-election.yaml"):
        for document in yaml.safe_load_all((RBAC / file).read_text()):
            document["metadata"]["namespace"] = namespace
            for subject in document.get("subjects") or []:
                subject["namespace"] = namespace
            documents.append(document)
    apply(kubectl, *documents, namespace=namespace)
    token = ok(kubectl("create", "token", "zeek-operator", "-n", namespace, "--duration=2h")).stdout.strip()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "zeek-operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "zeek-operator",
                                                       "namespace": namespace}}],
    }
    path = workdir / f"operator-{namespace}.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


class OperatorProcess:
    """The operator as a subprocess, logging to a file; `command` defaults to `zeek-pipeline operator`."""

    def __init__(self, kubeconfig: Path, namespace: str, workdir: Path, name: str = "operator",
                 extra: tuple[str, ...] = (), command: list[str] | None = None) -> None:
        self.liveness_port = free_port()
        self.identity = f"{name}-{uuid.uuid4().hex[:4]}"
        self.command = command or [
            str(ZEEK_PIPELINE), "operator", "-n", namespace, "--log-format", "full", "--identity", self.identity,
            "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz", *extra]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "ZEEK_OPERATOR_TICK_SECONDS": str(TICK_SECONDS)}
        self.env.pop("POD_NAMESPACE", None)
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                      cwd=ROOT, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        wait_for(f"{text!r} in {self.log_path.name}", lambda: text in self.log(), timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.popen is None:
            return None
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator")


def throwaway_namespace(kubectl: Kubectl, prefix: str) -> Iterator[str]:
    """A fresh namespace for one test module (`yield from` it in a fixture); deleted without waiting after."""
    name = unique(prefix)
    ok(kubectl("create", "namespace", name))
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def running_operator(kube: Any, kubectl: Kubectl, namespace: str, workdir: Path) -> Iterator[OperatorProcess]:
    """The operator as a process watching `namespace` once it leads (`yield from` it in a fixture); on stop it
    must exit 0 without a traceback."""
    install_crd(kubectl)
    kubeconfig = install_rbac(kubectl, kube, namespace, workdir)
    process = OperatorProcess(kubeconfig, namespace, workdir).start()
    process.wait_log("acquired the lease")
    yield process
    code = process.stop()
    log = process.log()
    assert code == 0, f"operator exit code {code}\n{log[-3000:]}"
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from throwaway_namespace(kubectl, "zp-e2e")


@pytest.fixture(scope="module")
def operator(kube: Any, kubectl: Kubectl, namespace: str, workdir: Path) -> Iterator[OperatorProcess]:
    yield from running_operator(kube, kubectl, namespace, workdir)


@pytest.fixture
def minimal(kafka_bootstrap: str) -> dict[str, Any]:
    return {"kafka": {"bootstrapServers": [kafka_bootstrap]}}


def deployments(kubectl: Kubectl, namespace: str, name: str) -> dict[str, dict[str, Any] | None]:
    return {c: get(kubectl, "deployment", f"{name}-{c}", namespace) for c in COMPONENTS}


def template_hash(deployment: dict[str, Any] | None) -> str:
    assert deployment is not None
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    return str(annotations.get("zeek-pipeline.io/config-hash", ""))


def container(deployment: dict[str, Any] | None) -> dict[str, Any]:
    assert deployment is not None
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


# ---------------------------------------------------------------------------------------------- tests


def test_minimal_pipeline_gets_its_children_and_status(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any]
) -> None:
    name = unique("lab")
    apply(kubectl, pipeline(name, minimal), namespace=namespace)
    zp = wait_for("status with a config hash", lambda: (
        (z := get(kubectl, "zeekpipeline", name, namespace)) and (z.get("status") or {}).get("configHash") and z))
    uid = zp["metadata"]["uid"]
    owned = {"kind": "ZeekPipeline", "name": name, "uid": uid, "controller": True, "blockOwnerDeletion": True,
             "apiVersion": "zeek-pipeline.io/v1alpha1"}
    children = [("configmap", f"{name}-config"), ("service", f"{name}-health"), ("service", f"{name}-metrics"),
                ("serviceaccount", name)] + [("deployment", f"{name}-{c}") for c in COMPONENTS]
    for kind, child in children:
        found = get(kubectl, kind, child, namespace)
        assert found is not None, f"{kind}/{child} missing"
        assert found["metadata"]["ownerReferences"] == [owned], (kind, child)
        assert found["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "zeek-operator"
    configmap = get(kubectl, "configmap", f"{name}-config", namespace)
    assert configmap is not None
    config = json.loads(configmap["data"]["config.json"])
    assert config["kafka"]["brokers"] == minimal["kafka"]["bootstrapServers"]
    assert {"normalization.json", "schema.json"} <= set(configmap["data"])
    for component, deployment in deployments(kubectl, namespace, name).items():
        c = container(deployment)
        assert c["image"].startswith("ghcr.io/zeek-pipeline/zeek-pipeline:")
        assert c["command"] == ["zeek-pipeline"]
        assert c["args"] == [component, "--config", "/etc/zeek-pipeline/config.json"]
        assert {e["name"] for e in c["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert deployment is not None
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template_hash(deployment) == zp["status"]["configHash"]
    # The PVC is created but deliberately not owned (keepOnDelete keeps the Parquet data).
    pvc = get(kubectl, "pvc", f"{name}-parquet", namespace)
    assert pvc is not None and not pvc["metadata"].get("ownerReferences")

    # No node runs pods: the controller-manager creates the ReplicaSets, the pods stay Pending.
    def settled() -> dict[str, Any] | None:
        z = get(kubectl, "zeekpipeline", name, namespace)
        counts = ((z or {}).get("status") or {}).get("components") or {}
        updated = all((counts.get(c) or {}).get("updatedReplicas") == 1 for c in COMPONENTS)
        return z if updated and condition(z, "Progressing").get("reason") == "RollingOut" else None

    zp = wait_for("deployment counts in the status", settled, timeout=60)
    assert condition(zp, "Ready") | {"lastTransitionTime": None} == {
        "type": "Ready", "status": "False", "reason": "ComponentsNotReady", "lastTransitionTime": None,
        "message": "normalizer-enricher 0/1 ready; parquet-writer 0/1 ready; health 0/1 ready",
        "observedGeneration": 1}
    assert condition(zp, "Degraded")["status"] == "False"
    assert zp["status"]["normalizers"] == "0/1" and zp["status"]["writers"] == "0/1"
    assert zp["status"]["healthUrl"] == f"http://{name}-health.{namespace}.svc:8080/"
    table = ok(kubectl("get", "zp", name, "-n", namespace)).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "NORMALIZERS", "WRITERS", "LAG", "AGE"]
    assert table[1].split()[:4] == [name, "False", "0/1", "0/1"]
    wait_for("Created events", lambda: "Created" in {e["reason"] for e in events(kubectl, namespace, name)})


def test_spec_changes_roll_out_to_the_children(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any]
) -> None:
    name = unique("roll")
    apply(kubectl, pipeline(name, minimal), namespace=namespace)
    first = wait_for("children", lambda: all(deployments(kubectl, namespace, name).values())
                     and deployments(kubectl, namespace, name))
    old_hash = template_hash(first["parquet-writer"])
    changed = json.loads(json.dumps(minimal))
    changed.update(image={"tag": "9.9.9"}, writer={"replicas": 3, "flush": {"intervalSeconds": 15},
                                                   "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}})
    apply(kubectl, pipeline(name, changed), namespace=namespace)

    def rolled() -> dict[str, dict[str, Any] | None] | None:
        now = deployments(kubectl, namespace, name)
        writer = now["parquet-writer"]
        if writer and writer["spec"]["replicas"] == 3 and all(
                d and container(d)["image"].endswith(":9.9.9") for d in now.values()):
            return now
        return None

    now = wait_for("the writer to follow the spec", rolled)
    new_hash = template_hash(now["parquet-writer"])
    assert new_hash != old_hash  # flush settings are in config.json: the hash changes, the pods roll
    assert all(template_hash(d) == new_hash for d in now.values())
    assert all(container(d)["image"].endswith(":9.9.9") for d in now.values())
    configmap = get(kubectl, "configmap", f"{name}-config", namespace)
    assert configmap is not None
    assert json.loads(configmap["data"]["config.json"])["write"]["flush_interval_seconds"] == 15
    # The controller-manager really rolls: a ReplicaSet of the new pod template appears.
    wait_for("a ReplicaSet with the new config hash", lambda: any(
        (rs["spec"]["template"]["metadata"].get("annotations") or {}).get("zeek-pipeline.io/config-hash")
        == new_hash for rs in json.loads(ok(kubectl(
            "get", "rs", "-n", namespace, "-l", f"zeek-pipeline.io/pipeline={name}", "-o", "json")).stdout)["items"]))
    zp = wait_for("observedGeneration 2", lambda: (z := get(kubectl, "zeekpipeline", name, namespace))
                  and condition(z, "Ready").get("observedGeneration") == 2 and z)
    assert zp["status"]["configHash"] == new_hash
    assert zp["status"]["writers"] == "0/3"
    wait_for("a ConfigChanged event", lambda: "ConfigChanged" in {
        e["reason"] for e in events(kubectl, namespace, name)})


def test_children_deleted_or_edited_by_hand_are_put_back(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any]
) -> None:
    name = unique("heal")
    apply(kubectl, pipeline(name, minimal), namespace=namespace)
    wait_for("children", lambda: all(deployments(kubectl, namespace, name).values()))
    original = get(kubectl, "deployment", f"{name}-normalizer-enricher", namespace)
    configmap = get(kubectl, "configmap", f"{name}-config", namespace)
    assert original is not None and configmap is not None

    ok(kubectl("delete", "deployment", f"{name}-normalizer-enricher", "-n", namespace))
    back = wait_for("the deleted Deployment to come back", lambda: (
        (d := get(kubectl, "deployment", f"{name}-normalizer-enricher", namespace))
        and d["metadata"]["uid"] != original["metadata"]["uid"] and d), timeout=30)
    assert container(back)["args"][0] == "normalizer-enricher"

    ok(kubectl("delete", "configmap", f"{name}-config", "-n", namespace))
    restored = wait_for("the deleted ConfigMap to come back", lambda: (
        (c := get(kubectl, "configmap", f"{name}-config", namespace))
        and c["metadata"]["uid"] != configmap["metadata"]["uid"] and c), timeout=30)
    assert restored["data"] == configmap["data"]

    ok(kubectl("scale", "deployment", f"{name}-parquet-writer", "-n", namespace, "--replicas=5"))
    ok(kubectl("set", "image", f"deployment/{name}-health", "-n", namespace, "health=evil/image:latest"))
    wait_for("hand edits to be undone", lambda: (
        (w := get(kubectl, "deployment", f"{name}-parquet-writer", namespace)) and w["spec"]["replicas"] == 1
        and (h := get(kubectl, "deployment", f"{name}-health", namespace))
        and container(h)["image"].startswith("ghcr.io/zeek-pipeline/zeek-pipeline:")), timeout=30)


def test_deleting_the_pipeline_garbage_collects_what_it_owns(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any]
) -> None:
    name = unique("gc")
    apply(kubectl, pipeline(name, minimal), namespace=namespace)
    wait_for("children", lambda: all(deployments(kubectl, namespace, name).values()))
    ok(kubectl("delete", "zeekpipeline", name, "-n", namespace, "--wait=true", "--timeout=60s"))
    selector = f"zeek-pipeline.io/pipeline={name}"

    def remaining() -> list[str]:
        result = ok(kubectl("get", "deployments,replicasets,configmaps,services,serviceaccounts,pvc,cronjobs",
                            "-n", namespace, "-l", selector, "-o", "name"))
        return result.stdout.split()

    kept = [f"persistentvolumeclaim/{name}-parquet"]  # not owned: keepOnDelete keeps the Parquet data
    wait_for("garbage collection of the owned children", lambda: remaining() == kept, timeout=60)
    time.sleep(TICK_SECONDS * 2)  # nothing is re-created by a late event or timer
    assert remaining() == kept


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"writer": {"flush": {"bufferMB": 0, "intervalSeconds": 0, "eventCount": 0}}},
         "at least one of bufferMB, intervalSeconds, eventCount must be > 0"),
        ({"writer": {"storage": {"type": "nfs"}}}, 'spec.writer.storage.type: Unsupported value: "nfs"'),
        ({"writer": {"storage": {"type": "s3"}}}, "storage type s3 needs s3.bucket"),
        ({"kafka": {"security": {"protocol": "SASL_SSL"}}}, "protocol SASL_* needs sasl"),
        ({"normalizer": {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}}, "minReplicas must not exceed"),
        ({"normalizer": {"replicas": 1000}}, "spec.normalizer.replicas"),
        ({"health": {"serviceType": "Ingress"}}, "spec.health.serviceType"),
        ({"writer": {"resources": {"limits": {"memory": "lots"}}}}, "spec.writer.resources.limits.memory"),
        ({"kafka": {"bootstrapServers": []}}, "spec.kafka.bootstrapServers"),
        # several writers on the default ReadWriteOnce claim would end in Multi-Attach
        ({"writer": {"replicas": 2}}, "set writer.storage.pvc.accessModes to [ReadWriteMany]"),
        ({"writer": {"autoscaling": {"enabled": True, "maxReplicas": 3}}}, "needs a volume every writer can mount"),
        ({"writer": {"replicas": 2, "storage": {"pvc": {"accessModes": ["ReadWriteOnce", "ReadWriteOncePod"]}}}},
         "or use writer.storage.type s3"),
        ({"bogus": True}, 'unknown field "spec.bogus"'),
    ],
)
def test_invalid_specs_are_rejected_by_the_crd_schema(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any],
    change: dict[str, Any], message: str,
) -> None:
    spec = json.loads(json.dumps(minimal))
    for key, value in change.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                     input=json.dumps(pipeline(unique("bad"), spec)))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_problems_the_schema_cannot_see_are_reported_degraded(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any]
) -> None:
    name = unique("degraded")
    spec = {**minimal, "kafka": {**minimal["kafka"], "security": {
        "protocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "PLAIN", "secretRef": {"name": f"{name}-creds"}}}}}
    apply(kubectl, pipeline(name, spec), namespace=namespace)
    zp = wait_for("Degraded=True MissingSecret", lambda: (z := get(kubectl, "zeekpipeline", name, namespace))
                  and condition(z, "Degraded").get("reason") == "MissingSecret" and z)
    message = condition(zp, "Degraded")["message"]
    assert message.startswith("spec.kafka.security.sasl.secretRef: Secret") and f"{name}-creds" in message
    assert condition(zp, "Ready")["status"] == "False"
    wait_for("a Warning event naming the field", lambda: any(  # events are posted asynchronously
        e["type"] == "Warning" and e["reason"] == "MissingSecret"
        and "spec.kafka.security.sasl.secretRef" in e["message"] for e in events(kubectl, namespace, name)))
    # The children exist anyway (with the Secret's env): the pods start as soon as the Secret appears.
    writer = get(kubectl, "deployment", f"{name}-parquet-writer", namespace)
    assert {"name": "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": f"{name}-creds", "key": "password"}}} in container(writer)["env"]
    ok(kubectl("create", "secret", "generic", f"{name}-creds", "-n", namespace,
               "--from-literal=username=zeek", "--from-literal=password=123456"))
    wait_for("Degraded to clear once the Secret exists", lambda: condition(
        get(kubectl, "zeekpipeline", name, namespace), "Degraded").get("status") == "False", timeout=30)
    wait_for("a Recovered event", lambda: "Recovered" in {e["reason"] for e in events(kubectl, namespace, name)})

    # A bad normalization rule: reported on its field; the running children keep the last good config.
    good_hash = template_hash(get(kubectl, "deployment", f"{name}-normalizer-enricher", namespace))
    bad = {**spec, "normalization": {"rules": {"dns": {"promote": {"query": "event_year"}}}}}
    apply(kubectl, pipeline(name, bad), namespace=namespace)
    zp = wait_for("Degraded=True InvalidNormalization", lambda: (z := get(kubectl, "zeekpipeline", name, namespace))
                  and condition(z, "Degraded").get("reason") == "InvalidNormalization" and z)
    assert condition(zp, "Degraded")["message"].startswith("spec.normalization.rules:")
    assert "event_year" in condition(zp, "Degraded")["message"]
    assert condition(zp, "Degraded")["observedGeneration"] == 2
    time.sleep(TICK_SECONDS * 1.5)
    assert template_hash(get(kubectl, "deployment", f"{name}-normalizer-enricher", namespace)) == good_hash
    assert operator.alive  # reported, never a crash loop


def test_disabling_health_removes_its_deployment_and_service(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any]
) -> None:
    name = unique("nohealth")
    apply(kubectl, pipeline(name, minimal), namespace=namespace)
    wait_for("health Service", lambda: get(kubectl, "service", f"{name}-health", namespace))
    apply(kubectl, pipeline(name, {**minimal, "health": {"enabled": False}}), namespace=namespace)
    wait_for("health Deployment and Service deleted", lambda: get(kubectl, "deployment", f"{name}-health", namespace)
             is None and get(kubectl, "service", f"{name}-health", namespace) is None, timeout=30)
    zp = wait_for("status without health", lambda: (z := get(kubectl, "zeekpipeline", name, namespace))
                  and "health" not in (z["status"].get("components") or {}) and z)
    assert zp["status"]["healthUrl"] == ""


def test_operator_liveness_endpoint_answers(operator: OperatorProcess) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5) as response:
        body = json.loads(response.read())
    assert response.status == 200
    assert body["operator"]["reconciles"] >= 1


def test_kopf_run_entry_point_works_too(kube: Any, kubectl: Kubectl, workdir: Path, minimal: dict[str, Any]) -> None:
    install_crd(kubectl)
    namespace = unique("zp-kopf")
    ok(kubectl("create", "namespace", namespace))
    process = OperatorProcess(Path(kube.kubeconfig), namespace, workdir, name="kopf-run", command=[
        str(KOPF), "run", "-m", "zeek_operator.handlers", "--standalone", "-n", namespace]).start()
    try:
        apply(kubectl, pipeline("dev", minimal), namespace=namespace)
        wait_for("children from `kopf run`", lambda: all(deployments(kubectl, namespace, "dev").values()), timeout=60)
    finally:
        assert process.stop() == 0, process.log()[-3000:]
        kubectl("delete", "namespace", namespace, "--wait=false")


def test_example_resource_from_the_readme_shows_in_kubectl_get(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    ok(kubectl("apply", "-n", namespace, "-f", str(ROOT / "zeekpipeline.yaml")))
    zp = wait_for("the example pipeline's status", lambda: (z := get(kubectl, "zeekpipeline", "dev", namespace))
                  and (z.get("status") or {}).get("writers") == "0/1" and z)
    assert condition(zp, "Degraded")["status"] == "False"
    table = ok(kubectl("get", "zp", "-n", namespace, "dev", "-o", "wide")).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "NORMALIZERS", "WRITERS", "LAG", "REASON", "COMPACTED", "AGE"]
    assert table[1].split()[:4] == ["dev", "False", "0/1", "0/1"]
    assert table[1].split()[4] == "ComponentsNotReady"  # LAG is empty: the dev Redpanda is not reachable here
    ok(kubectl("delete", "-n", namespace, "-f", str(ROOT / "zeekpipeline.yaml"), "--wait=true", "--timeout=60s"))


def test_names_too_long_for_the_children_are_rejected(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, minimal: dict[str, Any]
) -> None:
    for name in ("x" * 46, "9lives"):
        result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                         input=json.dumps(pipeline(name, minimal)))
        assert result.returncode != 0 and "metadata.name must be a DNS label" in result.stderr, result.stderr
    ok(kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pipeline("x" * 45, minimal))))
