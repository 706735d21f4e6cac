"""A real Apache Kafka 4.x broker (KRaft, combined broker+controller) on 127.0.0.1, for tests and `make demo`.

The jars come from Maven Central through `scripts/kafka/pom.xml` and are cached under
`~/.cache/zeek-pipeline/kafka-<version>/`, so only the first start on a machine pays for the download.
Run as a script to manage a long-lived broker for the demo:

    python -m tests.infra.kafka start --dir output/kafka   # prints the bootstrap address
    python -m tests.infra.kafka stop --dir output/kafka
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

KAFKA_VERSION = os.environ.get("ZEEK_PIPELINE_KAFKA_VERSION", "4.1.1")
CACHE_ROOT = Path(os.environ.get("ZEEK_PIPELINE_CACHE", Path.home() / ".cache" / "zeek-pipeline"))
POM = Path(__file__).resolve().parents[2] / "scripts" / "kafka" / "pom.xml"

LOG4J2_CONFIG = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="${sys:kafka.logs.dir}/server.log">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted or started; the message points at its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    """Fetch the broker's jars once with Maven (their own local repository under the cache) and reuse them."""
    libs = CACHE_ROOT / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka broker jars from Maven Central")
    staging = libs.with_name(f"libs.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-f", str(POM),
        f"-Dmaven.repo.local={CACHE_ROOT / 'm2'}",
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"mvn could not fetch Kafka {version}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    (staging / ".complete").write_text(version)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


class KafkaBroker:
    """One KRaft node (broker + controller) listening on 127.0.0.1; a context manager that always stops it."""

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "768m",
        sasl_users: dict[str, str] | None = None,
    ) -> None:
        self.version = version
        # With sasl_users the broker also authorizes (StandardAuthorizer): PLAINTEXT clients (the fixtures, the
        # broker itself) are User:ANONYMOUS, a super user; SASL/PLAIN clients on `sasl_bootstrap` get only what
        # ACLs grant them.
        self.sasl_users = dict(sasl_users or {})
        self.sasl_port = free_port() if sasl_users else None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="zeek-kafka-"))
        env_port = os.environ.get("KAFKA_PORT")
        self.port = port or (int(env_port) if env_port else free_port())
        self.controller_port = free_port()
        self.heap = heap
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        assert self.sasl_port is not None, "started without sasl_users"
        return f"127.0.0.1:{self.sasl_port}"

    def _authorization_lines(self) -> list[str]:
        """The SASL/PLAIN listener and the KRaft authorizer, when `sasl_users` asked for them."""
        if not self.sasl_users:
            return []
        users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:ANONYMOUS",
        ]

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / "server.log"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "logs" / "stdout.log"

    def tail_log(self, lines: int = 60) -> str:
        """The end of the broker's logs, for a failing test to print."""
        chunks = []
        for path in (self.stdout_path, self.log_path):
            if path.exists():
                chunks.append(f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(chunks)

    def _write_config(self) -> Path:
        data_dir = self.workdir / "data"
        config = self.workdir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={data_dir}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "message.max.bytes=8388608",
                    "log.flush.interval.messages=9223372036854775807",
                    *self._authorization_lines(),  # later lines win: the listeners are redefined
                    "",
                ]
            )
        )
        (self.workdir / "log4j2.xml").write_text(LOG4J2_CONFIG)
        return config

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Xshare:auto",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.xml'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def format_storage(self, libs: Path, config: Path) -> None:
        if (self.workdir / "data" / "meta.properties").exists():
            return
        cluster_id = uuid.uuid4().hex[:22]
        result = subprocess.run(
            self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                       "--standalone", "--ignore-formatted"),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            # Kafka versions without --standalone accept the plain voters form.
            result = subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                           "--ignore-formatted"),
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise BrokerError(f"kafka storage format failed:\n{result.stdout}\n{result.stderr}")

    def start(self, timeout: float = 120.0) -> KafkaBroker:
        began = time.monotonic()
        libs = ensure_jars(self.version)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self.format_storage(libs, config)
        stdout = self.stdout_path.open("ab")
        self.process = subprocess.Popen(
            self._java(libs, "kafka.Kafka", str(config)),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stdout.close()
        _LIVE_BROKERS.add(self)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def wait_ready(self, timeout: float) -> None:
        """Ready means the broker answers a metadata request and lists itself."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        last_error = ""  # text only: keeping the exception would keep the client alive through its traceback
        admin = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(f"broker exited with {self.process.returncode}\n{self.tail_log()}")
            try:
                if admin is None:
                    # librdkafka logs every refused connection: wait for the port before creating a client.
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
                metadata = admin.list_topics(timeout=2)
                if metadata.brokers:
                    return
            except Exception as exc:  # noqa: BLE001 - the broker is still coming up
                last_error = str(exc)
            time.sleep(0.2)
        raise BrokerError(f"broker not ready after {timeout}s ({last_error})\n{self.tail_log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM for a clean shutdown, SIGKILL for the whole process group if it hangs."""
        process, self.process = self.process, None
        _LIVE_BROKERS.discard(self)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data dir stays so `start()` brings the same broker back."""
        process, self.process = self.process, None
        _LIVE_BROKERS.discard(self)
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


_LIVE_BROKERS: set[KafkaBroker] = set()


@atexit.register
def _stop_leftover_brokers() -> None:
    """Never leave a broker behind, even when a test session dies half-way."""
    for broker in list(_LIVE_BROKERS):
        broker.kill()


def _pid_file(directory: Path) -> Path:
    return directory / "broker.pid"


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Kafka broker for the demo.")
    parser.add_argument("action", choices=["start", "stop", "fetch"])
    parser.add_argument("--dir", type=Path, default=Path("output/kafka"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.action == "fetch":
        print(ensure_jars())
        return 0
    if args.action == "stop":
        pid_file = _pid_file(directory)
        if not pid_file.exists():
            return 0
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            for _ in range(150):
                os.kill(pid, 0)
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        return 0
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    broker = KafkaBroker(workdir=directory, port=args.port)
    broker.start()
    _LIVE_BROKERS.discard(broker)  # the demo stops it with `stop`, not at this script's exit
    assert broker.process is not None
    _pid_file(directory).write_text(f"{broker.process.pid} {broker.bootstrap}\n")
    print(f"kafka ready in {broker.startup_seconds:.1f}s", file=sys.stderr)
    print(broker.bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
