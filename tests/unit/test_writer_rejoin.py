"""The writer's rejoin after a commit conflict: recovery drops the partition's buffered records, so consumption
must go back to where they can be read again, also when the partition's commit log holds no data yet.

The consumer here is a stand-in that records seeks (the group protocol is exercised with real brokers by
tests/integration/test_writer_zombie.py); the writer service, its engine and storage are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, KafkaError, KafkaException, TopicPartition

from tests.unit.test_writer_recovery import CONVERTER, STREAM
from tests.unit.test_writer_support import CONFIG
from zeek_pipeline.settings import load_settings
from zeek_pipeline.writer.service import WriterService
from zeek_pipeline.writer.storage import open_storage


class StandInConsumer:
    """assignment/committed/seek as librdkafka answers them; `committed_offset=None` means the broker failed."""

    def __init__(self, topic: str, committed_offset: int | None) -> None:
        self.topic = topic
        self.committed_offset = committed_offset
        self.seeks: list[tuple[int, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in STREAM]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.committed_offset is None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))  # noqa: SLF001 - the code librdkafka uses
        return [TopicPartition(tp.topic, tp.partition, self.committed_offset) for tp in partitions]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))


def service_with_buffered_records(tmp_path: Path, consumer: StandInConsumer) -> WriterService:
    settings = load_settings(CONFIG / "config.json", environ={"ZEEK_PIPELINE_KAFKA__BROKERS": "127.0.0.1:9"})
    service = WriterService(settings, CONVERTER, open_storage(str(tmp_path / "lake"), settings.output.parquet.s3))
    consumer.topic = service.topic
    service.consumer = consumer  # type: ignore[assignment]
    for partition, records in STREAM.items():
        service.engine.recover(partition)
        for offset, value in enumerate(records[:5]):
            service.engine.add(partition, offset, value, 0.0)
    assert service.engine.buffers.count == 5 * len(STREAM)
    return service


@pytest.mark.parametrize(("committed", "expected"), [(OFFSET_INVALID, OFFSET_BEGINNING), (3, 3),
                                                     (None, OFFSET_BEGINNING)],
                         ids=["group-never-committed", "group-committed", "broker-unreachable"])
def test_a_rejoined_partition_without_data_in_its_log_goes_back_to_where_a_fresh_assignment_starts(
        tmp_path: Path, committed: int | None, expected: int) -> None:
    consumer = StandInConsumer("", committed)
    service = service_with_buffered_records(tmp_path, consumer)
    service._rejoin({0})  # noqa: SLF001 - the step under test
    assert consumer.seeks == [(0, expected)]  # before: no seek, so the dropped records were never read again
    assert not any(key[1] == 0 for key in service.engine.buffers.segments), "partition 0's buffers dropped"
    assert any(key[1] == 1 for key in service.engine.buffers.segments), "partition 1 untouched"
