"""`zeek-pipeline operator`: run the kopf operator, with Lease leader election for several replicas.

    zeek-pipeline operator -n zeek                 # watch one namespace (the default in a pod: its own)
    zeek-pipeline operator -A                      # every namespace (needs the ClusterRole)
    zeek-pipeline operator --no-leader-election    # one instance, e.g. on a workstation

While a replica waits for the Lease it serves the liveness endpoint itself, so a standby is not restarted
by its liveness probe; once it leads, kopf serves it (with the probe results of handlers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from urllib.parse import urlsplit

log = logging.getLogger("zeek_operator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; glob patterns allowed; "
                            "default: $POD_NAMESPACE, else all namespaces)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--liveness", default=None, metavar="URL",
                        help="serve the liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True,
                        help="hold a Lease so that only one replica acts (default: on)")
    parser.add_argument("--lease-name", default="zeek-operator", help="Lease name (default: zeek-operator)")
    parser.add_argument("--lease-namespace", default=None,
                        help="Lease namespace (default: $POD_NAMESPACE, else the first --namespace, else default)")
    parser.add_argument("--lease-seconds", type=int, default=15,
                        help="a leader not renewing for this long is replaced (default: 15)")
    parser.add_argument("--identity", default=None, help="this replica's name in the Lease (default: pod-pid)")
    parser.add_argument("--log-format", choices=("json", "full", "plain"),
                        default="json" if not sys.stderr.isatty() else "full",
                        help="json (default when not a terminal) or text")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus /metrics (process and Python runtime) on this port, for a "
                             "ServiceMonitor; a standby serves it too, so `up` tells that every replica runs")


def _namespaces(args: argparse.Namespace) -> tuple[bool, list[str]]:
    if args.all_namespaces:
        return True, []
    if args.namespace:
        return False, list(args.namespace)
    if os.environ.get("POD_NAMESPACE"):
        return False, [os.environ["POD_NAMESPACE"]]
    return True, []


async def _standby_probe(url: str | None) -> object | None:
    """A bare liveness endpoint for the time kopf is not running (waiting for the Lease)."""
    if not url:
        return None
    from aiohttp import web

    parts = urlsplit(url)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(parts.path or "/", healthz)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "0.0.0.0", parts.port or 80, reuse_address=True).start()
    return runner


async def _main(args: argparse.Namespace) -> int:
    import signal

    import kopf

    import zeek_operator.handlers  # noqa: F401  (registers the handlers)
    from zeek_operator import leader
    from zeek_operator.kube import Kube, load_client

    clusterwide, namespaces = _namespaces(args)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    lost = asyncio.Event()
    elector = None
    keeper = None
    if args.leader_election:
        lease_ns = args.lease_namespace or os.environ.get("POD_NAMESPACE") or \
            next((ns for ns in namespaces if "*" not in ns), "default")
        elector = leader.LeaseElector(Kube(load_client()), lease_ns, args.lease_name, args.identity,
                                      args.lease_seconds)
        probe = await _standby_probe(args.liveness)
        try:
            acquired = await leader.acquire(elector, retry=max(1.0, args.lease_seconds / 5), stop=stop)
        finally:
            if probe is not None:
                await probe.cleanup()  # type: ignore[attr-defined]
        if not acquired:
            return 0
        keeper = asyncio.create_task(leader.keep(
            elector, retry=max(1.0, args.lease_seconds / 5), renew_deadline=args.lease_seconds * 2 / 3,
            stop=stop, lost=lost))
    # Signals now reach kopf through stop_flag (kopf only installs its own handlers in the main thread).
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
        loop.add_signal_handler(signum, stop.set)
    log.info("operator starting: %s", "all namespaces" if clusterwide else ", ".join(namespaces))
    try:
        await kopf.operator(clusterwide=clusterwide, namespaces=namespaces, standalone=True,
                            liveness_endpoint=args.liveness, stop_flag=stop)
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if elector is not None:
            await asyncio.to_thread(elector.release)
    return 1 if lost.is_set() else 0


def run(args: argparse.Namespace) -> int:
    import kopf

    log_format = {"json": kopf.LogFormat.JSON, "full": kopf.LogFormat.FULL, "plain": kopf.LogFormat.PLAIN}
    kopf.configure(verbose=args.verbose, log_format=log_format[args.log_format], log_prefix=args.log_format != "json")
    return asyncio.run(_main(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zeek-operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
