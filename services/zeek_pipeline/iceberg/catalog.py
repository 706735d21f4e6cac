"""The Iceberg catalog of `output.iceberg` and one table per log type in its namespace (created when missing).

The catalog is built from the settings alone, never from ~/.pyiceberg.yaml or PYICEBERG_* variables, so a
writer's tables are where its config.json says. Its name, `zeek`, is stored with each table in an SQL catalog:
another engine opening the same database must use that name too (docs/iceberg.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError, ValidationError
from pyiceberg.io import S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_REGION, S3_SECRET_ACCESS_KEY
from pyiceberg.table import Table, TableProperties
from sqlalchemy.engine import make_url

from zeek_pipeline.iceberg.schema import IcebergSchemaError, iceberg_schema, partition_spec, sort_order
from zeek_pipeline.settings import IcebergCatalog, IcebergOutput
from zeek_pipeline.writer.s3_conditional import endpoint_of

CATALOG_NAME = "zeek"
DEFAULT_SQLITE = Path("output/iceberg/catalog.db")
DEFAULT_WAREHOUSE = Path("output/iceberg/warehouse")
LOG_TYPE_PROPERTY = "zeek.log_type"
# commit.py retries a conflicting commit itself, re-reading the offsets the table holds first. pyiceberg's own
# retry would re-apply the same data files (and the offsets map of the failed attempt) on the newer snapshot:
# rows another writer committed meanwhile would be appended twice. It is therefore off on every table.
NO_PYICEBERG_RETRY = {TableProperties.COMMIT_NUM_RETRIES: "0"}
TABLE_PROPERTIES = {
    **NO_PYICEBERG_RETRY,
    "format-version": "2",
    TableProperties.PARQUET_COMPRESSION: "zstd",
}
_SCHEMA_RETRIES = 5


def _local_uri(path: str | Path) -> str:
    directory = Path(path).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return directory.as_uri()


def _sql_uri(settings: IcebergCatalog) -> str:
    if settings.uri is None:
        DEFAULT_SQLITE.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DEFAULT_SQLITE.resolve()}"
    if settings.password is None:
        return settings.uri
    url = make_url(settings.uri).set(password=settings.password.get_secret_value())
    return url.render_as_string(hide_password=False)


def _s3_properties(settings: IcebergCatalog, environ: Mapping[str, str] | None) -> dict[str, str]:
    where = endpoint_of(settings.s3, environ)
    properties = {S3_REGION: where.region}
    if where.netloc:
        properties[S3_ENDPOINT] = f"{where.scheme}://{where.netloc}"
    if settings.s3.access_key is not None and settings.s3.secret_key is not None:
        properties[S3_ACCESS_KEY_ID] = settings.s3.access_key.get_secret_value()
        properties[S3_SECRET_ACCESS_KEY] = settings.s3.secret_key.get_secret_value()
    return properties


def catalog_properties(settings: IcebergCatalog, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """pyiceberg's catalog properties for `output.iceberg.catalog` (local directories are created here)."""
    warehouse = settings.warehouse
    if warehouse is None and settings.type == "sql":
        warehouse = str(DEFAULT_WAREHOUSE)
    properties: dict[str, str] = {}
    if warehouse is not None and not warehouse.startswith("s3://"):
        warehouse = _local_uri(warehouse)
    if warehouse is None or warehouse.startswith("s3://") or settings.s3.endpoint is not None:
        properties.update(_s3_properties(settings, environ))  # a rest server's warehouse may be on S3 too
    if warehouse is not None:
        properties["warehouse"] = warehouse
    if settings.type == "sql":
        properties["uri"] = _sql_uri(settings)
        return properties
    if settings.uri is None:
        raise ValueError("output.iceberg.catalog.uri is required for a rest catalog")
    properties["uri"] = settings.uri
    if settings.credential is not None:
        properties["credential"] = settings.credential.get_secret_value()
    if settings.token is not None:
        properties["token"] = settings.token.get_secret_value()
    return properties


def open_catalog(settings: IcebergOutput, environ: Mapping[str, str] | None = None) -> Catalog:
    """The catalog named by the settings, with the namespace created if missing."""
    properties = catalog_properties(settings.catalog, environ)
    catalog: Catalog
    if settings.catalog.type == "sql":
        catalog = SqlCatalog(CATALOG_NAME, **properties)
    else:
        catalog = RestCatalog(CATALOG_NAME, **properties)
    catalog.create_namespace_if_not_exists(settings.namespace)
    return catalog


def _create(catalog: Catalog, identifier: tuple[str, str], arrow: pa.Schema) -> Table:
    schema = iceberg_schema(arrow)
    try:
        return catalog.create_table(identifier, schema=schema, partition_spec=partition_spec(schema),
                                    sort_order=sort_order(schema),
                                    properties={**TABLE_PROPERTIES, LOG_TYPE_PROPERTY: identifier[1]})
    except TableAlreadyExistsError:  # another writer created it first
        return catalog.load_table(identifier)


def _add_new_columns(table: Table, arrow: pa.Schema) -> Table:
    """Columns the log type's layout gained since the table was made become new fields (new ids, old ones kept)."""
    for _ in range(_SCHEMA_RETRIES):
        known = {field.name for field in table.schema().fields}
        if all(name in known for name in arrow.names):
            return table
        try:
            with table.update_schema() as update:
                update.union_by_name(iceberg_schema(arrow))
        except ValidationError as exc:
            raise IcebergSchemaError(f"{table.name()}: the log type's columns cannot be added to the table: "
                                     f"{exc}") from exc
        except CommitFailedException:
            pass
        table.refresh()
    raise IcebergSchemaError(f"{table.name()}: its schema kept changing under us ({_SCHEMA_RETRIES} tries)")


def _without_pyiceberg_retry(table: Table) -> Table:
    if all(table.properties.get(key) == value for key, value in NO_PYICEBERG_RETRY.items()):
        return table
    with table.transaction() as transaction:
        transaction.set_properties(NO_PYICEBERG_RETRY)
    table.refresh()
    return table


def ensure_table(catalog: Catalog, namespace: str, log_type: str, arrow: pa.Schema) -> Table:
    """The table of one log type: created from its Arrow layout (core.schema.arrow_schema) the first time; later
    loaded with its own field ids, and given the layout's new columns if any."""
    identifier = (namespace, log_type)
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        table = _create(catalog, identifier, arrow)
    return _without_pyiceberg_retry(_add_new_columns(table, arrow))
