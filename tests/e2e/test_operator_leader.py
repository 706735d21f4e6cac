"""Two operator replicas: only the Lease holder acts; the standby takes over when the leader dies or leaves."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_operator_lifecycle import (
    Kubectl,
    OperatorProcess,
    apply,
    get,
    install_crd,
    install_rbac,
    pipeline,
    throwaway_namespace,
)
from tests.infra.waiting import wait_for

LEASE_SECONDS = 4


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from throwaway_namespace(kubectl, "zp-lead")


def holder(kubectl: Kubectl, namespace: str) -> str | None:
    lease = get(kubectl, "lease", "zeek-operator", namespace)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def liveness(process: OperatorProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{process.liveness_port}/healthz", timeout=5) as response:
        assert response.status == 200
        body: dict[str, Any] = json.loads(response.read())
        return body


def acted_on(process: OperatorProcess, namespace: str, name: str) -> bool:
    return f"[{namespace}/{name}] reconciled" in process.log()


def test_only_the_lease_holder_acts_and_the_standby_takes_over(
    kube: Any, kubectl: Kubectl, namespace: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    install_crd(kubectl)
    kubeconfig = install_rbac(kubectl, kube, namespace, tmp_path)
    args = ("--lease-seconds", str(LEASE_SECONDS))
    first = OperatorProcess(kubeconfig, namespace, tmp_path, name="first", extra=args).start()
    second = OperatorProcess(kubeconfig, namespace, tmp_path, name="second", extra=args)
    third = OperatorProcess(kubeconfig, namespace, tmp_path, name="third", extra=args)
    try:
        first.wait_log("acquired the lease")
        second.start()
        second.wait_log("standby: the lease")
        assert holder(kubectl, namespace) == first.identity
        assert liveness(second) == {"standby": True}  # a standby is alive, not restarted by its probe
        assert "operator" in liveness(first)  # the leader's probe is kopf's

        spec = {"kafka": {"bootstrapServers": [kafka_bootstrap]}}
        apply(kubectl, pipeline("one", spec), namespace=namespace)
        wait_for("children of 'one'", lambda: get(kubectl, "deployment", "one-parquet-writer", namespace))
        first.wait_log(f"[{namespace}/one] reconciled")
        time.sleep(2)  # give a misbehaving standby every chance to act
        assert not acted_on(second, namespace, "one")
        assert "Handler" not in second.log() and "kopf" not in second.log()

        # The leader dies without releasing the Lease: the standby waits for it to expire, then leads.
        first.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        second.wait_log("acquired the lease", timeout=LEASE_SECONDS * 4)
        takeover = time.monotonic() - killed_at
        assert holder(kubectl, namespace) == second.identity
        spec_two = {**spec, "normalizer": {"replicas": 2}}
        apply(kubectl, pipeline("one", spec_two), namespace=namespace)
        wait_for("the new leader to apply the change", lambda: (
            (d := get(kubectl, "deployment", "one-normalizer-enricher", namespace)) and d["spec"]["replicas"] == 2))
        second.wait_log(f"[{namespace}/one] reconciled")  # logged when the handler ends, after the apply

        # A clean shutdown releases the Lease, so the next standby takes over without waiting for expiry.
        third.start()
        third.wait_log("standby: the lease")
        assert second.stop(signal.SIGTERM) == 0
        stopped_at = time.monotonic()
        third.wait_log("acquired the lease", timeout=LEASE_SECONDS * 2)
        handover = time.monotonic() - stopped_at
        assert "released the lease" in second.log()
        assert handover < LEASE_SECONDS, f"handover took {handover:.1f}s, the Lease was not released"
        apply(kubectl, pipeline("two", spec), namespace=namespace)
        wait_for("children of 'two' from the third replica", lambda: get(
            kubectl, "deployment", "two-parquet-writer", namespace))
        third.wait_log(f"[{namespace}/two] reconciled")
        assert not acted_on(second, namespace, "two")
        print(f"\nleader killed -> standby leads in {takeover:.1f}s; clean handover in {handover:.1f}s")
    finally:
        for process in (first, second, third):
            process.stop()
