"""Lease leader election (pure part): when a replica may take or keep the Lease."""

from __future__ import annotations

import datetime as dt

from zeek_operator.leader import can_acquire

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def lease(holder: str | None, renewed_seconds_ago: float, duration: int = 15) -> dict[str, object]:
    renew = (NOW - dt.timedelta(seconds=renewed_seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": renew}}


def test_lease_is_free_to_take_when_missing_released_or_ours() -> None:
    assert can_acquire(None, "me", NOW)
    assert can_acquire(lease(None, 1), "me", NOW)
    assert can_acquire(lease("me", 1), "me", NOW)


def test_lease_of_a_live_leader_is_not_taken() -> None:
    assert not can_acquire(lease("other", 5), "me", NOW)


def test_lease_of_a_silent_leader_is_taken_after_its_duration() -> None:
    assert not can_acquire(lease("other", 14.9), "me", NOW)
    assert can_acquire(lease("other", 15.1), "me", NOW)
