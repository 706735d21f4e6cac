"""A real Apache Iceberg REST catalog on 127.0.0.1: the project's own test server, started from Maven Central jars.

The server is `org.apache.iceberg.rest.RESTCatalogServer` from the `test-fixtures` jar of
`org.apache.iceberg:iceberg-open-api` (the code behind the `apache/iceberg-rest-fixture` image), in front of a
JdbcCatalog on a SQLite file in the work dir. `scripts/iceberg-rest/pom.xml` lists its runtime (that POM
declares none); the jars are fetched once with Maven into `~/.cache/zeek-pipeline/iceberg-rest-<version>/`, like
the Kafka broker's, and `scripts/iceberg-rest/LoopbackRESTCatalogServer.java` (compiled into the same cache)
binds it to 127.0.0.1, where the upstream main() listens on every interface.

The warehouse is a local directory, or an S3 bucket on the loopback S3 server (`s3_warehouse_properties`): the
server then writes metadata through Iceberg's S3FileIO with that endpoint, path-style access and static keys.

    python -m tests.infra.iceberg_rest fetch      # fill the cache (CI set-up, or ahead of a first test run)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from tests.infra.kafka import CACHE_ROOT, free_port
from tests.infra.s3 import _child_setup

if TYPE_CHECKING:  # pragma: no cover
    from tests.infra.s3 import S3Server

ICEBERG_REST_VERSION = os.environ.get("ZEEK_PIPELINE_ICEBERG_REST_VERSION", "1.11.0")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "iceberg-rest"
POM = SCRIPTS / "pom.xml"
LAUNCHER_SOURCE = SCRIPTS / "LoopbackRESTCatalogServer.java"
LAUNCHER_CLASS = "org.apache.iceberg.rest.LoopbackRESTCatalogServer"


class RestCatalogError(RuntimeError):
    """The REST catalog server could not be fetched or started; the message carries its log."""


def _launcher_dir(version: str) -> Path:
    """Where the compiled launcher lives; named by its source's hash so an edited launcher is recompiled."""
    digest = hashlib.sha256(LAUNCHER_SOURCE.read_bytes()).hexdigest()[:12]
    return CACHE_ROOT / f"iceberg-rest-{version}" / f"launcher-{digest}"


def ensure_jars(version: str = ICEBERG_REST_VERSION) -> tuple[Path, Path]:
    """The server's jars and the compiled launcher, fetched (Maven, the cache's own repository) and compiled once."""
    libs = CACHE_ROOT / f"iceberg-rest-{version}" / "libs"
    if not (libs / ".complete").exists():
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RestCatalogError("Maven (mvn) is needed to fetch the Iceberg REST catalog jars from Maven Central")
        staging = libs.with_name(f"libs.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-f", str(POM),
            f"-Dmaven.repo.local={CACHE_ROOT / 'm2'}",
            f"-Diceberg.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RestCatalogError(
                f"mvn could not fetch Iceberg {version}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        (staging / ".complete").write_text(version)
        _publish(staging, libs)
    launcher = _launcher_dir(version)
    if not (launcher / ".complete").exists():
        javac = shutil.which("javac")
        if javac is None:
            raise RestCatalogError("javac (a JDK) is needed to compile the REST catalog's loopback launcher")
        staging = launcher.with_name(f"{launcher.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [javac, "-d", str(staging), "-cp", f"{libs}/*", str(LAUNCHER_SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RestCatalogError(f"javac failed on {LAUNCHER_SOURCE}:\n{result.stdout}\n{result.stderr}")
        (staging / ".complete").write_text(version)
        _publish(staging, launcher)
    return libs, launcher


def _publish(staging: Path, target: Path) -> None:
    """Move a finished fetch into place; a second session that finished first has already put the same there."""
    if (target / ".complete").exists():
        shutil.rmtree(staging, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        if not (target / ".complete").exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def catalog_environment(properties: Mapping[str, str]) -> dict[str, str]:
    """Catalog properties as the server reads them: CATALOG_ + upper case, `-` as `__`, `.` as `_`."""
    return {"CATALOG_" + key.replace("-", "__").replace(".", "_").upper(): value for key, value in properties.items()}


def s3_warehouse_properties(s3: S3Server, bucket: str, prefix: str = "warehouse") -> dict[str, str]:
    """Server-side properties for a warehouse in `bucket` on the loopback S3 server (S3FileIO, static keys)."""
    return {
        "warehouse": f"s3://{bucket}/{prefix}",
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "s3.endpoint": s3.endpoint,
        "s3.path-style-access": "true",
        "s3.access-key-id": s3.access_key,
        "s3.secret-access-key": s3.secret_key,
        "client.region": s3.region,
    }


class IcebergRestCatalog:
    """One REST catalog server process; `uri` is what pyiceberg's `type=rest` catalog takes. Always stopped."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        warehouse: str | None = None,
        properties: Mapping[str, str] | None = None,
        version: str = ICEBERG_REST_VERSION,
        heap: str = "256m",
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="zeek-iceberg-rest-"))
        self.version = version
        self.heap = heap
        self.properties = {
            "warehouse": warehouse or (self.workdir / "warehouse").as_uri(),
            "uri": f"jdbc:sqlite:{self.workdir / 'catalog.db'}",
            **(properties or {}),
        }
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def warehouse(self) -> str:
        return self.properties["warehouse"]

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def tail_log(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self, timeout: float = 120.0) -> IcebergRestCatalog:
        began = time.monotonic()
        libs, launcher = ensure_jars(self.version)
        if self.warehouse.startswith("file:"):
            Path(self.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # a free port can be taken between choosing and binding it
            self._spawn(libs, launcher)
            try:
                self._wait_ready(began + timeout)
                break
            except RestCatalogError:
                self.stop()
                if attempt == 2 or "Address already in use" not in self.tail_log():
                    raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _spawn(self, libs: Path, launcher: Path) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # No stray catalog or AWS settings from the host: the server sees only this catalog's.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_", "AWS_"))}
        env.update(catalog_environment(self.properties))
        env["AWS_REGION"] = self.properties.get("client.region", "us-east-1")  # the SDK asks even with keys given
        java = shutil.which("java") or "java"
        command = [
            java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            f"-Djava.io.tmpdir={self.workdir}",  # sqlite-jdbc's native library, Hadoop's scratch files
            "-cp", f"{launcher}:{libs}/*", LAUNCHER_CLASS, str(self.port),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        _LIVE_SERVERS.add(self)

    def _wait_ready(self, deadline: float) -> None:
        """Ready means `GET /v1/config` answers 200, the first call every REST client makes."""
        last_error = ""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise RestCatalogError(f"REST catalog exited with {code}; log {self.log_path}:\n{self.tail_log()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/v1/config", timeout=2) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except (OSError, urllib.error.URLError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise RestCatalogError(f"REST catalog not ready ({last_error}); log {self.log_path}:\n{self.tail_log()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Jetty stops at shutdown), SIGKILL to the process group if it hangs."""
        process, self.process = self.process, None
        _LIVE_SERVERS.discard(self)
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> IcebergRestCatalog:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


_LIVE_SERVERS: set[IcebergRestCatalog] = set()


@atexit.register
def _stop_leftover_servers() -> None:
    """Never leave a server behind, even when a test session dies half-way."""
    for server in list(_LIVE_SERVERS):
        server.stop(timeout=5)


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the Iceberg REST catalog server's jars into the cache.")
    parser.add_argument("action", choices=["fetch"])
    parser.parse_args(argv)
    libs, launcher = ensure_jars()
    print(libs)
    print(launcher)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
