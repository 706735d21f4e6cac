"""The offline twin of the service: three-layer JSON lines → the same Parquet layout, no Kafka.

Lineage: `_kafka_partition` is null and `_kafka_offset` holds the 1-based line number of the document
in the input. Files are named `<prefix>_<log_type>_l<first line>-<last line>-<digest>.parquet` (digest:
SHA-256 of the file's lines, 8 hex digits), so the same input written again replaces its own files and
different inputs never overwrite each other. Each file goes to a hidden temporary name (`.<name>.tmp`),
is synced and renamed into place (S3: copied), so a reader never sees a partial file. Memory is
bounded like the service's: per log type by `write.flush_event_count` (100000 when 0) and
`write.flush_buffer_mb`, overall by `write.max_memory_mb`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from zeek_pipeline.core.schema import OFFSET_COLUMN, PARTITION_COLUMN
from zeek_pipeline.settings import Settings
from zeek_pipeline.writer.buffers import MB, Buffers, FlushPolicy, Segment
from zeek_pipeline.writer.convert import INVALID_LOG_TYPE, UNROUTABLE, Converter, route
from zeek_pipeline.writer.layout import file_name, relative_path, split_by_hour
from zeek_pipeline.writer.parquet_file import ParquetOptions, file_metadata, write_table
from zeek_pipeline.writer.storage import Storage, as_storage_error

DEFAULT_ROWS_PER_FILE = 100_000

# (line number, the line, reason, detail)
RejectSink = Callable[[int, bytes, str, str], None]


@dataclass
class OfflineTotals:
    lines: int = 0
    rows: int = 0
    files: int = 0
    rejected: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)


class OfflineWriter:
    def __init__(self, settings: Settings, converter: Converter, storage: Storage, on_reject: RejectSink) -> None:
        write = settings.write
        rows = write.flush_event_count or DEFAULT_ROWS_PER_FILE
        self.policy = FlushPolicy(int(write.flush_buffer_mb * MB), 0.0, rows, int(write.max_memory_mb * MB))
        self.buffers = Buffers(self.policy)
        self.converter = converter
        self.storage = storage
        self.options = ParquetOptions.from_settings(settings.output.parquet)
        self.prefix = settings.output.parquet.file_prefix
        self.on_reject = on_reject
        self.totals = OfflineTotals()

    def write_lines(self, lines: Iterable[bytes]) -> OfflineTotals:
        for line_no, line in enumerate(lines, start=1):
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue
            self.totals.lines += 1
            log_type, _reason = route(value)
            segment = self.buffers.add(log_type, 0, line_no, value, 0.0)
            if self.policy.reason(segment, 0.0) is not None:
                self._flush(self.buffers.take(segment.key))
            while self.buffers.over_cap():
                largest = self.buffers.largest()
                if largest is None:
                    break
                self._flush(self.buffers.take(largest.key))
        for key in list(self.buffers.segments):
            self._flush(self.buffers.take(key))
        return self.totals

    def _reject(self, line_no: int, value: bytes, reason: str, detail: str) -> None:
        self.totals.rejected += 1
        self.on_reject(line_no, value, reason, detail)

    def _flush(self, segment: Segment) -> None:
        if segment.log_type == UNROUTABLE:
            for line_no, value in zip(segment.offsets, segment.values, strict=True):
                self._reject(line_no, value, route(value)[1] or INVALID_LOG_TYPE, "the line has no usable log_type")
            return
        converted = self.converter.convert(segment.log_type, segment.values, [0] * segment.count, segment.offsets)
        for item in converted.rejects:
            self._reject(segment.offsets[item.index], segment.values[item.index], item.reason, item.detail)
        table = converted.table
        if PARTITION_COLUMN in table.column_names:  # no Kafka partition offline
            index = table.column_names.index(PARTITION_COLUMN)
            column = table.schema.field(index)
            table = table.set_column(index, column, pa.nulls(table.num_rows, column.type))
        index_of = {line_no: i for i, line_no in enumerate(segment.offsets)}
        for hour, rows in split_by_hour(table):
            line_numbers = rows.column(OFFSET_COLUMN).to_pylist()
            digest = hashlib.sha256()
            for line_no in line_numbers:
                digest.update(segment.values[index_of[line_no]])
                digest.update(b"\n")
            file_id = f"l{line_numbers[0]:012d}-{line_numbers[-1]:012d}-{digest.hexdigest()[:8]}"
            name = file_name(self.prefix, segment.log_type, file_id)
            final = relative_path(segment.log_type, hour, name)
            staged = f"{final.rsplit('/', 1)[0]}/.{name}.tmp"
            metadata = file_metadata(segment.log_type, self.converter.schema_version)
            try:
                with self.storage.open_output(staged) as sink:
                    write_table(sink, rows, self.options, metadata)
            except (OSError, pa.ArrowException) as exc:
                self.storage.delete(staged)
                raise as_storage_error("write", staged, exc) from exc
            self.storage.sync(staged)
            self.storage.publish(staged, final)
            self.totals.rows += rows.num_rows
            self.totals.files += 1
            self.totals.bytes += self.storage.size(final)
            self.totals.paths.append(final)
