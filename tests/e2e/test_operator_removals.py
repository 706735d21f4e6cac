"""Values removed from a ZeekPipeline are removed from its children (server-side apply owns every field).

The operator used to create children with POST and apply them afterwards, so fields first set by the POST
were never pruned: removing TLS, SASL, image pull secrets or limits left them on the pods, and switching
the writer's storage from ReadWriteMany to ReadWriteOnce left `rollingUpdate` beside `Recreate` (422 on every
reconcile). These tests remove values, and also start from a child an older operator POSTed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_operator_lifecycle import (
    Kubectl,
    OperatorProcess,
    apply,
    condition,
    container,
    deployments,
    get,
    pipeline,
    running_operator,
    throwaway_namespace,
    unique,
)
from tests.infra.waiting import ok, wait_for
from zeek_operator import resources
from zeek_operator.kube import FIELD_MANAGER
from zeek_operator.spec import parse_spec


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from throwaway_namespace(kubectl, "zp-prune")


@pytest.fixture(scope="module")
def operator(kube: Any, kubectl: Kubectl, namespace: str, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[OperatorProcess]:
    yield from running_operator(kube, kubectl, namespace, tmp_path_factory.mktemp("prune"))


def full_spec(bootstrap: str, name: str) -> dict[str, Any]:
    """Every optional value the removal test takes away again."""
    return {
        "kafka": {"bootstrapServers": [bootstrap], "security": {
            "protocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-512", "secretRef": {"name": f"{name}-sasl"}},
            "tls": {"secretRef": {"name": f"{name}-tls"}}}},
        "image": {"pullSecrets": [f"{name}-registry"]},
        "normalizer": {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "2", "memory": "3Gi"}}},
        "writer": {"replicas": 2, "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}},
    }


def reduced_spec(bootstrap: str) -> dict[str, Any]:
    """The same pipeline without them: no security, no pull secret, no limits, one writer on ReadWriteOnce."""
    return {"kafka": {"bootstrapServers": [bootstrap]},
            "normalizer": {"resources": {"requests": {"cpu": "100m"}}},
            "writer": {"replicas": 1, "storage": {"pvc": {"accessModes": ["ReadWriteOnce"]}}}}


def a_ca_certificate() -> str:
    """A real PEM certificate (the operator's own AdminClient loads the CA)."""
    import certifi

    bundle = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----"
    return bundle[bundle.index("-----BEGIN CERTIFICATE-----"):bundle.index(end) + len(end)] + "\n"


def secrets(kubectl: Kubectl, namespace: str, name: str, workdir: Path) -> None:
    ok(kubectl("create", "secret", "generic", f"{name}-sasl", "-n", namespace,
               "--from-literal=username=zeek", "--from-literal=password=pw"))
    ca = workdir / "ca.crt"
    ca.write_text(a_ca_certificate())
    ok(kubectl("create", "secret", "generic", f"{name}-tls", "-n", namespace, f"--from-file=ca.crt={ca}"))


def our_operations(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    """The managedFields operations recorded for the operator's field manager on a Deployment."""
    result = ok(kubectl("get", "deployment", name, "-n", namespace, "-o", "json", "--show-managed-fields"))
    entries = json.loads(result.stdout)["metadata"].get("managedFields") or []
    return [e["operation"] for e in entries if e["manager"] == FIELD_MANAGER and not e.get("subresource")]


def leftovers(deployment: dict[str, Any] | None) -> list[str]:
    """What the reduced spec must not have left on a Deployment."""
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    found = [f"env {e['name']}" for e in c.get("env") or [] if "SASL" in e["name"]]
    found += [f"volume {v['name']}" for v in pod.get("volumes") or [] if v["name"] == "kafka-tls"]
    found += [f"mount {m['name']}" for m in c.get("volumeMounts") or [] if m["name"] == "kafka-tls"]
    found += ["imagePullSecrets"] * bool(pod.get("imagePullSecrets"))
    return found


def test_values_removed_from_the_spec_are_removed_from_the_children(
    kafka_bootstrap: str, kubectl: Kubectl, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    name = unique("prune")
    secrets(kubectl, namespace, name, tmp_path)
    apply(kubectl, pipeline(name, full_spec(kafka_bootstrap, name)), namespace=namespace)

    def complete() -> dict[str, dict[str, Any] | None] | None:
        now = deployments(kubectl, namespace, name)
        return now if all(now.values()) and all(leftovers(d) for d in now.values()) else None

    before = wait_for("children with TLS, SASL and pull secrets", complete, timeout=60)
    writer = before["parquet-writer"]
    assert writer is not None and writer["spec"]["strategy"]["type"] == "RollingUpdate"
    assert writer["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert container(before["normalizer-enricher"])["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}

    apply(kubectl, pipeline(name, reduced_spec(kafka_bootstrap)), namespace=namespace)

    def pruned() -> dict[str, dict[str, Any] | None] | None:
        now = deployments(kubectl, namespace, name)
        writer = now["parquet-writer"]
        if writer is None or writer["spec"]["strategy"] != {"type": "Recreate"}:
            return None
        return now if not any(leftovers(d) for d in now.values()) else None

    after = wait_for("TLS, SASL, pull secrets, rollingUpdate gone", pruned, timeout=60)
    normalizer = container(after["normalizer-enricher"])
    assert "limits" not in normalizer["resources"] and normalizer["resources"]["requests"] == {"cpu": "100m"}
    assert after["parquet-writer"] is not None and after["parquet-writer"]["spec"]["replicas"] == 1
    zp = get(kubectl, "zeekpipeline", name, namespace)
    assert condition(zp, "Degraded")["status"] == "False", zp
    for component in after:
        assert our_operations(kubectl, namespace, f"{name}-{component}") == ["Apply"]
    assert "HTTP 422" not in operator.log()


def test_a_child_an_older_operator_created_with_post_is_migrated_and_pruned(
    kafka_bootstrap: str, kubectl: Kubectl, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """The upgrade path: a writer Deployment POSTed by the old operator (an Update entry of `zeek-operator`)
    with rollingUpdate and SASL; the new spec wants Recreate without SASL, which only an applier owning those
    fields can prune (without the migration every apply fails with 422)."""
    name = unique("legacy")
    secrets(kubectl, namespace, name, tmp_path)
    old_spec = parse_spec(full_spec(kafka_bootstrap, name))
    # what the old operator POSTed: the pods' ServiceAccount first, then the Deployment
    for old in (resources.build_service_account(name),
                resources.build_deployment("parquet-writer", name, old_spec, "old")):
        old["metadata"]["namespace"] = namespace
        ok(kubectl("create", "-n", namespace, f"--field-manager={FIELD_MANAGER}", "-f", "-",
                   input=json.dumps(old)))
    posted = get(kubectl, "deployment", f"{name}-parquet-writer", namespace)
    assert posted is not None and posted["spec"]["strategy"]["rollingUpdate"]
    assert our_operations(kubectl, namespace, f"{name}-parquet-writer") == ["Update"]

    apply(kubectl, pipeline(name, reduced_spec(kafka_bootstrap)), namespace=namespace)

    def migrated() -> dict[str, Any] | None:
        writer = get(kubectl, "deployment", f"{name}-parquet-writer", namespace)
        if writer is None or writer["spec"]["strategy"] != {"type": "Recreate"} or leftovers(writer):
            return None
        return writer

    writer = wait_for("the POSTed writer to be taken over and pruned", migrated, timeout=60)
    assert writer["metadata"]["uid"] == posted["metadata"]["uid"]  # patched, not re-created
    assert writer["metadata"]["ownerReferences"][0]["name"] == name
    assert our_operations(kubectl, namespace, f"{name}-parquet-writer") == ["Apply"]
    zp = get(kubectl, "zeekpipeline", name, namespace)
    assert condition(zp, "Degraded")["status"] == "False", condition(zp, "Degraded")
