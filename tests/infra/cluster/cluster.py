"""A real single-node Kubernetes cluster on this machine: what `make cluster` runs and the cluster tests use.

    control plane   etcd, kube-apiserver, kube-controller-manager (tests/infra/kube.py), on the node's
                    bridge address so that pods reach the API through the `kubernetes` Service
    node            containerd + runc + CNI bridge, kubelet, kube-proxy, kube-scheduler (node.py)
    add-ons         CoreDNS, the local-path provisioner as the default StorageClass, and the development
                    broker at redpanda.redpanda.svc.cluster.local:9092 / 127.0.0.1:19092 (deploy/local/)
    images          built with buildah (scripts/cluster-images.sh) and imported into containerd; no registry

Only one runs at a time on a machine (one bridge, one containerd state directory); a lock file holds the
PID of the process that owns it. Everything it changes on the host is recorded first and restored by
`stop()` (host.py), also from another process after a crash (`python -m tests.infra.cluster down`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.cluster import host
from tests.infra.cluster.node import NODE_NAME, Node
from tests.infra.kube import CACHE_ROOT, ControlPlane, ControlPlaneError, _Proc, ensure_binaries, run_kubectl, spawn

ROOT = Path(__file__).resolve().parents[3]
RUN_DIR = Path("/run/zeek-pipeline-cluster")
LOCK = RUN_DIR / "owner.pid"
STATE = RUN_DIR / "host-state.json"
IMAGES_SCRIPT = ROOT / "scripts" / "cluster-images.sh"
TOOLS_SCRIPT = ROOT / "scripts" / "go-tools.sh"
KAFKA_VERSION = "4.1.1"
IN_CLUSTER_BOOTSTRAP = "redpanda.redpanda.svc.cluster.local:9092"
HOST_BOOTSTRAP = "127.0.0.1:19092"
KUBE_CONTEXT = "zeek-local"
# A Docker-compatible API over the images buildah built (podman's API service): skaffold's local builder
# asks a Docker daemon about the image its custom build made; there is none on this machine.
DOCKER_SOCKET = RUN_DIR / "docker.sock"
BUILDAH_STORE = CACHE_ROOT / "buildah"
CONTAINERD_ROOT = CACHE_ROOT / "containerd"


class ClusterError(RuntimeError):
    """The cluster could not be built or started; the message says which part and where its log is."""


def _script(*args: str, timeout: float = 3600) -> str:
    """Run a project script; its progress goes to our stderr, its last stdout line is the answer."""
    result = subprocess.run(["bash", *args], stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ClusterError(f"{' '.join(args)} failed with exit code {result.returncode}")
    return lines[-1]


def build_tools() -> dict[str, Path]:
    """coredns and local-path, built once from the Go module proxy; returns tool -> binary."""
    result = subprocess.run(["bash", str(TOOLS_SCRIPT), "coredns", "local-path"], stdout=subprocess.PIPE,
                            text=True, timeout=3600, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{TOOLS_SCRIPT} failed with exit code {result.returncode}")
    return {tool: Path(path) for tool, path in (line.split(" ", 1) for line in result.stdout.splitlines())}


def build_images() -> dict[str, str]:
    """Every image the cluster runs (cached by buildah; the project's is rebuilt when its sources change)."""
    images = {name: _script(str(IMAGES_SCRIPT), "build", name) for name in ("base", "pause", "kafka", "project")}
    tools = build_tools()
    for tool, binary in tools.items():
        version = binary.parent.parent.name.rsplit("-", 1)[-1]
        images[tool] = _script(str(IMAGES_SCRIPT), "static", binary.name, str(binary), f"{tool}-{version}")
    return images


def rollout_failure(kubectl: Any, namespace: str, deployment: str, timeout: float) -> str | None:
    """`kubectl rollout status` of a Deployment; None when it rolled out, else what a person needs to see why
    not (the pods, the Deployment, the namespace's latest events)."""
    result = kubectl("-n", namespace, "rollout", "status", f"deployment/{deployment}", f"--timeout={int(timeout)}s",
                     timeout=timeout + 30)
    if result.returncode == 0:
        return None
    pods = kubectl("-n", namespace, "get", "pods", "-o", "wide").stdout
    describe = kubectl("-n", namespace, "describe", "deployment", deployment).stdout[-3000:]
    events = kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp").stdout[-4000:]
    return f"deployment {namespace}/{deployment} did not roll out: {result.stderr}\n{pods}\n{describe}\n{events}"


def _owner_alive() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(LOCK.read_text().strip())
        os.kill(pid, 0)
        return pid
    return None


def recover_stale() -> list[str]:
    """Undo what a cluster whose owner died left behind (processes, mounts, iptables, sysctls)."""
    if _owner_alive() is not None or not STATE.exists():
        return []
    problems = host.HostState.load(STATE).restore()
    STATE.unlink(missing_ok=True)
    LOCK.unlink(missing_ok=True)
    return problems


@dataclass
class Cluster:
    """Start with `start()`, stop with `stop()`; attributes: kubeconfig, bin_dir, images, node, control_plane."""

    workdir: Path
    with_kafka: bool = True
    images: dict[str, str] = field(default_factory=dict)
    started_in: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.kubeconfig = self.workdir / "kubeconfig"
        self.bin_dir = CACHE_ROOT
        self.control_plane: ControlPlane | None = None
        self.node: Node | None = None
        self.state: host.HostState | None = None
        self._image_api: _Proc | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> Cluster:
        began = time.monotonic()
        if os.geteuid() != 0:
            raise ClusterError("the single-node cluster needs root (network bridge, containerd, kubelet)")
        recover_stale()
        owner = _owner_alive()
        if owner is not None:
            raise ClusterError(f"a cluster is already running on this machine (PID {owner}): make cluster-down")
        self.bin_dir = ensure_binaries()
        self._timed("build", self._build)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        LOCK.write_text(str(os.getpid()))
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.state = host.HostState.record(
                STATE, [self.workdir, RUN_DIR, CONTAINERD_ROOT], str(RUN_DIR / "containerd" / "containerd.sock"))
            self.state.setup_network()
            self._timed("control plane", self._start_control_plane)
            self._timed("node", self._start_node)
            self._timed("images imported", self._import_images)
            self._timed("node ready", self._wait_node_ready)
            self._timed("add-ons", self._apply_addons)
            self._start_image_api()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self) -> list[str]:
        """Stop every process by PID and restore the host; returns what could not be restored."""
        problems: list[str] = []
        if self._image_api is not None:
            self._image_api.stop(10)
            self._image_api = None
        if self.node is not None:
            self.node.stop()
            self.node = None
        if self.control_plane is not None:
            self.control_plane.stop()
            self.control_plane = None
        if self.state is not None:
            problems = self.state.restore()
            STATE.unlink(missing_ok=True)
            self.state = None
        if _owner_alive() == os.getpid():
            LOCK.unlink(missing_ok=True)
        return problems

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steps ----------------------------------------------------------------------------------------------

    def _timed(self, name: str, step: Any) -> None:
        began = time.monotonic()
        step()
        self.timings[name] = round(time.monotonic() - began, 1)
        sys.stderr.write(f"[cluster] {name}: {self.timings[name]:.1f}s\n")

    def _build(self) -> None:
        self.images = build_images()

    def _start_control_plane(self) -> None:
        assert self.state is not None
        self.control_plane = ControlPlane(
            workdir=self.workdir / "control-plane",
            address=host.NODE_IP,
            service_cidr=host.SERVICE_CIDR,
            on_spawn=self.state.started,
            start_timeout=180,
        )
        self.control_plane.start()
        # the admin kubeconfig where the user (and `make cluster`) expects it, as context `zeek-local`
        # (skaffold's `local` profile turns on by itself there)
        config = json.loads(self.control_plane.kubeconfig.read_text())
        config["clusters"][0]["name"] = config["contexts"][0]["context"]["cluster"] = KUBE_CONTEXT
        config["contexts"][0]["name"] = config["current-context"] = KUBE_CONTEXT
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _start_node(self) -> None:
        assert self.control_plane is not None and self.state is not None
        pki = self.control_plane.pki
        self.node = Node(
            workdir=self.workdir / "node",
            bin_dir=self.bin_dir,
            server=self.control_plane.server,
            ca_cert=pki.ca_cert,
            client_cert=pki.admin_cert,
            client_key=pki.admin_key,
            state_dir=RUN_DIR / "containerd",
            root_dir=CONTAINERD_ROOT,
            on_spawn=self.state.started,
        )
        self.node.start()

    def _start_image_api(self) -> None:
        """podman's Docker-compatible API on DOCKER_SOCKET, over buildah's image store (for skaffold)."""
        if shutil.which("podman") is None:
            return
        assert self.state is not None
        log = self.workdir / "logs" / "image-api.log"
        proc = spawn("image-api", ["podman", "--root", str(BUILDAH_STORE / "root"), "--runroot",
                                   "/run/zeek-pipeline-buildah", "--storage-driver", "overlay", "system", "service",
                                   "--time=0", f"unix://{DOCKER_SOCKET}"], log, self.workdir)
        self._image_api = proc
        self.state.started("image-api", proc.popen.pid)

    def _import_images(self) -> None:
        """Import what containerd does not have yet; older builds of the project's image are removed."""
        assert self.node is not None
        present = set(self.node.ctr("images", "ls", "-q").stdout.split())
        for image in self.images.values():
            if image not in present:
                self.import_image(image)
        repository = self.images["project"].rsplit(":", 1)[0]
        stale = [i for i in present if i.startswith(f"{repository}:") and i not in self.images.values()]
        if stale:
            self.node.ctr("images", "rm", *stale)

    def import_image(self, image: str) -> None:
        assert self.node is not None
        _script(str(IMAGES_SCRIPT), "import", image, self.node.containerd_socket)

    def _wait_node_ready(self, timeout: float = 180) -> None:
        self.wait_for(
            lambda: self.kubectl("get", "node", NODE_NAME, "-o",
                                 "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout == "True",
            timeout, f"node {NODE_NAME} Ready", logs=("kubelet", "containerd"))

    def _apply_addons(self) -> None:
        substitutions = {
            "@COREDNS_IMAGE@": self.images["coredns"],
            "@DNS_IP@": host.DNS_IP,
            "@LOCAL_PATH_IMAGE@": self.images["local-path"],
            "@HELPER_IMAGE@": self.images["base"],
            "@LOCAL_PATH_DIR@": str(self.workdir / "volumes"),
            "@KAFKA_IMAGE@": self.images["kafka"],
        }
        manifests = ["coredns.yaml", "local-path.yaml"] + (["kafka.yaml"] if self.with_kafka else [])
        for name in manifests:
            text = (ROOT / "deploy" / "local" / name).read_text()
            for key, value in substitutions.items():
                text = text.replace(key, value)
            result = self.kubectl("apply", "--server-side", "-f", "-", input=text)
            if result.returncode != 0:
                raise ClusterError(f"applying deploy/local/{name}: {result.stderr}")
        waits = [("kube-system", "coredns"), ("local-path-storage", "local-path-provisioner")]
        if self.with_kafka:
            waits.append(("redpanda", "redpanda"))
        for namespace, name in waits:
            self.rollout(namespace, name, timeout=240)

    # -- helpers for tests and the CLI ----------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.bin_dir, self.kubeconfig, *args, input=input, timeout=timeout)

    def rollout(self, namespace: str, deployment: str, timeout: float = 240) -> None:
        failure = rollout_failure(self.kubectl, namespace, deployment, timeout)
        if failure:
            raise ClusterError(failure)

    def wait_for(self, check: Any, timeout: float, what: str, logs: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(1)
        tails = []
        for name in logs:
            path = self.workdir / "node" / "logs" / f"{name}.log"
            with contextlib.suppress(OSError):
                tails.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        raise ClusterError(f"{what}: not after {timeout:.0f}s\n" + "\n".join(tails))

    def summary(self) -> dict[str, Any]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": self.control_plane.server if self.control_plane else "",
            "image": self.images.get("project", ""),
            "images": self.images,
            "kafka": {"in_cluster": IN_CLUSTER_BOOTSTRAP, "host": HOST_BOOTSTRAP} if self.with_kafka else None,
            "started_in_s": round(self.started_in, 1),
            "timings_s": self.timings,
            "bin_dir": str(self.bin_dir),
            "docker_host": f"unix://{DOCKER_SOCKET}" if self._image_api is not None else None,
        }

    def write_summary(self) -> Path:
        path = self.workdir / "cluster.json"
        path.write_text(json.dumps(self.summary(), indent=1))
        return path


__all__ = ["Cluster", "ClusterError", "ControlPlaneError", "recover_stale", "build_images"]
