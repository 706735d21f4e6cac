"""Autoscaling decisions (pure): scale up on lag, caps by maxReplicas and partitions, cooldown, no flapping."""

from __future__ import annotations

from typing import Any

from zeek_operator.autoscale import (
    FLUSH_SLACK_SECONDS,
    Decision,
    GroupLag,
    Policy,
    admin_config,
    decide,
    input_rate,
    writer_backlog,
)
from zeek_operator.reconcile import _decide
from zeek_operator.spec import parse_spec

POLICY = Policy(min_replicas=1, max_replicas=8, target_lag_per_replica=1000, cooldown_seconds=60)
MINIMAL: dict[str, Any] = {"kafka": {"bootstrapServers": ["kafka:9092"]}}


def step(current: int, lag: int | None, partitions: int | None = 12, policy: Policy = POLICY,
         last_scale: float | None = None, now: float = 1000.0) -> Decision:
    return decide(current=current, lag=lag, partitions=partitions, policy=policy, last_scale=last_scale, now=now)


def test_scales_up_to_the_lag_over_the_target() -> None:
    decision = step(1, 4500)
    assert (decision.replicas, decision.direction) == (5, "up")
    assert "lag 4500" in decision.reason and "scaling up from 1 to 5" in decision.reason


def test_never_above_max_replicas() -> None:
    decision = step(2, 1_000_000)
    assert decision.replicas == 8
    assert "capped by maxReplicas 8" in decision.reason


def test_never_above_the_partition_count() -> None:
    decision = step(1, 1_000_000, partitions=3)
    assert decision.replicas == 3
    assert "capped by 3 partitions" in decision.reason


def test_partitions_win_over_min_replicas() -> None:
    policy = Policy(min_replicas=4, max_replicas=8, target_lag_per_replica=1000, cooldown_seconds=0)
    assert step(4, 0, partitions=2, policy=policy).replicas == 2


def test_no_lag_goes_down_to_min_replicas() -> None:
    decision = step(6, 0)
    assert (decision.replicas, decision.direction) == (1, "down")


def test_cooldown_holds_a_change_until_it_has_passed() -> None:
    held = step(1, 4500, last_scale=990.0, now=1000.0)
    assert (held.replicas, held.direction) == (1, "hold")
    assert "would scale up to 5, cooling down for 50s more" in held.reason
    assert step(1, 4500, last_scale=940.0, now=1000.0).replicas == 5


def test_scale_down_also_waits_for_the_cooldown() -> None:
    assert step(5, 0, last_scale=980.0, now=1000.0).direction == "hold"
    assert step(5, 0, last_scale=900.0, now=1000.0).replicas == 1


def test_out_of_bounds_is_corrected_at_once_even_in_cooldown() -> None:
    decision = step(10, 500, partitions=12, last_scale=999.0, now=1000.0)
    assert (decision.replicas, decision.direction) == (8, "down")
    assert "outside the bounds" in decision.reason
    assert step(5, 500, partitions=2, last_scale=999.0).replicas == 2


def test_unknown_lag_changes_nothing() -> None:
    decision = step(3, None)
    assert (decision.replicas, decision.direction) == (3, "hold")


def test_lag_hovering_at_a_boundary_does_not_flap() -> None:
    # With no cooldown at all, only the hysteresis keeps the count steady around 2000 (2 <-> 3 replicas).
    policy = Policy(min_replicas=1, max_replicas=8, target_lag_per_replica=1000, cooldown_seconds=0)
    current, changes = 2, 0
    for lag in [2050, 1950, 2080, 1900, 2040, 1990, 2100, 1950] * 3:
        decision = step(current, lag, policy=policy)
        changes += decision.changed
        current = decision.replicas
    assert current == 3 and changes == 1


def test_scale_down_needs_headroom_below_the_smaller_count() -> None:
    # 3 replicas; 1950 messages would fit 2 replicas exactly, but not with 10 % headroom (2 * 900 = 1800).
    assert step(3, 1950, last_scale=0.0).direction == "hold"
    assert step(3, 1700, last_scale=0.0).replicas == 2


def test_admin_config_takes_credentials_from_the_secrets_not_the_spec() -> None:
    spec = parse_spec({"kafka": {"bootstrapServers": ["a:9093", "b:9093"], "librdkafka": {"client.rack": "r1"},
                                 "security": {"protocol": "SASL_SSL",
                                              "sasl": {"mechanism": "PLAIN", "secretRef": {"name": "user"}},
                                              "tls": {"secretRef": {"name": "ca"}}}}})
    conf = admin_config(spec, {"user": {"username": "zeek", "password": "pw"}, "ca": {"ca.crt": "-----PEM"}})
    assert conf["bootstrap.servers"] == "a:9093,b:9093"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == ("PLAIN", "zeek", "pw")
    assert conf["ssl.ca.pem"] == "-----PEM" and conf["client.rack"] == "r1"


# ------------------------------------------------------------------------------ the writer's backlog


def test_input_rate_needs_two_readings_and_ignores_resets() -> None:
    assert input_rate(None, None, 1000, 30.0) is None
    assert input_rate(1000, 0.0, 4000, 30.0) == 100.0
    assert input_rate(4000, 0.0, 1000, 30.0) is None  # topic recreated
    assert input_rate(1000, 30.0, 1000, 30.0) is None


def test_writer_backlog_subtracts_what_its_flush_interval_holds() -> None:
    flush = parse_spec(MINIMAL).writer.flush  # 60 s interval
    keeping_up = writer_backlog(lag=6000, partitions=6, rate=100.0, flush=flush)
    assert keeping_up.value == 0 and keeping_up.explained == 100 * (60 + FLUSH_SLACK_SECONDS)
    behind = writer_backlog(lag=50_000, partitions=6, rate=100.0, flush=flush)
    assert behind.value == 50_000 - 7000 and "backlog 43000" in behind.reason
    assert writer_backlog(lag=50_000, partitions=6, rate=None, flush=flush).value is None


def test_writer_backlog_counts_event_count_flushes_per_partition() -> None:
    flush = parse_spec({**MINIMAL, "writer": {"flush": {"intervalSeconds": 0, "eventCount": 1000}}}).writer.flush
    assert writer_backlog(lag=7000, partitions=6, rate=10.0, flush=flush).value == 1000


def writer_tick(status: dict[str, Any], lag: int, end: int, now: float) -> dict[str, Any]:
    spec = parse_spec({**MINIMAL, "writer": {"autoscaling": {
        "enabled": True, "maxReplicas": 4, "targetLagPerReplica": 1000, "cooldownSeconds": 0},
        "storage": {"type": "s3", "s3": {"bucket": "lake"}}}})
    lags = {"parquet-writer": GroupLag("w", "zeek-normalized", 6, lag, {}, end)}
    decisions, _, _ = _decide(spec, status, lags, now)
    entry: dict[str, Any] = decisions["parquet-writer"]
    return entry


def test_a_writer_that_keeps_up_is_not_scaled_although_its_lag_is_rate_times_interval() -> None:
    """500 msg/s, 60 s flush interval: the lag saw-tooths up to 30000 while the writer keeps up."""
    status: dict[str, Any] = {}
    end = 1_000_000
    for tick, lag in enumerate([12_000, 29_000, 3_000, 18_000, 30_000]):
        end += 500 * 30
        entry = writer_tick(status, lag, end, now=1000.0 + 30 * tick)
        status = {"autoscaling": {"parquet-writer": entry}}
        assert entry["desiredReplicas"] == 1, entry["reason"]
    assert entry["inputRate"] == 500.0 and entry["backlog"] == 0


def test_a_writer_falling_behind_is_scaled_on_its_backlog() -> None:
    first = writer_tick({}, 30_000, 1_000_000, now=1000.0)
    assert first["desiredReplicas"] == 1 and "backlog unknown" in first["reason"]
    second = writer_tick({"autoscaling": {"parquet-writer": first}}, 38_000, 1_015_000, now=1030.0)
    # 500/s x 70 s = 35000 explained; backlog 3000 -> 3 replicas
    assert second["backlog"] == 3000 and second["desiredReplicas"] == 3, second["reason"]
    assert second["reason"].startswith("backlog 3000, target 1000/replica -> 3")
