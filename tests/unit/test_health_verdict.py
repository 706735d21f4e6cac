"""Verdict rules, lag trend and the activity window: pure functions over status records built by the real runtime."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.zeek_data import PROJECT_ROOT
from zeek_pipeline.health.fakes import fixed_sources
from zeek_pipeline.health.history import History
from zeek_pipeline.health.lag import growing_for, trend
from zeek_pipeline.health.models import (
    Component,
    KafkaState,
    Lag,
    LagGroup,
    LagTopic,
    Problem,
    StatusChannel,
)
from zeek_pipeline.health.state import HealthState
from zeek_pipeline.health.verdict import Activity, duration, judge_instance, pipeline_verdict
from zeek_pipeline.runtime.service import ServiceRuntime
from zeek_pipeline.runtime.status import StatusRecord
from zeek_pipeline.settings import load_settings

NOW = 1_760_000_000.0
SETTINGS = load_settings(PROJECT_ROOT / "config" / "config.json", environ={})


def real_record(component: str, instance: str = "pod-0", **changes: Any) -> dict[str, Any]:
    """A record exactly as ServiceRuntime publishes it, with the fields a test cares about replaced."""
    runtime = ServiceRuntime(component, SETTINGS.model_copy(update={"instance_id": instance}), None)
    runtime.set_state("ok")
    data = runtime.status_record().model_dump()
    data.update({"started_at": NOW - 600, "heartbeat_at": NOW - 5}, **changes)
    return data


def components(*records: dict[str, Any], now: float = NOW) -> list[Component]:
    state = HealthState(SETTINGS, fixed_sources(records, clock=lambda: now))
    return state.components_now(now)


KAFKA_OK = KafkaState(bootstrap="localhost:9092", reachable=True, checked_at=NOW, brokers=1, error=None)
NO_LAG = Lag(reachable=True, checked_at=NOW, error=None, groups=[])
CHANNEL = StatusChannel(topic="zeek-pipeline-status", reachable=True, loaded=True, error=None, records_read=2,
                        malformed=0, instances=2, problems=[])


def both_ok() -> list[Component]:
    return components(real_record("normalizer-enricher"), real_record("parquet-writer"))


def verdict(comps: list[Component], *, kafka: KafkaState = KAFKA_OK, lag: Lag = NO_LAG,
            channel: StatusChannel = CHANNEL, activity: list[Activity] | None = None) -> tuple[str, list[str]]:
    result = pipeline_verdict(comps, kafka, channel, lag, activity or [])
    return result.state, [r.text for r in result.reasons if r.severity != "info"]


# --- instance state -----------------------------------------------------------------------------
@pytest.mark.parametrize(("age", "expected"), [(5, "ok"), (89.9, "ok"), (90.1, "down"), (3600, "down")])
def test_instance_is_down_after_three_of_its_own_intervals(age: float, expected: str) -> None:
    record = StatusRecord.model_validate(real_record("parquet-writer", heartbeat_at=NOW - age, interval_seconds=30))
    state, reason = judge_instance(record, NOW)
    assert state == expected
    if expected == "down":
        assert reason.startswith(f"no heartbeat for {duration(age)}")


def test_down_wins_over_the_last_state_the_instance_reported() -> None:
    record = StatusRecord.model_validate(real_record("parquet-writer", state="ok", heartbeat_at=NOW - 4,
                                                     interval_seconds=1))
    assert judge_instance(record, NOW)[0] == "down"


def test_clean_shutdown_is_stopped_not_down() -> None:
    record = StatusRecord.model_validate(real_record("parquet-writer", state="stopped", heartbeat_at=NOW - 9999,
                                                     reason="signal SIGTERM"))
    assert judge_instance(record, NOW) == ("stopped", "stopped cleanly: signal SIGTERM")


def test_reported_degraded_keeps_the_instances_reason() -> None:
    record = StatusRecord.model_validate(real_record("normalizer-enricher", state="degraded",
                                                     reason="broker unreachable: 1/1 brokers are down"))
    assert judge_instance(record, NOW) == ("degraded", "broker unreachable: 1/1 brokers are down")


def test_heartbeat_far_in_the_future_is_flagged_as_clock_skew() -> None:
    record = StatusRecord.model_validate(real_record("normalizer-enricher", heartbeat_at=NOW + 600))
    state, reason = judge_instance(record, NOW)
    assert state == "degraded" and "clock skew" in reason


# --- pipeline verdict ---------------------------------------------------------------------------
def test_everything_reporting_ok_gives_an_ok_verdict_without_reasons() -> None:
    assert verdict(both_ok()) == ("ok", [])


def test_killed_writer_degrades_the_pipeline_with_the_seconds_of_silence() -> None:
    comps = components(real_record("normalizer-enricher"), real_record("parquet-writer", heartbeat_at=NOW - 95))
    assert verdict(comps) == ("degraded", ["parquet-writer no heartbeat for 95 s"])


def test_two_instances_are_named_by_key_when_one_is_down() -> None:
    comps = components(real_record("normalizer-enricher", "n-0"), real_record("normalizer-enricher", "n-1",
                                                                              heartbeat_at=NOW - 200),
                       real_record("parquet-writer"))
    assert verdict(comps) == ("degraded", ["normalizer-enricher/n-1 no heartbeat for 3 min"])


def test_long_dead_instance_replaced_by_a_live_one_is_information_only() -> None:
    comps = components(real_record("normalizer-enricher", "old", heartbeat_at=NOW - 7300),
                       real_record("normalizer-enricher", "new"), real_record("parquet-writer"))
    result = pipeline_verdict(comps, KAFKA_OK, CHANNEL, NO_LAG, [])
    assert result.state == "ok"
    assert [r.text for r in result.reasons] == [
        "normalizer-enricher/old no heartbeat for 2 h (replaced by a live instance)"]


def test_stopped_writer_with_no_replacement_degrades() -> None:
    comps = components(real_record("normalizer-enricher"), real_record("parquet-writer", state="stopped"))
    assert verdict(comps) == ("degraded", ["parquet-writer stopped"])


def test_missing_component_degrades_once_the_status_topic_is_loaded() -> None:
    comps = components(real_record("normalizer-enricher"))
    assert verdict(comps) == ("degraded", ["no parquet-writer has reported on zeek-pipeline-status"])
    loading = CHANNEL.model_copy(update={"loaded": False})
    assert verdict(comps, channel=loading)[0] == "ok"


def test_missing_component_is_only_information_while_the_status_topic_is_unreadable() -> None:
    comps = components(real_record("normalizer-enricher"))
    unreadable = CHANNEL.model_copy(update={"reachable": False, "error": "Local: Broker transport failure"})
    result = pipeline_verdict(comps, KAFKA_OK, unreadable, NO_LAG, [])
    assert [(r.severity, r.text) for r in result.reasons] == [
        ("degraded", "status topic zeek-pipeline-status unreadable: Local: Broker transport failure"),
        ("info", "reading zeek-pipeline-status: no parquet-writer seen yet")]


def test_nothing_running_is_down() -> None:
    comps = components(real_record("normalizer-enricher", heartbeat_at=NOW - 500),
                       real_record("parquet-writer", state="stopped"))
    state, reasons = verdict(comps)
    assert state == "down"
    assert "no component is running" in reasons


def test_unreachable_kafka_is_down_and_named_first() -> None:
    kafka = KAFKA_OK.model_copy(update={"reachable": False, "error": "Kafka unreachable: Local: Timed out"})
    state, reasons = verdict(both_ok(), kafka=kafka)
    assert state == "down"
    assert reasons[0] == "Kafka unreachable: Local: Timed out"


def test_kafka_not_checked_yet_does_not_change_the_verdict() -> None:
    kafka = KAFKA_OK.model_copy(update={"reachable": False, "checked_at": None})
    assert verdict(both_ok(), kafka=kafka) == ("ok", [])


def lag_growing(seconds: float) -> Lag:
    topic = LagTopic(topic="zeek-raw", lag=48_000, trend="growing", growing_for_seconds=seconds, error=None,
                     partitions=[])
    return Lag(reachable=True, checked_at=NOW, error=None, groups=[
        LagGroup(group="zeek-normalizer-enricher", role="normalizer-enricher", state="stable", members=1, error=None,
                 topics=[topic])])


def test_lag_growing_for_five_minutes_degrades() -> None:
    assert verdict(both_ok(), lag=lag_growing(299)) == ("ok", [])
    assert verdict(both_ok(), lag=lag_growing(300)) == (
        "degraded", ["lag on zeek-raw growing for 5 min (normalizer-enricher, 48000 behind)"])


def test_reject_rate_over_one_percent_in_the_window_degrades() -> None:
    low = Activity("normalizer-enricher", 600, consumed=10_000, rejected=99, errors=0)
    high = Activity("normalizer-enricher", 600, consumed=10_000, rejected=300, errors=0)
    few = Activity("normalizer-enricher", 600, consumed=50, rejected=50, errors=0)
    assert verdict(both_ok(), activity=[low]) == ("ok", [])
    assert verdict(both_ok(), activity=[few]) == ("ok", [])
    assert verdict(both_ok(), activity=[high]) == ("degraded", ["normalizer-enricher reject rate 3.0 % over 10 min"])


def test_errors_in_the_window_degrade_with_the_last_error() -> None:
    activity = Activity("parquet-writer", 240, consumed=1000, rejected=0, errors=2, last_error="disk full")
    assert verdict(both_ok(), activity=[activity]) == (
        "degraded", ["parquet-writer: 2 error(s) over 4 min (last: disk full)"])


def test_full_buffer_degrades() -> None:
    comps = components(real_record("normalizer-enricher"), real_record("parquet-writer", buffer_pct=97.0))
    assert verdict(comps) == ("degraded", ["parquet-writer buffer 97 % full"])


def test_unusable_status_records_are_information_not_degradation() -> None:
    problem = Problem(at=NOW, key="x/y", partition=0, offset=1, error="not JSON")
    result = pipeline_verdict(both_ok(), KAFKA_OK, CHANNEL.model_copy(update={"problems": [problem]}), NO_LAG, [])
    assert result.state == "ok"
    assert result.reasons[0].severity == "info"


# --- lag trend ----------------------------------------------------------------------------------
def test_trend_compares_with_the_oldest_sample_in_the_last_minute() -> None:
    assert trend([], NOW) == "unknown"
    assert trend([(NOW - 120, 50), (NOW - 50, 10), (NOW, 20)], NOW) == "growing"
    assert trend([(NOW - 50, 30), (NOW - 20, 40), (NOW, 20)], NOW) == "shrinking"
    assert trend([(NOW - 5, 7), (NOW, 7)], NOW) == "steady"


def test_saw_tooth_lag_of_a_healthy_consumer_is_not_growing() -> None:
    samples = [(NOW - 300 + 5 * i, (i % 4) * 1000) for i in range(61)]
    assert growing_for(samples) < 20


def test_stalled_consumer_lag_grows_from_the_last_dip_ignoring_plateaus() -> None:
    samples = [(NOW - 400, 900), (NOW - 360, 100), (NOW - 330, 100), (NOW - 300, 100)]
    samples += [(NOW - 300 + 30 * i, 100 + 500 * i) for i in range(1, 11)]
    assert growing_for(samples) == 300


# --- activity window ----------------------------------------------------------------------------
def test_activity_uses_totals_since_start_until_a_minute_of_history_exists() -> None:
    history = History()
    first = components(real_record("normalizer-enricher", totals={"consumed": 1000, "rejected": 30}))
    history.sample(NOW, first)
    [activity] = history.activity(NOW + 30, first)
    assert (activity.since_start, activity.consumed, activity.rejected) == (True, 1000, 30)


def test_activity_over_the_window_counts_deltas_and_survives_a_restart() -> None:
    history = History()
    before = components(real_record("normalizer-enricher", totals={"consumed": 5000, "rejected": 10, "errors": 1}),
                        now=NOW)
    history.sample(NOW, before)
    after = components(real_record("normalizer-enricher", heartbeat_at=NOW + 295,
                                   totals={"consumed": 6000, "rejected": 40, "errors": 1}), now=NOW + 300)
    [activity] = history.activity(NOW + 300, after)
    assert (activity.since_start, activity.window_seconds, activity.consumed, activity.rejected, activity.errors) == (
        False, 300, 1000, 30, 0)
    restarted = components(real_record("normalizer-enricher", heartbeat_at=NOW + 295,
                                       totals={"consumed": 200, "rejected": 2}), now=NOW + 300)
    [activity] = history.activity(NOW + 300, restarted)
    assert (activity.consumed, activity.rejected) == (200, 2)


def test_throughput_sums_live_source_in_and_sink_out_and_forgets_after_fifteen_minutes() -> None:
    history = History()
    comps = components(real_record("normalizer-enricher", "n-0", rates={"in_eps": 800.0, "out_eps": 790.0}),
                       real_record("normalizer-enricher", "n-1", rates={"in_eps": 200.0, "out_eps": 200.0}),
                       real_record("parquet-writer", rates={"in_eps": 900.0, "out_eps": 880.0}),
                       real_record("parquet-writer", "dead", heartbeat_at=NOW - 999,
                                   rates={"in_eps": 5.0, "out_eps": 5.0}))
    point = history.sample(NOW, comps)
    assert (point.in_eps, point.out_eps) == (1000.0, 880.0)
    history.sample(NOW + 901, comps)
    assert [p.at for p in history.throughput()] == [NOW + 901]
