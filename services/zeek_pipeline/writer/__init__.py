"""The parquet-writer service: zeek-normalized → typed, Hive-partitioned Parquet on disk or S3, exactly once."""
