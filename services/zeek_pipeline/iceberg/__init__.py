"""Apache Iceberg tables as a lake output (issue 16): one table per log type, exactly-once commits.

`schema` derives a log type's Iceberg schema from its Parquet layout and conforms typed tables to it,
`catalog` opens the catalog of `output.iceberg` and its tables, `commit` appends with the Kafka offsets in
the snapshot summary. docs/iceberg.md has the set-up and the exactly-once argument.
"""

from zeek_pipeline.iceberg.catalog import ensure_table, open_catalog
from zeek_pipeline.iceberg.commit import CommitError, CommitResult, commit_exactly_once, committed_offsets
from zeek_pipeline.iceberg.schema import Conformed, IcebergSchemaError, conform, iceberg_schema

__all__ = [
    "CommitError",
    "CommitResult",
    "Conformed",
    "IcebergSchemaError",
    "commit_exactly_once",
    "committed_offsets",
    "conform",
    "ensure_table",
    "iceberg_schema",
    "open_catalog",
]
