"""zeek-pipeline: Zeek logs from Kafka to a typed, partitioned Parquet data lake."""

__version__ = "0.1.0"
