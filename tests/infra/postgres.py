"""A real PostgreSQL server on 127.0.0.1 for the Iceberg SQL catalog tests: Debian's postgresql package, no service.

`initdb` into a fresh directory under the system temp dir, `postgres` started directly (so its PID is the
postmaster's) on a free port with password authentication over TCP, and one database per test
(`create_database`). PostgreSQL refuses to run as root: as root, the cluster is owned by and run as the
`postgres` account the package creates; the only thing changed on the machine is that temp dir, removed by
`stop()`. `scripts/system-deps.sh` installs the package on a fresh machine.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.infra.kafka import free_port
from tests.infra.s3 import _child_setup

SUPERUSER = "zeek"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """PostgreSQL is missing, or could not be initialised or started; the message carries its log."""


def postgres_bin_dir() -> Path:
    """The newest installed server's bin dir (ZEEK_PIPELINE_PG_BIN overrides)."""
    override = os.environ.get("ZEEK_PIPELINE_PG_BIN")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True
    )
    if not candidates:
        raise PostgresError("no PostgreSQL server found under /usr/lib/postgresql: run `make system-deps`")
    return candidates[0].parent


class PostgresServer:
    """One postmaster on 127.0.0.1 with its own data dir; a context manager that always stops it."""

    def __init__(self, bin_dir: Path | None = None, run_as: str = "postgres") -> None:
        self.bin_dir = bin_dir or postgres_bin_dir()
        # Root may not run postgres; anyone else runs it as themselves.
        try:
            self.account = pwd.getpwnam(run_as) if os.geteuid() == 0 else None
        except KeyError:
            raise PostgresError(f"as root, postgres runs as {run_as!r}: no such account") from None
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "postgres.log"

    def tail_log(self, lines: int = 60) -> str:
        if self.workdir is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def uri(self, database: str) -> str:
        """SQLAlchemy URI (psycopg2 driver), the form pyiceberg's SQL catalog takes."""
        return f"postgresql+psycopg2://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _as_account(self) -> dict[str, Any]:
        """Popen keyword arguments that run a command as the server's account (nothing when not root)."""
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _run(self, *command: str) -> None:
        env = {**os.environ, "PGPASSWORD": self.password, "LC_ALL": "C.UTF-8"}
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, env=env, cwd=self.workdir, **self._as_account()
        )
        if result.returncode != 0:
            raise PostgresError(f"{command[0]} failed:\n{result.stdout}\n{result.stderr}\n{self.tail_log()}")

    def start(self, timeout: float = 60.0) -> PostgresServer:
        began = time.monotonic()
        # Under the system temp dir, not pytest's: that one is private to root, so `postgres` could not enter it.
        self.workdir = Path(tempfile.mkdtemp(prefix="zeek-postgres-"))
        _LIVE_SERVERS.add(self)
        try:
            if self.account is not None:
                os.chown(self.workdir, self.account.pw_uid, self.account.pw_gid)
            password_file = self.workdir / "password"
            password_file.write_text(self.password + "\n")
            if self.account is not None:
                os.chown(password_file, self.account.pw_uid, self.account.pw_gid)
            self._run(
                str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                f"--pwfile={password_file}", "--auth-host=scram-sha-256", "--auth-local=peer",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            )
            password_file.unlink()
            for attempt in range(3):  # a free port can be taken between choosing and binding it
                self._spawn()
                try:
                    self._wait_ready(began + timeout)
                    break
                except PostgresError:
                    self._terminate()
                    if attempt == 2 or "could not bind" not in self.tail_log():
                        raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _spawn(self) -> None:
        self.port = free_port()
        with self.log_path.open("ab") as log:
            if self.account is not None:
                os.fchown(log.fileno(), self.account.pw_uid, self.account.pw_gid)
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
                    "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                    "-c", f"unix_socket_directories={self.workdir}",
                    # A throwaway cluster: durability off, so tests don't wait on the shared disk.
                    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=100", "-c", "shared_buffers=32MB",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,
                **self._as_account(),
            )

    def _wait_ready(self, deadline: float) -> None:
        """Ready means pg_isready answers for the TCP listener the tests use."""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise PostgresError(f"postgres exited with {code}; log {self.log_path}:\n{self.tail_log()}")
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"postgres not ready; log {self.log_path}:\n{self.tail_log()}")

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URI."""
        if not _DATABASE_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self._run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.uri(name)

    def drop_database(self, name: str) -> None:
        """Drop a test's database, closing any connection a failed test left open."""
        self._run(
            str(self.bin_dir / "dropdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
            "--if-exists", "--force", name,
        )

    def _terminate(self, timeout: float = 20.0) -> None:
        """SIGINT is PostgreSQL's fast shutdown; SIGKILL to the process group if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        """Stop the server and remove its data dir."""
        self._terminate()
        _LIVE_SERVERS.discard(self)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_LIVE_SERVERS: set[PostgresServer] = set()


@atexit.register
def _stop_leftover_servers() -> None:
    """Never leave a postmaster or its data dir behind, even when a test session dies half-way."""
    for server in list(_LIVE_SERVERS):
        server.stop()
