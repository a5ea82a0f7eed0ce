"""A single-node Apache Kafka (KRaft) for development and tests, from Maven Central jars.

``up`` resolves the jars with Maven (``deploy/local/pom.xml``) into
``<home>/kafka/libs`` once, formats storage once, starts the broker on 127.0.0.1,
waits until it answers and creates the topics. ``down`` stops it; ``status`` says
what runs. All three are idempotent. With ``INFERWATCH_KAFKA`` pointing elsewhere,
``up`` only creates the topics there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from pipeline.config import Settings
from pipeline.kafka import ensure_topics, wait_for_broker

__all__ = ["LocalKafka", "Status"]

POM = Path(__file__).resolve().parents[1] / "deploy" / "local" / "pom.xml"


@dataclass(frozen=True)
class Status:
    running: bool
    pid: int | None
    bootstrap: str
    home: Path

    def __str__(self) -> str:
        if self.running:
            return f"kafka running (pid {self.pid}) on {self.bootstrap}, data in {self.home}"
        return f"kafka not running (home {self.home})"


class LocalKafka:
    """The project's own broker under ``<home>/kafka``."""

    def __init__(self, settings: Settings, say: Callable[[str], object] = print) -> None:
        self.settings = settings
        self.dev = settings.dev
        self.root = settings.home_path / "kafka"
        self.libs = self.root / "libs" / self.dev.kafka_version
        self.data = self.root / "data"
        self.logs = self.root / "logs"
        self.pid_file = self.root / "kafka.pid"
        self.say = say

    @classmethod
    def private(cls, home: Path, port: int, *, partitions: int | None = None,
                say: Callable[[str], object] = print) -> LocalKafka:
        """A broker of its own (tests, benchmarks): its own home and ports on 127.0.0.1,
        sharing the jar cache of the project's default home so Maven runs once."""
        from pipeline.config import load_settings

        env = {"INFERWATCH_HOME": str(home), "INFERWATCH_DEV__PORT": str(port),
               "INFERWATCH_DEV__CONTROLLER_PORT": str(port + 1),
               "INFERWATCH_KAFKA": f"127.0.0.1:{port}"}
        if partitions is not None:
            env["INFERWATCH_TOPICS__PARTITIONS"] = str(partitions)
        kafka = cls(load_settings(environ=env), say=say)
        kafka.libs = POM.parents[2] / ".inferwatch" / "kafka" / "libs" / kafka.dev.kafka_version
        return kafka

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.dev.port}"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"kafka.Kafka" not in cmdline.read_bytes():
            return None  # the pid was reused by something else
        return pid

    def status(self) -> Status:
        pid = self._pid()
        return Status(pid is not None, pid, self.bootstrap, self.root)

    def fetch(self) -> None:
        """Resolve the broker jars with Maven unless they are cached."""
        if self.libs.is_dir() and any(self.libs.glob("kafka_2.13-*.jar")):
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars; install it")
        if shutil.which("java") is None:
            raise RuntimeError("Java 17+ is needed to run the local Kafka broker; install it")
        self.say(f"fetching Apache Kafka {self.dev.kafka_version} jars from Maven Central …")
        tmp = self.libs.with_name(self.libs.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-Dkafka.version={self.dev.kafka_version}", f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"mvn failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        tmp.rename(self.libs)

    def _config(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.dev.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.dev.port},"
                         f"CONTROLLER://127.0.0.1:{self.dev.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.dev.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": str(self.settings.topics.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "24",
        }
        path = self.root / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.dev.heap}", f"-Xms{self.dev.heap}",
            f"-Dlog4j2.configurationFile={POM.parent / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.logs}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def _format(self, config: Path) -> None:
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # "=" form: a base64 id may start with "-", which argparse would take for an option
        cmd = self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                         "-c", str(config))
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def up(self, timeout: float = 90.0) -> Status:
        """Start (or find) the broker and create the topics."""
        alive: Callable[[], bool] = lambda: self._pid() is not None  # noqa: E731
        if self.status().running:
            self.say(f"kafka already running on {self.bootstrap}")
        else:
            for port in (self.dev.port, self.dev.controller_port):
                if _port_open(port):
                    raise RuntimeError(
                        f"127.0.0.1:{port} is already in use by another process; stop it or "
                        "set INFERWATCH_DEV__PORT / INFERWATCH_DEV__CONTROLLER_PORT"
                    )
            self.fetch()
            self.root.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(parents=True, exist_ok=True)
            config = self._config()
            self._format(config)
            out = open(self.logs / "server.out", "ab")  # noqa: SIM115 - handed to the child
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            out.close()
            self.pid_file.write_text(str(proc.pid))
            alive = lambda: proc.poll() is None  # noqa: E731 - our child: no exec race
            self.say(f"starting kafka (pid {proc.pid}) on {self.bootstrap} …")
        kafka = with_bootstrap(self.settings, self.bootstrap)
        try:
            asyncio.run(_ready(kafka, timeout, alive))
        except TimeoutError as exc:
            tail = _tail(self.logs / "server.out")
            raise RuntimeError(f"{exc}\nlast broker log lines:\n{tail}") from exc
        return self.status()

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker; True if one was running."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._pid() is not None:
            time.sleep(0.2)
        if self._pid() is not None:
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)
        return True


def with_bootstrap(settings: Settings, bootstrap: str) -> Settings:
    """``settings`` with Kafka pointed at ``bootstrap``."""
    return msgspec.structs.replace(
        settings, kafka=msgspec.structs.replace(settings.kafka, bootstrap_servers=bootstrap)
    )


async def _ready(settings: Settings, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait for the broker, failing fast if its process dies; then create the topics."""
    waiting = asyncio.create_task(wait_for_broker(settings.kafka, timeout=timeout))
    while not waiting.done():
        if not alive():
            waiting.cancel()
            raise TimeoutError("the Kafka process exited during start-up")
        await asyncio.wait({waiting}, timeout=0.5)
    await waiting
    await ensure_topics(settings)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
