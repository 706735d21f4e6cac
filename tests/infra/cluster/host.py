"""What a single-node cluster changes on this machine, recorded before it changes it and put back after.

kubelet, kube-proxy and containerd change the host: sysctls (vm.overcommit_memory, kernel.panic*,
ip_forward, bridge netfilter), iptables chains in every table, cgroups, network namespaces under
/run/netns, mounts (secret volumes, container root file systems) and /var/log/containers. `HostState`
writes what it found to a JSON file before anything starts, so that `restore()` can undo it even from
another process (`make cluster-down`) after the one that started the cluster died.

Nothing the pods send may leave the machine: the bridge has no route out (no masquerade), forwarding off
the bridge is dropped in the mangle table (before any filter rule kube-proxy inserts), the Service range is
routed onto the bridge so an unanswered ClusterIP never reaches the default gateway, and CoreDNS has no
upstream resolver.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BRIDGE = "zkbr0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
DNS_IP = "10.96.0.10"
CGROUP_ROOT = "zeek-node"  # every pod's cgroup lives below /sys/fs/cgroup/<controller>/zeek-node

# Everything kubelet and kube-proxy may set, plus what the cluster sets itself.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
# Directories the node's components create where they are missing (logs, CNI's result cache, netns).
HOST_PATHS = ("/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/netns")
GUARD_RULE = ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]


def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, input=input)


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name).write_text(value)


def _netns() -> set[str]:
    try:
        return {p.name for p in Path("/run/netns").iterdir()}
    except OSError:
        return set()


def _cgroup_controllers() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    return sorted(p for p in base.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())


@dataclass
class HostState:
    """The machine as it was before the cluster, and what the cluster has started; saved as JSON."""

    path: Path
    sysctls: dict[str, str | None] = field(default_factory=dict)
    iptables: dict[str, str] = field(default_factory=dict)  # "<iptables|ip6tables>:<table>" -> dump
    netns: list[str] = field(default_factory=list)
    absent_paths: list[str] = field(default_factory=list)  # of HOST_PATHS, those that did not exist
    pids: dict[str, int] = field(default_factory=dict)  # component -> PID of its process group leader
    mount_roots: list[str] = field(default_factory=list)  # directories whose mounts are ours
    containerd_socket: str = ""

    # -- persistence ---------------------------------------------------------------------------------------

    def save(self) -> None:
        data = asdict(self)
        data["path"] = str(self.path)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> HostState:
        data = json.loads(path.read_text())
        data["path"] = Path(data["path"])
        return cls(**data)

    # -- record, change -------------------------------------------------------------------------------------

    @classmethod
    def record(cls, path: Path, mount_roots: list[Path], containerd_socket: str) -> HostState:
        """Note what the cluster will change, before it changes anything."""
        state = cls(path=path)
        state.sysctls = {name: _read_sysctl(name) for name in SYSCTLS}
        for tool in ("iptables", "ip6tables"):
            for table in IPTABLES_TABLES:
                dump = run(f"{tool}-save", "-t", table, check=False)
                if dump.returncode == 0:
                    state.iptables[f"{tool}:{table}"] = dump.stdout
        state.netns = sorted(_netns())
        state.absent_paths = [p for p in HOST_PATHS if not Path(p).exists()]
        state.mount_roots = [str(p) for p in mount_roots]
        state.containerd_socket = containerd_socket
        state.save()
        return state

    def setup_network(self) -> None:
        """The node's bridge (its address is the node IP), forwarding for Services, and the guard."""
        if run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # An unanswered ClusterIP stays on the bridge instead of following the default route out.
        run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE)
        if not Path("/proc/sys/net/bridge").exists() and shutil.which("modprobe"):
            run("modprobe", "br_netfilter", check=False)
        _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
        _write_sysctl("net/ipv4/ip_forward", "1")
        # Before anything is forwarded: nothing from the bridge goes anywhere but back onto the bridge.
        if run("iptables", "-t", "mangle", "-C", *GUARD_RULE, check=False).returncode != 0:
            run("iptables", "-t", "mangle", "-I", *GUARD_RULE)
        for controller in _cgroup_controllers():
            (controller / CGROUP_ROOT).mkdir(exist_ok=True)

    def started(self, component: str, pid: int) -> None:
        self.pids[component] = pid
        self.save()

    # -- restore --------------------------------------------------------------------------------------------

    def restore(self) -> list[str]:
        """Stop what the cluster started and put the machine back; returns what it could not undo."""
        problems: list[str] = []
        self._kill_recorded()
        self._kill_containers()
        self._unmount()
        for name in sorted(_netns() - set(self.netns)):
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                run("umount", f"/run/netns/{name}", check=False)
                Path("/run/netns", name).unlink(missing_ok=True)
        if run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            run("ip", "link", "del", BRIDGE, check=False)
        run("ip", "route", "del", SERVICE_CIDR, check=False)
        for key, dump in self.iptables.items():
            tool, _table = key.split(":", 1)
            result = run(f"{tool}-restore", input=dump, check=False)
            if result.returncode != 0:
                problems.append(f"{tool}-restore {key}: {result.stderr.strip()}")
        for name, value in self.sysctls.items():
            if value is not None and _read_sysctl(name) != value:
                _write_sysctl(name, value)
                if _read_sysctl(name) != value:
                    problems.append(f"sysctl {name} stays {_read_sysctl(name)} (was {value})")
        problems += self._remove_cgroups()
        for path in self.absent_paths:
            shutil.rmtree(path, ignore_errors=True)
        self.pids.clear()
        self.save()
        return problems

    def _kill_recorded(self) -> None:
        """SIGTERM every recorded process group, newest first, then SIGKILL what is left."""
        for pid in reversed(list(self.pids.values())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in self.pids.values()):
            time.sleep(0.2)
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def _kill_containers(self) -> None:
        """Every container process sits in a pod cgroup below CGROUP_ROOT; shims carry our socket path."""
        for _ in range(20):
            pids = set(self._cgroup_pids()) | set(self._shim_pids())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)

    def _cgroup_pids(self) -> list[int]:
        pids: list[int] = []
        for controller in _cgroup_controllers():
            root = controller / CGROUP_ROOT
            if root.exists():
                for procs in root.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError, ValueError):
                        pids += [int(line) for line in procs.read_text().split()]
        return pids

    def _shim_pids(self) -> list[int]:
        if not self.containerd_socket:
            return []
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                    if b"containerd-shim" in cmdline[0] and self.containerd_socket.encode() in cmdline:
                        found.append(int(proc.name))
        return found

    def _unmount(self) -> None:
        roots = [r.rstrip("/") + "/" for r in self.mount_roots]
        for _ in range(3):
            mounts = []
            with contextlib.suppress(OSError):
                for line in Path("/proc/self/mounts").read_text().splitlines():
                    target = line.split()[1].encode().decode("unicode_escape")
                    if any(target.startswith(root) for root in roots):
                        mounts.append(target)
            if not mounts:
                return
            for target in sorted(mounts, key=len, reverse=True):
                run("umount", "-l", target, check=False)

    def _remove_cgroups(self) -> list[str]:
        problems = []
        for controller in _cgroup_controllers():
            root = controller / CGROUP_ROOT
            if not root.exists():
                continue
            for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                    reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            try:
                root.rmdir()
            except OSError as exc:
                problems.append(f"cgroup {root}: {exc}")
        return problems


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(OSError):
        if (Path("/proc") / str(pid) / "stat").read_text().split()[2] == "Z":
            return False
    return True
