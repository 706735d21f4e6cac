"""A DuckDB connection that reads Iceberg tables with the extensions installed as Python packages, offline.

The `duckdb-extension-<name>` packages ship the signed `<name>.duckdb_extension` file under
`duckdb_extension_<name>/extensions/v<duckdb version>/`; it is `LOAD`ed from that path (no `INSTALL`, so
nothing is copied into ~/.duckdb). DuckDB's auto-install and auto-load of known extensions are off on the
connection: a package missing, or built for another DuckDB release, is an error here instead of a silent
download at run time. iceberg needs avro (its manifests are Avro files), which it does not load by itself
with auto-load off; httpfs is the HTTP client for S3 and for a REST catalog.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import duckdb

ICEBERG_EXTENSIONS = ("avro", "iceberg")
HTTP_EXTENSIONS = ("httpfs",)
OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


class ExtensionPackageError(RuntimeError):
    """The extension's package is not installed, or holds no build for this DuckDB release."""


def duckdb_release() -> str:
    """The DuckDB release tag extensions are built for, e.g. `v1.5.5`."""
    return f"v{duckdb.__version__}"


def extension_path(name: str) -> Path:
    """The `.duckdb_extension` file the `duckdb-extension-<name>` package ships for the installed DuckDB."""
    package = f"duckdb_extension_{name}"
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise ExtensionPackageError(f"package {package.replace('_', '-')} is not installed (pyproject's test "
                                    "extra)") from exc
    extensions = Path(str(root)) / "extensions"
    path = extensions / duckdb_release() / f"{name}.duckdb_extension"
    if not path.is_file():
        built = sorted(entry.name for entry in extensions.iterdir()) if extensions.is_dir() else []
        raise ExtensionPackageError(f"{package} has no build for DuckDB {duckdb_release()} (it has: "
                                    f"{', '.join(built) or 'none'}); pin duckdb to the package's release")
    return path


def load_extensions(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """LOAD each extension from its package, in order."""
    for name in names:
        con.execute(f"LOAD '{extension_path(name)}'")


def connect(*, httpfs: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with avro and iceberg loaded (and httpfs, for S3 or a REST catalog, when
    `httpfs`), auto-install and auto-load off."""
    con = duckdb.connect(config=dict(OFFLINE))
    load_extensions(con, ICEBERG_EXTENSIONS + (HTTP_EXTENSIONS if httpfs else ()))
    return con


def loaded_extensions(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}


def create_s3_secret(con: duckdb.DuckDBPyConnection, *, endpoint: str, region: str, access_key: str,
                     secret_key: str) -> None:
    """An S3 secret for a custom endpoint (`http://host:port`), addressed by path, with static keys."""
    scheme, _, host = endpoint.partition("://")
    con.execute(
        "CREATE OR REPLACE SECRET zeek_s3 (TYPE s3, PROVIDER config, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, "
        "URL_STYLE 'path', USE_SSL ?)",
        [access_key, secret_key, region, host, scheme == "https"])


def attach_rest_catalog(con: duckdb.DuckDBPyConnection, alias: str, uri: str) -> None:
    """Attach an Iceberg REST catalog without authorization (the test server's); its tables are
    `<alias>.<namespace>.<log type>`."""
    con.execute(f"ATTACH '' AS {alias} (TYPE iceberg, ENDPOINT '{uri}', AUTHORIZATION_TYPE 'none')")
