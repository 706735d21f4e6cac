"""A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager) on 127.0.0.1, for tests.

The binaries are built once from the Go module proxy by `scripts/k8s-binaries.sh` and cached under
`~/.cache/zeek-pipeline/k8s-<version>/bin/` (kubectl and helm too), so only the first run on a machine pays
for the build. There is no node and no scheduler: pods stay Pending, but every controller of the
controller-manager (deployments, replicasets, garbage collector, namespaces, service accounts, ...) runs.

    with ControlPlane() as cp:
        subprocess.run([cp.bin_dir / "kubectl", "--kubeconfig", cp.kubeconfig, "get", "ns"])

Run as a script to keep one up by hand (Ctrl-C stops it):

    python -m tests.infra.kube --dir /tmp/kube
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.36.3")
CACHE_ROOT = Path(os.environ.get("ZEEK_PIPELINE_CACHE", Path.home() / ".cache" / "zeek-pipeline"))
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "k8s-binaries.sh"
BINARIES = (
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "etcd", "helm",
)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    """The binaries could not be built or a component did not start; the message points at its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir(version: str) -> Path:
    return CACHE_ROOT / f"k8s-{version}" / "bin"


def ensure_binaries(version: str = K8S_VERSION) -> Path:
    """Return the directory holding the cached binaries, building them with the script on first use."""
    bin_dir = _bin_dir(version)
    if (bin_dir / ".versions").exists() and all(os.access(bin_dir / b, os.X_OK) for b in BINARIES):
        return bin_dir
    env = dict(os.environ, K8S_VERSION=version)
    # stderr (build progress) goes straight to the terminal / CI log; stdout's last line is the bin dir.
    result = subprocess.run(["bash", str(SCRIPT)], stdout=subprocess.PIPE, text=True, env=env, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ControlPlaneError(f"{SCRIPT} failed with exit code {result.returncode}")
    built = Path(lines[-1])
    missing = [b for b in BINARIES if not os.access(built / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"{SCRIPT} did not produce {missing} in {built}")
    return built


# --------------------------------------------------------------------------------------------- certificates


@dataclass
class _Pki:
    """Paths of the PEM files a control plane needs; written by `_write_pki`."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    admin_cert: Path
    admin_key: Path
    kcm_cert: Path
    kcm_key: Path


def _write_pki(directory: Path, address: str = "127.0.0.1", service_cidr: str = SERVICE_CLUSTER_IP_RANGE) -> _Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    not_after = now + dt.timedelta(days=30)

    def write_key(path: Path, key: Any) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def name(common_name: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("zeek-pipeline-test-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None = None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    first_service_ip = next(ipaddress.ip_network(service_cidr).hosts())
    serving_key, serving_cert = leaf(
        name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in sorted({"127.0.0.1", address})),
            x509.IPAddress(first_service_ip),
        ],
    )
    admin_key, admin_cert = leaf(name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    # With --use-service-account-credentials=false every controller acts as this one user, which the
    # bootstrap RBAC role system:kube-controller-manager does not cover: it needs system:masters.
    kcm_key, kcm_cert = leaf(name("system:kube-controller-manager", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = _Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        kcm_cert=directory / "kube-controller-manager.crt",
        kcm_key=directory / "kube-controller-manager.key",
    )
    pem = serialization.Encoding.PEM
    pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    write_key(pki.ca_key, ca_key)
    pki.serving_cert.write_bytes(serving_cert.public_bytes(pem))
    write_key(pki.serving_key, serving_key)
    pki.admin_cert.write_bytes(admin_cert.public_bytes(pem))
    write_key(pki.admin_key, admin_key)
    pki.kcm_cert.write_bytes(kcm_cert.public_bytes(pem))
    write_key(pki.kcm_key, kcm_key)
    write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def _write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    """A kubeconfig with the credentials embedded (JSON is valid YAML for kubectl and client libraries)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "zeek-test", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "zeek-test", "context": {"cluster": "zeek-test", "user": user}}],
        "current-context": "zeek-test",
        "preferences": {},
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


# ------------------------------------------------------------------------------------------------ processes


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed if the test process dies hard


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float) -> None:
        try:
            if self.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            # SIGKILL the whole group in any case: a child that forked helpers leaves none behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        finally:
            self.log.close()


def spawn(name: str, args: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> _Proc:
    """Start `args` in its own process group (killpg reaches all it starts), output appended to `log_path`.

    The child is killed if the process that started it dies hard (PR_SET_PDEATHSIG).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    log.write(f"$ {' '.join(args)}\n".encode())
    log.flush()
    popen = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    return _Proc(name, popen, log, log_path)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports; use as a context manager.

    Attributes once started: `kubeconfig` (admin, O=system:masters), `server` (https URL), `bin_dir`
    (kube-apiserver, kube-controller-manager, kubectl, etcd, helm), `workdir` (certs, data, logs).
    """

    workdir: Path | None = None
    version: str = K8S_VERSION
    start_timeout: float = 120.0
    stop_timeout: float = 15.0
    extra_apiserver_args: list[str] = field(default_factory=list)
    extra_controller_manager_args: list[str] = field(default_factory=list)
    # Where the API server listens and what it advertises. Loopback serves a control plane without nodes;
    # a node cluster (tests/infra/cluster) passes its bridge address, which pods reach through the
    # `kubernetes` Service.
    address: str = "127.0.0.1"
    service_cidr: str = SERVICE_CLUSTER_IP_RANGE
    # Told (name, pid) of every process it starts, e.g. to record them for a restore from another process.
    on_spawn: Callable[[str, int], None] | None = None

    def __post_init__(self) -> None:
        self._owns_workdir = self.workdir is None
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="zeek-kube-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin_dir: Path = _bin_dir(self.version)
        self.kubeconfig: Path = self.workdir / "admin.kubeconfig"
        self.server: str = ""
        self.ca_cert: Path = self.workdir / "pki" / "ca.crt"
        self.etcd_url: str = ""
        self.started_in: float = 0.0  # seconds from start() to a usable cluster
        self._procs: list[_Proc] = []
        self._atexit_registered = False

    # -- public API ---------------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        """The log file of a component: 'etcd', 'kube-apiserver' or 'kube-controller-manager'."""
        assert self.workdir is not None
        return self.workdir / "logs" / f"{name}.log"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        assert self.workdir is not None
        began = time.monotonic()
        self.bin_dir = ensure_binaries(self.version)
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        (self.workdir / "logs").mkdir(exist_ok=True)
        try:
            pki = _write_pki(self.workdir / "pki", self.address, self.service_cidr)
            self.pki = pki
            self.ca_cert = pki.ca_cert
            self._start_etcd()
            self._start_apiserver(pki)
            self._start_controller_manager(pki)
            self._wait_for_default_serviceaccount()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every component (newest first: SIGTERM to its process group, then SIGKILL); idempotent."""
        while self._procs:
            self._procs.pop().stop(self.stop_timeout)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def cleanup(self) -> None:
        """Stop and remove the workdir if this object created it."""
        self.stop()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.bin_dir, self.kubeconfig, *args, input=input, timeout=timeout)

    def get(self, path: str) -> tuple[int, str]:
        """GET an API path as the admin user; returns (status, body)."""
        return self._request(path)

    # -- components ---------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        assert self.workdir is not None
        proc = spawn(name, args, self.log_path(name), self.workdir)
        self._procs.append(proc)
        if self.on_spawn is not None:
            self.on_spawn(name, proc.popen.pid)
        return proc

    def _fail(self, proc: _Proc, what: str) -> ControlPlaneError:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(proc.log_path.read_text(errors="replace").splitlines()[-30:])
        state = f"exited with {proc.popen.returncode}" if not proc.alive() else "still running"
        return ControlPlaneError(f"{proc.name} {what} ({state}); log {proc.log_path}:\n{tail}")

    def _wait(self, proc: _Proc, what: str, check: Any, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            if not proc.alive():
                raise self._fail(proc, f"died before {what}")
            with contextlib.suppress(OSError, http.client.HTTPException, ssl.SSLError, ValueError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise self._fail(proc, f"not {what} after {timeout or self.start_timeout:.0f}s")
            time.sleep(0.2)

    def _start_etcd(self) -> None:
        assert self.workdir is not None
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        data = self.workdir / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)  # every start is a fresh cluster (new PKI, new ports)
        proc = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=zeek-test",
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=zeek-test=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", client, timeout=2)
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                return response.status == 200 and json.loads(response.read()).get("health") == "true"
            finally:
                conn.close()

        self._wait(proc, "healthy", healthy)

    def _start_apiserver(self, pki: _Pki) -> None:
        port = free_port()
        self.server = f"https://{self.address}:{port}"
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir}/apiserver-certs",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--allow-privileged=true",
                # the "kubernetes" Service's endpoints would point at 127.0.0.1, which the API refuses
                f"--endpoint-reconciler-type={'none' if self.address == '127.0.0.1' else 'lease'}",
                # kubectl logs / exec / port-forward: the API server reaches kubelets with the admin identity
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )
        _write_kubeconfig(self.kubeconfig, self.server, pki.ca_cert, pki.admin_cert, pki.admin_key, "admin")
        self._client_ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._client_ssl.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        self._port = port

        def ready() -> bool:
            status, body = self._request("/readyz")
            return status == 200 and body.strip() == "ok"

        self._wait(proc, "ready (/readyz)", ready)

    def _start_controller_manager(self, pki: _Pki) -> None:
        assert self.workdir is not None
        kubeconfig = self.workdir / "kube-controller-manager.kubeconfig"
        _write_kubeconfig(
            kubeconfig, self.server, pki.ca_cert, pki.kcm_cert, pki.kcm_key, "system:kube-controller-manager"
        )
        port = free_port()
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir}/kcm-certs",
                "--controllers=*",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--v=1",
                *self.extra_controller_manager_args,
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its serving cert is self-signed; /healthz needs no auth

        def healthy() -> bool:
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=insecure)
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                return response.status == 200 and response.read().strip() == b"ok"
            finally:
                conn.close()

        self._wait(proc, "healthy (/healthz)", healthy)

    def _wait_for_default_serviceaccount(self) -> None:
        # Created by the controller-manager's serviceaccount controller; pods can only be admitted after it.
        proc = next(p for p in self._procs if p.name == "kube-controller-manager")
        self._wait(
            proc,
            "creating the default ServiceAccount",
            lambda: self._request("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        )

    def _request(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPSConnection(self.address, self._port, timeout=5, context=self._client_ssl)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()


@dataclass
class ExistingCluster:
    """Same attributes as ControlPlane, for a cluster given by a kubeconfig (nothing is started or stopped)."""

    kubeconfig: Path
    bin_dir: Path
    server: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="zeek-kube-existing-")))
    started_in: float = 0.0

    @classmethod
    def from_env(cls) -> ExistingCluster:
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
        try:
            bin_dir = ensure_binaries()
        except ControlPlaneError:
            found = shutil.which("kubectl")
            if found is None:
                raise
            bin_dir = Path(found).parent
        cluster = cls(kubeconfig=kubeconfig, bin_dir=bin_dir)
        result = cluster.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
        cluster.server = result.stdout.strip()
        return cluster

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.bin_dir, self.kubeconfig, *args, input=input, timeout=timeout)

    def stop(self) -> None:
        pass

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_kubectl(
    bin_dir: Path, kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the cached kubectl against `kubeconfig`; never raises on a non-zero exit (check=False)."""
    return subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    with ControlPlane(workdir=args.dir) as cp:
        print(f"ready in {cp.started_in:.1f}s", file=sys.stderr)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
