"""A tiny HTTP server for Kubernetes probes and Prometheus: /healthz, /readyz, /metrics, /status.

Standard library only, in a daemon thread, so the Kafka loop never waits on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], tuple[bool, str]]


class ProbeServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Readiness,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    server._send(self, 200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ready, reason = readiness()
                    server._send(self, 200 if ready else 503, (reason or "ready").encode() + b"\n", "text/plain")
                elif path == "/metrics":
                    server._send(self, 200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/status":
                    server._send(self, 200, orjson.dumps(status(), default=str), "application/json")
                else:
                    server._send(self, 404, b"not found\n", "text/plain")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet probes
                return

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="probes", daemon=True)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
