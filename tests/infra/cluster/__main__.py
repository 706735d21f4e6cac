"""`make cluster` / `make cluster-down`: this machine's stand-in for `kind create cluster` / `kind delete cluster`.

    python -m tests.infra.cluster up [--workdir output/cluster] [--no-kafka]
        builds what is missing, starts the cluster in a background owner process and returns once it is
        ready; prints the kubeconfig, the project image it imported and the broker's addresses
    python -m tests.infra.cluster down
        stops the owner (which stops every component by PID and restores the host); after a crash,
        restores from the recorded host state
    python -m tests.infra.cluster serve --workdir DIR
        the owner itself, in the foreground (Ctrl-C stops and restores)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.infra.cluster.cluster import LOCK, STATE, Cluster, ClusterError, _owner_alive, recover_stale

DEFAULT_WORKDIR = Path("output/cluster")


def serve(workdir: Path, with_kafka: bool) -> int:
    ready = workdir / "ready"
    ready.unlink(missing_ok=True)
    cluster = Cluster(workdir=workdir, with_kafka=with_kafka)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        cluster.start()
        cluster.write_summary()
        ready.write_text("ok\n")
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    except ClusterError as exc:
        (workdir / "failed").write_text(str(exc))
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        problems = cluster.stop()
        for problem in problems:
            print(f"cluster: could not restore: {problem}", file=sys.stderr)
        ready.unlink(missing_ok=True)


def up(workdir: Path, with_kafka: bool, timeout: float) -> int:
    owner = _owner_alive()
    if owner is not None:
        print(f"cluster: already running (PID {owner}); kubeconfig {workdir / 'kubeconfig'}", file=sys.stderr)
        return 0 if (workdir / "ready").exists() else 1
    workdir.mkdir(parents=True, exist_ok=True)
    for marker in ("ready", "failed"):
        (workdir / marker).unlink(missing_ok=True)
    log = (workdir / "cluster.log").open("ab")
    args = [sys.executable, "-m", "tests.infra.cluster", "serve", "--workdir", str(workdir)]
    if not with_kafka:
        args.append("--no-kafka")
    owner_proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    print(f"cluster: starting (owner PID {owner_proc.pid}, log {workdir / 'cluster.log'}) ...", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while not (workdir / "ready").exists():
        if owner_proc.poll() is not None or (workdir / "failed").exists() or time.monotonic() > deadline:
            tail = (workdir / "cluster.log").read_text(errors="replace").splitlines()[-40:]
            print("\n".join(tail), file=sys.stderr)
            print("cluster: did not start", file=sys.stderr)
            if owner_proc.poll() is None:
                owner_proc.terminate()
            return 1
        time.sleep(1)
    summary = json.loads((workdir / "cluster.json").read_text())
    print(f"cluster: ready in {summary['started_in_s']}s")
    print(f"export KUBECONFIG={Path(summary['kubeconfig']).resolve()}")
    print(f"image: {summary['image']}")
    if summary.get("docker_host"):
        print(f"export DOCKER_HOST={summary['docker_host']}    # for skaffold (podman's API over buildah's images)")
    if summary["kafka"]:
        print(f"broker: {summary['kafka']['in_cluster']} (in the cluster), {summary['kafka']['host']} (this machine)")
    return 0


def down(timeout: float = 120) -> int:
    owner = _owner_alive()
    if owner is not None:
        os.kill(owner, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _owner_alive() == owner and time.monotonic() < deadline:
            time.sleep(0.5)
        if _owner_alive() == owner:
            with contextlib.suppress(ProcessLookupError):
                os.kill(owner, signal.SIGKILL)
            time.sleep(1)
    problems = recover_stale() if STATE.exists() else []
    LOCK.unlink(missing_ok=True)
    for problem in problems:
        print(f"cluster: could not restore: {problem}", file=sys.stderr)
    print("cluster: stopped" if not problems else "cluster: stopped, with the problems above")
    return 0 if not problems else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "serve"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
        cmd.add_argument("--no-kafka", action="store_true", help="no development broker")
        cmd.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the cluster (up)")
    sub.add_parser("down")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.workdir.resolve(), not args.no_kafka, args.timeout)
    if args.command == "serve":
        return serve(args.workdir.resolve(), not args.no_kafka)
    return down()


if __name__ == "__main__":
    sys.exit(main())
