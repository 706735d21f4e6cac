"""`zeek-pipeline <command>` as a real subprocess, for the integration tests.

Why one module: the normalizer-enricher's and the parquet-writer's test support (and the health tests) start a
service the same way (the installed console script, ZEEK_PIPELINE_* overrides on a clean environment, output to a
log file, a free probe port), read its probes the same way and stop it the same way (SIGTERM, then SIGKILL when it
hangs). Keeping that here keeps them alike; what differs per service (its command, probe-port variable, topics,
group, output) stays in its support module as a `ServiceDeployment` subclass.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tests.infra.kafka import free_port
from tests.infra.zeek_data import PROJECT_ROOT

ZEEK = PROJECT_ROOT / ".venv" / "bin" / "zeek-pipeline"
CONFIG = PROJECT_ROOT / "config"


def clean_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its ZEEK_PIPELINE_* variables (the shell running the tests must not
    configure the service under test), plus `overrides`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEEK_PIPELINE_")}
    env.update(overrides)
    return env


def launch(argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """`zeek-pipeline *argv` in the background, stdout and stderr written to `log` (truncated first)."""
    with log.open("wb") as out:
        return subprocess.Popen([str(ZEEK), *argv], env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def stop(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM, then SIGKILL if the process has not exited after `timeout` seconds. True when it exited by itself
    (or had already exited), False when it had to be killed."""
    if process.poll() is not None:
        return True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return False
    return True


@dataclass
class Service:
    """One started service process: its output log and its probe port (/status, /readyz)."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log.name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def terminate(self, timeout: float = 40.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def status(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as response:  # noqa: S310
            data: dict[str, object] = json.loads(response.read())
        return data

    def ready(self) -> tuple[int, str]:
        """/readyz: 200 when the instance has started, the broker answers and no fault pauses it (with or without
        partitions), else 503 with the reason."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as response:  # noqa: S310
                return response.status, response.read().decode().strip()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode().strip()

    def assigned(self) -> set[int]:
        with contextlib.suppress(OSError):
            return {int(ref["partition"]) for ref in self.status()["assigned"]}  # type: ignore[attr-defined]
        return set()

    def wait_assigned(self, count: int, timeout: float = 60.0) -> set[int]:
        deadline = time.monotonic() + timeout
        assigned: set[int] = set()
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.tail()
            assigned = self.assigned()
            if len(assigned) == count:
                return assigned
            time.sleep(0.3)
        raise AssertionError(f"{len(assigned)} partitions assigned, wanted {count}\n{self.tail()}")


class ServiceDeployment:
    """Base of a test deployment of one Kafka service on the shared broker (`Pipeline`, `Lake`).

    A subclass is a dataclass with the attributes declared below, names its `command`, `port_variable` and
    `default_instance`, and returns its own settings (topics, group, output) from `service_env()`. Each `start()`
    launches one more instance, with its own log file and a free probe port."""

    command: ClassVar[str]  # the zeek-pipeline subcommand, e.g. "parquet-writer"
    port_variable: ClassVar[str]  # the setting that carries the probe port
    default_instance: ClassVar[str]
    bootstrap: str
    workdir: Path
    status: str  # the status topic
    services: list[Service]

    def service_env(self) -> dict[str, str]:
        """This deployment's own ZEEK_PIPELINE_* settings."""
        raise NotImplementedError

    def env(self, instance: str, **overrides: str) -> dict[str, str]:
        return clean_env({
            "ZEEK_PIPELINE_KAFKA__BROKERS": self.bootstrap,
            "ZEEK_PIPELINE_STATUS__TOPIC": self.status,
            "ZEEK_PIPELINE_STATUS__INTERVAL_SECONDS": "2",
            "ZEEK_PIPELINE_LOG__PATH": str(self.workdir / "log"),
            "ZEEK_PIPELINE_INSTANCE_ID": instance,
            self.port_variable: str(free_port()),
            **self.service_env(),
            **overrides,
        })

    def start(self, instance: str | None = None, **overrides: str) -> Service:
        instance = instance or self.default_instance
        env = self.env(instance, **overrides)
        log = self.workdir / f"{instance}.{len(self.services)}.out"
        process = launch([self.command, "--config", str(CONFIG)], env, log, cwd=self.workdir)
        service = Service(process, log, int(env[self.port_variable]))
        self.services.append(service)
        return service

    def stop_all(self) -> None:
        for service in self.services:
            service.kill()
