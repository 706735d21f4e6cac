"""Where rows land: Hive folders by UTC event hour, deterministic file names, late events in their own hour."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.unit.test_writer_support import CONFIG, documents
from zeek_pipeline.writer.convert import Converter
from zeek_pipeline.writer.layout import (
    event_hours,
    file_name,
    hour_dir,
    is_valid_log_type,
    kafka_file_id,
    relative_path,
    split_by_hour,
)

US = pa.timestamp("us", tz="UTC")
MS = pa.timestamp("ms", tz="UTC")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


def hour_of(moment: dt.datetime) -> int:
    return int(moment.timestamp()) // 3600


INGEST = utc(2024, 4, 19, 9, 30)


def table(event_times: list[dt.datetime | None], ingest: dt.datetime = INGEST) -> pa.Table:
    return pa.table({
        "event_time": pa.array(event_times, US),
        "ingest_time": pa.array([ingest] * len(event_times), MS),
        "_kafka_offset": pa.array(range(len(event_times)), pa.int64()),
    })


def test_hour_dir_is_the_hive_path_of_the_utc_hour() -> None:
    assert hour_dir(hour_of(utc(2018, 3, 24, 17, 59, 59))) == "year=2018/month=03/day=24/hour=17"
    assert hour_dir(0) == "year=1970/month=01/day=01/hour=00"


def test_file_name_carries_topic_partition_and_offset_range_and_sorts_by_offset() -> None:
    name = file_name("events", "dns", kafka_file_id("zeek-normalized", 3, 120, 4567))
    assert name == "events_dns_zeek-normalized_p3-o000000000120-000000004567.parquet"
    assert name != file_name("events", "dns", kafka_file_id("other-pipeline", 3, 120, 4567))
    later = file_name("events", "dns", kafka_file_id("zeek-normalized", 3, 4568, 9000))
    assert sorted([later, name]) == [name, later]
    assert relative_path("dns", hour_of(utc(2018, 3, 24, 17)), name) == (
        "dns/year=2018/month=03/day=24/hour=17/" + name)


def test_a_late_event_goes_to_its_own_hour_and_rows_keep_offset_order() -> None:
    rows = table([utc(2018, 3, 24, 17, 1), utc(2018, 3, 24, 17, 2), utc(2018, 3, 24, 15, 59),
                  utc(2018, 3, 24, 17, 3), utc(2018, 3, 25, 0, 0)])
    parts = split_by_hour(rows)
    assert [hour_dir(h) for h, _ in parts] == [
        "year=2018/month=03/day=24/hour=15", "year=2018/month=03/day=24/hour=17",
        "year=2018/month=03/day=25/hour=00"]
    assert [t.column("_kafka_offset").to_pylist() for _, t in parts] == [[2], [0, 1, 3], [4]]


def test_rows_without_event_time_use_their_ingest_hour() -> None:
    rows = table([None, utc(2018, 3, 24, 17, 1)], ingest=utc(2024, 4, 19, 9, 30))
    assert event_hours(rows).to_pylist() == [hour_of(utc(2024, 4, 19, 9)), hour_of(utc(2018, 3, 24, 17))]


def test_event_time_outside_the_calendar_falls_back_to_ingest_hour() -> None:
    rows = pa.table({"event_time": pa.array([-5_000_000, 400_000_000_000_000_000], pa.int64()).cast(US),
                     "ingest_time": pa.array([utc(2024, 1, 1, 1)] * 2, MS)})
    assert set(event_hours(rows).to_pylist()) == {hour_of(utc(2024, 1, 1, 1))}


def test_rows_with_no_time_at_all_use_the_current_hour() -> None:
    rows = pa.table({"x": [1, 2]})
    now_ms = int(utc(2025, 6, 1, 12, 30).timestamp() * 1000)
    assert split_by_hour(rows, now_ms)[0][0] == hour_of(utc(2025, 6, 1, 12))


def test_single_hour_batches_are_not_copied() -> None:
    rows = table([utc(2018, 3, 24, 17, m) for m in range(10)])
    [(_, same)] = split_by_hour(rows)
    assert same is rows


@pytest.mark.parametrize("name", ["dns", "known_services", "smb-files", "X509"])
def test_accepts_zeek_log_type_names(name: str) -> None:
    assert is_valid_log_type(name)


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "dns.log", "x" * 101, "!unroutable"])
def test_rejects_log_types_that_are_not_safe_directory_names(name: str) -> None:
    assert not is_valid_log_type(name)


def test_hours_that_follow_each_other_are_slices_of_the_batch_not_copies() -> None:
    rows = table([utc(2018, 3, 24, 16, 58), utc(2018, 3, 24, 16, 59), utc(2018, 3, 24, 17, 0), utc(2018, 3, 24, 17, 1)])
    parts = split_by_hour(rows)
    assert [t.column("_kafka_offset").to_pylist() for _, t in parts] == [[0, 1], [2, 3]]
    shared = rows.column("_kafka_offset").chunk(0).buffers()[1]
    for _, part in parts:
        assert part.column("_kafka_offset").chunk(0).buffers()[1].address == shared.address


@pytest.mark.parametrize("order", ["offsets", "shuffled"])
def test_split_of_real_documents_equals_one_filter_per_hour(order: str) -> None:
    docs = list(documents("http", 5000))  # the real http log spans five hours
    if order == "shuffled":  # late events everywhere: hours interleave
        random.Random(7).shuffle(docs)
    rows = Converter.from_config_dir(CONFIG).convert("http", docs, [0] * len(docs), list(range(len(docs)))).table
    hours = event_hours(rows)
    expected = [(hour, rows.filter(pc.equal(hours, hour))) for hour in sorted(set(hours.to_pylist()))]
    parts = split_by_hour(rows)
    assert len(expected) > 1
    assert [hour for hour, _ in parts] == [hour for hour, _ in expected]
    assert all(part.equals(want) for (_, part), (_, want) in zip(parts, expected, strict=True))
