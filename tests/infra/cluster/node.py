"""The node half of the single-node cluster: containerd (with runc and the CNI bridge), kubelet, kube-proxy,
and the kube-scheduler that places pods on it.

containerd, runc and the CNI plugins are Debian's packages; kubelet, kube-proxy and kube-scheduler are built
with the control plane by scripts/k8s-binaries.sh. Every file they write is below the cluster's work
directory except what `host.HostState` records and restores. What this machine needs (measured):
- no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, so containerd's CRI must `restrict_oom_score_adj`
  and kubelet and kube-proxy must not ask for a negative score;
- cgroup v1: kubelet 1.36 refuses it unless `failCgroupV1: false`; the driver is cgroupfs;
- the node IP cannot be loopback: it is the bridge's address (host.NODE_IP);
- no registry: the sandbox (pause) image is built locally and imported.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra.cluster import host
from tests.infra.kube import ControlPlaneError, _Proc, _write_kubeconfig, free_port, spawn

NODE_NAME = "zeek-node"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
PAUSE_IMAGE = "localhost/zeek-pipeline-pause:3.10"


def containerd_config(root: Path, state: Path, socket_path: str, cni_conf: Path) -> str:
    """containerd 1.6's config (version 2): its own root, state and socket, so the host's stays untouched."""
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket_path}"
[ttrpc]
  address = "{state}/ttrpc.sock"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{cni_conf}"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{root}/opt"
"""


def cni_config(ipam_dir: Path) -> dict[str, object]:
    """One bridge (the node's), addresses from the pod range, no masquerade: pods reach only this machine."""
    return {
        "cniVersion": "1.0.0",
        "name": "zeek-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": host.BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": host.POD_CIDR, "gateway": host.NODE_IP, "rangeStart": "10.244.0.10"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(workdir: Path, ca: Path, socket_path: str, port: int, healthz_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": host.NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},  # only clients with a certificate of the cluster's CA get here
        "containerRuntimeEndpoint": f"unix://{socket_path}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{host.CGROUP_ROOT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "clusterDNS": [host.DNS_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(workdir / "resolv.conf"),
        "podLogsDir": str(workdir / "pod-logs"),
        "staticPodPath": "",
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        # images are imported, never pulled: nothing may garbage-collect them
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "maxPods": 110,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(kubeconfig: Path, metrics_port: int, healthz_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": host.POD_CIDR,
        "mode": "iptables",
        "oomScoreAdj": 0,
        # leave the host's conntrack table size and timeouts alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
    }


@dataclass
class Node:
    """containerd + kubelet + kube-proxy + kube-scheduler for a running control plane."""

    workdir: Path
    bin_dir: Path
    server: str
    ca_cert: Path
    client_cert: Path
    client_key: Path
    state_dir: Path = Path("/run/zeek-containerd")
    # containerd's root (image content, snapshots, metadata): kept in the cache so that imported images
    # survive the cluster; containers of an earlier cluster found there are dead and kubelet removes them
    root_dir: Path | None = None
    on_spawn: Callable[[str, int], None] | None = None
    _procs: list[_Proc] = field(default_factory=list)

    @property
    def containerd_socket(self) -> str:
        return str(self.state_dir / "containerd.sock")

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def start(self, timeout: float = 180.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.workdir / "node.kubeconfig"
        _write_kubeconfig(kubeconfig, self.server, self.ca_cert, self.client_cert, self.client_key, "admin")
        self._start_containerd()
        self._start("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--v=1",
        ])
        kubelet_dir = self.workdir / "kubelet"
        kubelet_dir.mkdir(exist_ok=True)
        (self.workdir / "pod-logs").mkdir(exist_ok=True)
        # Pods that use the node's resolver (dnsPolicy Default) get none: nothing resolves outside the cluster.
        (self.workdir / "resolv.conf").write_text("# the zeek-pipeline test node has no upstream resolver\n")
        config = self.workdir / "kubelet.json"
        config.write_text(json.dumps(kubelet_config(
            self.workdir, self.ca_cert, self.containerd_socket, free_port(), free_port()), indent=1))
        self._start("kubelet", [
            str(self.bin_dir / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={kubelet_dir}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={host.NODE_IP}",
            "--v=1",
        ])
        proxy_config = self.workdir / "kube-proxy.json"
        proxy_config.write_text(json.dumps(kube_proxy_config(kubeconfig, free_port(), free_port()), indent=1))
        self._start("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={proxy_config}", "--v=1"])

    def _start_containerd(self) -> None:
        if shutil.which("containerd") is None:
            raise ControlPlaneError("containerd is missing: make system-deps")
        cni_conf = self.workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-zeek.conflist").write_text(json.dumps(cni_config(self.workdir / "cni" / "ipam"), indent=1))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "containerd.toml"
        config.write_text(
            containerd_config(self.root_dir or self.workdir / "containerd", self.state_dir, self.containerd_socket,
                              cni_conf))
        proc = self._start("containerd", ["containerd", f"--config={config}", "--log-level=info"])
        deadline = time.monotonic() + 60
        while not self._socket_answers():
            if not proc.alive() or time.monotonic() > deadline:
                raise ControlPlaneError(f"containerd did not start; log {proc.log_path}")
            time.sleep(0.2)

    def _socket_answers(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(self.containerd_socket)
            except OSError:
                return False
        return True

    def _start(self, name: str, args: list[str]) -> _Proc:
        env = dict(os.environ, PATH=f"/usr/sbin:/usr/bin:/sbin:/bin:{os.environ.get('PATH', '')}")
        proc = spawn(name, args, self.log_path(name), self.workdir, env=env)
        self._procs.append(proc)
        if self.on_spawn is not None:
            self.on_spawn(name, proc.popen.pid)
        return proc

    def alive(self) -> dict[str, bool]:
        return {p.name: p.alive() for p in self._procs}

    def restart_containerd(self) -> None:
        """Stop containerd (its shims and containers go on running) and start it again: a node fault."""
        for proc in list(self._procs):
            if proc.name == "containerd":
                proc.stop(timeout=10)
                self._procs.remove(proc)
        self._start_containerd()

    def stop(self) -> None:
        """Stop kube-proxy, kubelet, the scheduler and containerd (newest first); containers go with host.restore."""
        while self._procs:
            self._procs.pop().stop(15)

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """containerd's own client against this node's socket, in the namespace of Kubernetes' images."""
        return subprocess.run(["ctr", "--address", self.containerd_socket, "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
