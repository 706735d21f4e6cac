"""A real S3-compatible server (SeaweedFS) on loopback, for integration tests.

Usage::

    from tests.infra.s3 import S3Server

    with S3Server() as s3:
        s3.create_bucket("logs")
        fs = s3.filesystem()          # pyarrow.fs.S3FileSystem
        ...

The `weed` binary is built once by ``scripts/s3-server.sh`` and cached under
``~/.cache/zeek-pipeline/`` (``ensure_s3_binary``). Set ``ZEEK_S3_WEED_BIN`` to
use a prebuilt binary instead.

The server is ``weed mini`` (master + volume + filer + S3 gateway + an admin
server in one process; WebDAV, admin UI, Iceberg and Lance listeners off,
telemetry off), bound to 127.0.0.1 on free ports, with a temporary data
directory and an identities file granting one access key Admin rights, so
requests are really SigV4-checked. ``weed mini`` was chosen over
``weed server -s3`` because the latter's filer hangs on SIGTERM (waits on its
metadata log buffer) and needs SIGKILL after a long wait, while mini drains in
about 3 s. It runs in its own process group; `stop()` sends SIGTERM then
SIGKILL to the group, an atexit hook stops servers that were not stopped, and
the kernel SIGKILLs the server if the Python process that started it dies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime as _dt
import functools
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.fs

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "s3-server.sh"

DEFAULT_REGION = "us-east-1"
_READY_PROBE_BUCKET = "zeek-s3-readiness-probe"


class S3ServerError(RuntimeError):
    """The S3 server could not be built, started or reached."""


# --------------------------------------------------------------------------- binary


@functools.lru_cache(maxsize=1)
def ensure_s3_binary() -> Path:
    """Return the path of the `weed` binary, building it once if needed.

    The first call may take several minutes (Go build); later calls (and later
    sessions with the same ~/.cache) return at once.
    """
    override = os.environ.get("ZEEK_S3_WEED_BIN")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise S3ServerError(f"ZEEK_S3_WEED_BIN={override} is not an executable file")
        return path
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise S3ServerError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}:\n{_tail(proc.stderr, 60)}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise S3ServerError(f"{BUILD_SCRIPT} printed no binary path")
    path = Path(lines[-1].strip())
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise S3ServerError(f"{BUILD_SCRIPT} printed {path}, which is not an executable file")
    return path


# --------------------------------------------------------------------------- helpers


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all held open until chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:  # resolved here, not in the forked child (no dlopen between fork and exec)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _child_setup() -> None:
    """Runs in the child between fork and exec: die with the parent.

    Popen(start_new_session=True) already gives the server its own process group;
    this also asks the kernel to SIGKILL it if the Python process (strictly: the
    thread that started it) dies without running stop() or atexit hooks.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


@dataclass(frozen=True)
class S3Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def sigv4_request(
    endpoint: str,
    access_key: str,
    secret_key: str,
    region: str,
    method: str,
    path: str,
    query: Mapping[str, str] | None = None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> S3Response:
    """One AWS SigV4-signed, path-style S3 request using only the stdlib."""
    parsed = urllib.parse.urlsplit(endpoint)
    host = parsed.netloc
    canonical_uri = urllib.parse.quote(path if path.startswith("/") else "/" + path, safe="/-_.~")
    query = dict(query or {})
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    now = _dt.datetime.now(_dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date_stamp = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
    signed_headers = ";".join(sorted(hdrs))
    canonical_headers = "".join(f"{k}:{str(hdrs[k]).strip()}\n" for k in sorted(hdrs))
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{date_stamp}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )

    def _hmac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = _hmac(("AWS4" + secret_key).encode(), date_stamp)
    k = _hmac(k, region)
    k = _hmac(k, "s3")
    k = _hmac(k, "aws4_request")
    signature = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
    url = canonical_uri + ("?" + canonical_query if canonical_query else "")
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=timeout)
    try:
        conn.request(method, url, body=body or None, headers=hdrs)
        resp = conn.getresponse()
        return S3Response(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------- server

_live_servers: set[S3Server] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        try:
            server.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


class S3Server:
    """SeaweedFS S3 gateway on 127.0.0.1 with real (SigV4) auth.

    ``base_dir``: where the data directory and log go. If None, a fresh temp
    directory is created and removed on stop (unless ``keep=True`` or the env
    var ZEEK_S3_KEEP=1). If given (e.g. pytest's ``tmp_path_factory``), only its
    ``data/`` subdirectory is removed on stop and the log is kept.
    """

    _PORT_NAMES = (
        "s3",
        "s3_grpc",
        "master",
        "master_grpc",
        "volume",
        "volume_grpc",
        "filer",
        "filer_grpc",
        "admin",
        "admin_grpc",
    )

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = DEFAULT_REGION,
        startup_timeout: float = 90.0,
        binary: Path | None = None,
        keep: bool | None = None,
    ) -> None:
        self.access_key = access_key or "zeek" + secrets.token_hex(6)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.region = region
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._owns_base = base_dir is None
        self._base_arg = Path(base_dir) if base_dir is not None else None
        self._keep = keep if keep is not None else os.environ.get("ZEEK_S3_KEEP") == "1"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None
        self.base_dir: Path | None = None
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self.ports: dict[str, int] = {}
        self.endpoint: str = ""
        self.startup_seconds: float | None = None

    # ---- lifecycle

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> S3Server:
        if self._proc is not None:
            raise S3ServerError("S3Server already started")
        binary = self._binary or ensure_s3_binary()
        if self._owns_base:
            self.base_dir = Path(tempfile.mkdtemp(prefix="zeek-s3-"))
        else:
            assert self._base_arg is not None
            self.base_dir = self._base_arg
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / "weed.log"
        try:
            for attempt in range(3):  # a port can be taken between choosing and binding it
                try:
                    self._start_once(binary, attempt)
                    return self
                except S3ServerError:
                    self._terminate()
                    if attempt == 2 or "address already in use" not in self._read_log().lower():
                        raise
            raise AssertionError("unreachable")
        except BaseException:  # also KeyboardInterrupt during the wait: leave no process behind
            self._terminate()
            self._cleanup_dirs(keep_log=True)  # the error message points at the log
            raise

    def _start_once(self, binary: Path, attempt: int) -> None:
        assert self.base_dir is not None and self.log_path is not None
        self.data_dir = self.base_dir / "data"
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        for sub in ("volume", "master", "filer", "admin"):
            (self.data_dir / sub).mkdir(parents=True)
        self.ports = dict(zip(self._PORT_NAMES, _free_ports(len(self._PORT_NAMES)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

        config_path = self.data_dir / "s3-identities.json"
        config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "zeek-admin",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                },
                indent=2,
            )
        )
        config_path.chmod(0o600)
        # -config_dir is searched first, so these win over any host-wide
        # /etc/seaweedfs/*.toml: filer metadata in a leveldb inside the data dir,
        # and an empty security.toml (no JWT/TLS between the components).
        config_dir = self.data_dir / "config"
        config_dir.mkdir()
        (config_dir / "filer.toml").write_text('[leveldb2]\nenabled = true\ndir = "%s"\n' % (self.data_dir / "filer"))
        (config_dir / "security.toml").write_text("# intentionally empty\n")
        p = self.ports
        args = [
            str(binary),
            "-logtostderr=true",
            f"-config_dir={config_dir}",
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data_dir / 'volume'}",
            f"-master.dir={self.data_dir / 'master'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.data_dir / 's3.sock'}",
            f"-s3.config={config_path}",
            "-s3.allowDeleteBucketNotEmpty=true",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            "-admin.port.legacy=0",
            f"-admin.dataDir={self.data_dir / 'admin'}",
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "WEED_", "S3_"))  # no stray config from the host
        }
        env["HOME"] = str(self.data_dir)  # keep ~/.seaweedfs config lookups inside
        log_file = self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115
        log_file.write(f"=== attempt {attempt}: {' '.join(args)}\n".encode())
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            args,
            cwd=self.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        with _live_lock:
            _live_servers.add(self)
        self._wait_ready(t0)
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        """Ready = a signed ListBuckets answers 200 *and* an object can be written."""
        deadline = t0 + self.startup_timeout
        stage = "listening"
        last = ""
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise S3ServerError(
                    f"weed exited with code {self._proc.returncode} during startup "
                    f"(stage {stage}); log {self.log_path}:\n{_tail(self._read_log(), 40)}"
                )
            if time.monotonic() > deadline:
                raise S3ServerError(
                    f"S3 server not ready after {self.startup_timeout:.0f}s (stage {stage}, "
                    f"last: {last}); log {self.log_path}:\n{_tail(self._read_log(), 40)}"
                )
            try:
                if stage == "listening":
                    r = self.request("GET", "/", timeout=2)
                    last = f"ListBuckets -> {r.status}"
                    if r.status == 200:
                        stage = "writable"
                        continue
                else:
                    r = self.request("PUT", f"/{_READY_PROBE_BUCKET}", timeout=5)
                    last = f"CreateBucket -> {r.status} {r.body[:200]!r}"
                    if r.status in (200, 409):
                        r = self.request("PUT", f"/{_READY_PROBE_BUCKET}/probe", body=b"ok", timeout=10)
                        last = f"PutObject -> {r.status} {r.body[:200]!r}"
                        if r.status == 200:
                            self.request("DELETE", f"/{_READY_PROBE_BUCKET}/probe", timeout=10)
                            r = self.request("DELETE", f"/{_READY_PROBE_BUCKET}", timeout=10)
                            if r.status in (200, 204):
                                return
                            last = f"DeleteBucket -> {r.status} {r.body[:200]!r}"
            except OSError as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL to the process group) and clean up."""
        self._terminate(timeout)
        self._cleanup_dirs()

    def _terminate(self, timeout: float = 15.0) -> None:
        proc = self._proc
        if proc is not None:
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = None
            if pgid is not None and proc.poll() is None:
                try:
                    os.killpg(pgid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            if pgid is not None:
                try:  # kill stragglers in the group, and the leader if SIGTERM did not do
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            self._proc = None
            # weed puts per-port gRPC unix sockets in /tmp; remove ours if left behind.
            for name, port in self.ports.items():
                if name.endswith("_grpc"):
                    for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                        with contextlib.suppress(OSError):
                            sock.unlink()
        with _live_lock:
            _live_servers.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _cleanup_dirs(self, keep_log: bool = False) -> None:
        if self.base_dir is None or self._keep:
            return
        if self._owns_base and not keep_log:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        elif self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def tail_log(self, lines: int = 60) -> str:
        """The last lines of the server log (for failure reports)."""
        return _tail(self._read_log(), lines)

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    # ---- client helpers

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> S3Response:
        """A raw SigV4-signed path-style request, e.g. ``request("GET", "/bucket", query={"uploads": ""})``."""
        if not self.endpoint:
            raise S3ServerError("S3Server not started")
        return sigv4_request(
            self.endpoint,
            self.access_key,
            self.secret_key,
            self.region,
            method,
            path,
            query=query,
            body=body,
            headers=headers,
            timeout=timeout,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it already exists); returns the name."""
        r = self.request("PUT", f"/{name}")
        if r.status not in (200, 409) or (r.status == 409 and b"BucketAlreadyOwnedByYou" not in r.body):
            raise S3ServerError(f"CreateBucket {name!r} -> {r.status}: {r.body[:500]!r}")
        return name

    def filesystem(self, **overrides: object) -> pyarrow.fs.S3FileSystem:
        """A ``pyarrow.fs.S3FileSystem`` pointed at this server (paths are ``bucket/key``)."""
        from pyarrow import fs as pafs

        if not self.endpoint:
            raise S3ServerError("S3Server not started")
        kwargs: dict[str, object] = {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "scheme": "http",
            "endpoint_override": self.endpoint.removeprefix("http://"),
            "allow_bucket_creation": True,
            "allow_bucket_deletion": True,
            "connect_timeout": 5,
            "request_timeout": 30,
        }
        kwargs.update(overrides)
        return pafs.S3FileSystem(**kwargs)

    def storage_options(self) -> dict[str, str]:
        """Settings in the shape object-store style clients expect (e.g. for app config)."""
        return {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region": self.region,
        }

    def __repr__(self) -> str:
        return f"S3Server(endpoint={self.endpoint!r}, pid={self.pid}, log={self.log_path})"
