"""Zeek times in every accepted form -> exact µs/ms, and the cached UTC calendar parts."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from zeek_pipeline.core.timefmt import (
    MAX_US,
    MIN_US,
    time_parts,
    to_ms,
    to_us,
    us_to_epoch,
    us_to_iso,
)

US = 1521911720865716  # 2018-03-24T17:15:20.865716Z


@pytest.mark.parametrize(
    "value",
    [
        "2018-03-24T17:15:20.865716Z",
        "2018-03-24T17:15:20.865716",  # no zone: UTC
        "2018-03-24T18:15:20.865716+01:00",
        "2018-03-24T16:15:20.865716-0100",
        "2018-03-24T19:15:20.865716+02",
        "2018-03-24T17:15:20.865716789Z",  # nanoseconds truncate to µs
        "2018-03-24 17:15:20.865716Z",
        "2018-03-24t17:15:20,865716z",
        1521911720.865716,
        "1521911720.865716",
    ],
)
def test_parses_every_form_to_the_same_microsecond(value: object) -> None:
    assert to_us(value) == US


def test_iso_without_fraction_or_seconds() -> None:
    assert to_us("2018-03-24T17:15:20Z") == 1521911720_000000
    assert to_us("2018-03-24T17:15Z") == 1521911700_000000
    assert to_us("2018-03-24T17:15:20.8Z") == 1521911720_800000


def test_epoch_int_and_negative_epochs() -> None:
    assert to_us(1713484795) == 1713484795_000000
    assert to_us(-1.5) == -1_500000
    assert to_us("-1.5") == -1_500000
    assert to_ms(-1.5) == -1500


def test_ms_is_floored_not_rounded() -> None:
    assert to_ms("2018-03-24T17:15:20.865999Z") == 1521911720865
    assert to_ms(1517336154.078555) == 1517336154078


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, "", "x", "yesterday", "2018-02-30T00:00:00Z", "2018-13-01T00:00:00Z",
        "2018-03-24T24:00:00Z", "2018-03-24T17:60:00Z", "2018-03-24T17:15:20.Z", "2018-03-24T17:15:20.abcZ",
        "2018-03-24", "0000-01-01T00:00:00Z", "٢٠١٨-03-24T17:15:20Z", "2018-03-24T17:15:2١.865716Z",
        "2018-03-24T17:15:20.86571٣Z", "2018-03-24T17:15:20+25:00", "1_000", " 1", "1.", "1e5",
        float("nan"), float("inf"), 1e300, 10**20, [1.0], {"ts": 1.0},
    ],
)
def test_rejects_what_is_not_a_time(value: object) -> None:
    assert to_us(value) is None


def test_range_is_year_1_to_9999() -> None:
    assert to_us("0001-01-01T00:00:00Z") == MIN_US
    assert to_us("9999-12-31T23:59:59.999999Z") == MAX_US - 1


def test_round_trips_through_iso_and_epoch_float() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        us = rng.randrange(MIN_US, MAX_US)
        assert to_us(us_to_iso(us)) == us
        us = rng.randrange(-(2**32) * 10**6, 2**32 * 10**6)  # floats hold µs exactly up to 2^32 s
        assert to_us(us_to_epoch(us)) == us
        assert to_us(repr(us_to_epoch(us))) == us


def test_iso_matches_datetime() -> None:
    rng = random.Random(3)
    for _ in range(2_000):
        us = rng.randrange(0, 4102444800 * 10**6)
        moment = datetime.fromtimestamp(us // 10**6, UTC).replace(microsecond=us % 10**6)
        assert to_us(moment.isoformat()) == us
        assert us_to_iso(us) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_time_parts_are_utc_with_iso_weekday() -> None:
    assert time_parts(to_ms("2018-03-24T17:15:20Z")) == (2018, 3, 24, 17, 6)  # type: ignore[arg-type]
    assert time_parts(to_ms("2024-04-21T23:59:59.999Z")) == (2024, 4, 21, 23, 7)  # type: ignore[arg-type]
    assert time_parts(to_ms("2024-04-22T00:00:00Z")) == (2024, 4, 22, 0, 1)  # type: ignore[arg-type]
    assert time_parts(-1) == (1969, 12, 31, 23, 3)
