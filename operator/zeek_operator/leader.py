"""Leader election on a coordination.k8s.io Lease, so that several operator replicas never act at once.

kopf's peering is not used: replicas of equal priority all pause when they see each other (it exists to
let a developer's operator pre-empt the deployed one). Here the replicas race for one Lease, client-go
style: the holder renews it every `retry` seconds; the others take it over once it has not been renewed
for `leaseDurationSeconds`. Optimistic concurrency (the Lease's resourceVersion) makes every takeover
atomic: of two replicas writing the same Lease, one gets HTTP 409 and stays a standby.

Only the leader runs kopf at all (see cli.py), so a standby neither handles resources nor writes to them.
A leader that cannot renew within its renew deadline stops kopf and exits; Kubernetes restarts it as a
standby.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from zeek_operator.kube import ApiError, Kube

log = logging.getLogger("zeek_operator.leader")
MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"


def _parse(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def can_acquire(lease: Mapping[str, Any] | None, identity: str, now: dt.datetime) -> bool:
    """Whether `identity` may take or keep the Lease: free, already ours, or expired."""
    if lease is None:
        return True
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 15)
    return renewed is None or now >= renewed + dt.timedelta(seconds=duration)


class LeaseElector:
    def __init__(self, kube: Kube, namespace: str, name: str = "zeek-operator", identity: str | None = None,
                 lease_seconds: int = 15) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_seconds = lease_seconds
        self.is_leader = False
        self.holder: str | None = None  # who held the Lease at the last attempt

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; True when we hold it afterwards."""
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime(MICROTIME)
        try:
            lease = self.kube.get("Lease", self.namespace, self.name)
            if lease is None:
                self.kube.create({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                             "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
                })
            elif can_acquire(lease, self.identity, now):
                self.holder = (lease.get("spec") or {}).get("holderIdentity")
                spec = dict(lease.get("spec") or {})
                if spec.get("holderIdentity") != self.identity:
                    spec["acquireTime"] = stamp
                    spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
                spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.lease_seconds, renewTime=stamp)
                self.kube.replace({**lease, "spec": spec})
            else:
                self.holder = (lease.get("spec") or {}).get("holderIdentity")
                self.is_leader = False
                return False
        except ApiError as exc:
            if exc.status != 409:  # 409: another replica won the race
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            self.is_leader = False
            return False
        self.holder = self.identity
        if not self.is_leader:
            log.info("acquired the lease %s/%s as %s", self.namespace, self.name, self.identity)
        self.is_leader = True
        return True

    def release(self) -> None:
        """Give the Lease up at once (a clean shutdown), so a standby need not wait for it to expire."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = self.kube.get("Lease", self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec.update(holderIdentity=None, leaseDurationSeconds=1,
                        renewTime=dt.datetime.now(dt.UTC).strftime(MICROTIME))
            self.kube.replace({**lease, "spec": spec})
            log.info("released the lease %s/%s", self.namespace, self.name)
        except ApiError as exc:
            log.warning("could not release the lease %s/%s: %s", self.namespace, self.name, exc)


async def acquire(elector: LeaseElector, retry: float, stop: asyncio.Event) -> bool:
    """Wait (as a standby) until the Lease is ours; False when asked to stop first."""
    announced = False
    while not stop.is_set():
        if await asyncio.to_thread(elector.try_acquire):
            return True
        if not announced:
            log.info("standby: the lease %s/%s is held by another replica", elector.namespace, elector.name)
            announced = True
        try:
            await asyncio.wait_for(stop.wait(), timeout=retry)
        except TimeoutError:
            pass
    return False


async def keep(elector: LeaseElector, retry: float, renew_deadline: float, stop: asyncio.Event,
               lost: asyncio.Event) -> None:
    """Renew every `retry` seconds; when no renewal succeeded for `renew_deadline`, set `lost` and `stop`."""
    last_renewal = time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=retry)
            return
        except TimeoutError:
            pass
        if await asyncio.to_thread(elector.try_acquire):
            last_renewal = time.monotonic()
            continue
        taken = elector.holder not in (None, elector.identity)
        if taken or time.monotonic() - last_renewal > renew_deadline:
            why = f"taken by {elector.holder}" if taken else f"not renewed for {renew_deadline:.0f}s"
            log.error("lost the lease %s/%s (%s): stopping", elector.namespace, elector.name, why)
            lost.set()
            stop.set()
            return
