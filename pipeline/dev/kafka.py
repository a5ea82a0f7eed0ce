"""A single-node Apache Kafka (KRaft) for development and tests, from Maven Central jars.

``up`` resolves the jars with Maven (``deploy/local/pom.xml``) into
``<home>/kafka/libs`` once, formats storage once, starts the broker on 127.0.0.1,
waits until it answers and creates the topics. ``down`` stops it; ``status`` says
what runs. All three are idempotent. With ``INFERWATCH_KAFKA`` pointing elsewhere,
``up`` only creates the topics there.

Secured (``dev up --secure``, ``dev.secure``): SASL_SSL with SCRAM-SHA-512 on the same
port, TLS from a private CA, the standard authorizer and one user per role, each with
its ACLs (:mod:`pipeline.dev.secure`); certificates, passwords (``users.json``) and each
user's settings (``<user>.env``) under ``<home>/kafka/secure/``, mode 0600. Its data lives
apart (``data-secure``): a cluster's SCRAM users are created when its storage is formatted.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from pipeline.config import KafkaSettings, Settings
from pipeline.runtime.kafka import ensure_topics, wait_for_broker

if TYPE_CHECKING:
    from pipeline.dev.secure import Acl

__all__ = ["LocalKafka", "Status"]

POM = Path(__file__).resolve().parents[2] / "deploy" / "local" / "pom.xml"


@dataclass(frozen=True)
class Status:
    running: bool
    pid: int | None
    bootstrap: str
    home: Path
    secure: bool = False  # SASL_SSL with ACLs; users and CA under home/secure

    def __str__(self) -> str:
        if self.running and self.secure:
            where = self.home / "secure"
            return (f"kafka running (pid {self.pid}) on {self.bootstrap} with SASL_SSL "
                    f"(SCRAM-SHA-512) and ACLs, data in {self.home}; CA {where / 'ca.pem'}, "
                    f"settings per user in {where}/<user>.env (admin, inferwatch, producer)")
        if self.running:
            return f"kafka running (pid {self.pid}) on {self.bootstrap}, data in {self.home}"
        return f"kafka not running (home {self.home})"


class LocalKafka:
    """The project's own broker under ``<home>/kafka``."""

    def __init__(self, settings: Settings, say: Callable[[str], object] = print, *,
                 secure: bool | None = None, plaintext_port: int | None = None) -> None:
        self.settings = settings
        self.dev = settings.dev
        self.secure = settings.dev.secure if secure is None else secure
        # secured only: an extra unauthenticated listener (benchmarks compare the two)
        self.plaintext_port = plaintext_port if self.secure else None
        self.root = settings.home_path / "kafka"
        self.libs = self.root / "libs" / self.dev.kafka_version
        self.data = self.root / ("data-secure" if self.secure else "data")
        self.logs = self.root / "logs"
        self.pid_file = self.root / "kafka.pid"
        self.mode_file = self.root / "kafka.mode"  # "secure" or "plaintext": what runs
        self.secure_dir = self.root / "secure"
        self.say = say
        self._log_marks: dict[Path, int] = {}  # log sizes before this start: older lines are old

    @classmethod
    def private(cls, home: Path, port: int, *, partitions: int | None = None,
                say: Callable[[str], object] = print, secure: bool = False,
                plaintext_port: int | None = None) -> LocalKafka:
        """A broker of its own (tests, benchmarks): its own home and ports on 127.0.0.1,
        sharing the jar cache of the project's default home so Maven runs once.
        ``secure``: SASL_SSL and ACLs (``plaintext_port``: plus a PLAINTEXT listener)."""
        from pipeline.config import load_settings

        env = {"INFERWATCH_HOME": str(home), "INFERWATCH_DEV__PORT": str(port),
               "INFERWATCH_DEV__CONTROLLER_PORT": str(port + 1),
               "INFERWATCH_KAFKA": f"127.0.0.1:{port}"}
        if partitions is not None:
            env["INFERWATCH_TOPICS__PARTITIONS"] = str(partitions)
        kafka = cls(load_settings(environ=env), say=say, secure=secure,
                    plaintext_port=plaintext_port)
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
        return Status(pid is not None, pid, self.bootstrap, self.root,
                      secure=pid is not None and self._running_mode() == "secure")

    def _running_mode(self) -> str:
        try:
            return self.mode_file.read_text().strip() or "plaintext"
        except OSError:
            return "plaintext"

    # ------------------------------------------------------------------ secured mode
    @property
    def cafile(self) -> Path:
        """The CA clients of the secured broker trust (``kafka.ssl_cafile``)."""
        return self.secure_dir / "ca.pem"

    @property
    def users_file(self) -> Path:
        return self.secure_dir / "users.json"

    def users(self) -> dict[str, str]:
        """The secured broker's users and passwords (created on first use, mode 0600)."""
        from pipeline.dev.secure import load_users

        if not self.users_file.exists() and (self.data / "meta.properties").exists():
            raise RuntimeError(f"{self.users_file} is missing but {self.data} was formatted "
                               "with its users: remove that directory to start afresh")
        return load_users(self.users_file)

    def client(self, user: str, password: str | None = None) -> KafkaSettings:
        """Kafka settings connecting to this secured broker as ``user`` (with its own
        password unless ``password`` is given)."""
        from pipeline.dev.secure import client_settings

        secret = self.users()[user] if password is None else password
        return client_settings(self.settings.kafka, self.bootstrap, user, secret, self.cafile)

    def _prepare_secure(self) -> None:
        """The CA, the broker's certificate, the users' passwords and env files (kept
        across restarts: the formatted storage holds the users' SCRAM credentials)."""
        from pipeline.dev.secure import env_file, write_private
        from pipeline.dev.tls import write_pki

        if not ((self.secure_dir / "broker.pem").exists() and self.cafile.exists()):
            write_pki(self.secure_dir)
        for user, password in self.users().items():
            write_private(self.secure_dir / f"{user}.env",
                          env_file(self.bootstrap, user, password, self.cafile))

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
        props: dict[str, str] = {
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
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        if not self.secure:
            path.write_text(text)
            return path
        from pipeline.dev.secure import ADMIN, broker_properties, write_private

        props.update(broker_properties(
            port=self.dev.port, controller_port=self.dev.controller_port, cafile=self.cafile,
            keystore=self.secure_dir / "broker.pem", admin_password=self.users()[ADMIN],
            plaintext_port=self.plaintext_port))
        path = self.secure_dir / "server.properties"  # holds the broker's own password
        write_private(path, "".join(f"{k}={v}\n" for k, v in props.items()))
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
        argfile = self.secure_dir / "format.args"
        if self.secure:  # SCRAM users: passwords in a 0600 file the JVM reads, not in argv
            from pipeline.dev.secure import scram_arguments, write_private

            write_private(argfile, "\n".join(scram_arguments(self.users())) + "\n")
            cmd.append(f"@{argfile}")
        try:
            result = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def up(self, timeout: float = 90.0) -> Status:
        """Start (or find) the broker and create the topics."""
        alive: Callable[[], bool] = lambda: self._pid() is not None  # noqa: E731
        wanted = "secure" if self.secure else "plaintext"
        if self.status().running:
            if self._running_mode() != wanted:
                raise RuntimeError(f"a {self._running_mode()} broker runs on {self.bootstrap}; "
                                   f"stop it first (inferwatch dev down) to start a {wanted} one")
            self.say(f"kafka already running on {self.bootstrap}")
        else:
            self._check_ports()
            self.fetch()
            self.root.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(parents=True, exist_ok=True)
            if self.secure:
                self._prepare_secure()
            config = self._config()
            self._format(config)
            self._log_marks = {p: _size(p) for p in (self.logs / "server.log",
                                                     self.logs / "server.out")}
            out = open(self.logs / "server.out", "ab")  # noqa: SIM115 - handed to the child
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            out.close()
            self.pid_file.write_text(str(proc.pid))
            self.mode_file.write_text(wanted)
            alive = lambda: proc.poll() is None  # noqa: E731 - our child: no exec race
            self.say(f"starting kafka (pid {proc.pid}) on {self.bootstrap} …")
        settings = with_bootstrap(self.settings, self.bootstrap)
        acls = []
        if self.secure:  # topics and ACLs as the super user
            from pipeline.dev.secure import ADMIN, role_acls

            settings = msgspec.structs.replace(settings, kafka=self.client(ADMIN))
            acls = role_acls(self.settings)
        try:
            asyncio.run(_ready(settings, timeout, alive, acls))
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self._why()}") from exc
        if self.secure:
            self.say(f"secured: SASL_SSL (SCRAM-SHA-512) with ACLs; passwords in "
                     f"{self.users_file}, settings per user in {self.secure_dir}/<user>.env")
        return self.status()

    def _check_ports(self) -> None:
        """Fail before starting when the broker's or controller's port is taken."""
        ports = [("broker", self.dev.port), ("controller", self.dev.controller_port)]
        if self.plaintext_port is not None:
            ports.append(("plaintext listener", self.plaintext_port))
        for role, port in ports:
            if _port_free(port):
                continue
            owner = _port_owner(port)
            raise RuntimeError(
                f"port {port} (the {role} port) is in use"
                f"{f' (by {owner})' if owner else ''}; stop that process or choose other "
                "ports with INFERWATCH_DEV__PORT / INFERWATCH_DEV__CONTROLLER_PORT"
            )

    def _why(self) -> str:
        """The broker's own account of a failed start: its ERROR and exception lines from
        server.log (and the console output), else the last lines, with where to look."""
        parts = []
        for path in (self.logs / "server.log", self.logs / "server.out"):
            lines = _relevant(path, self._log_marks.get(path, 0))
            if lines:
                parts.append(f"from {path}:\n" + "\n".join(lines))
        if not parts:
            parts.append(f"last lines of {self.logs / 'server.out'}:\n"
                         + _tail(self.logs / "server.out"))
        return "\n".join(parts)

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
        self.mode_file.unlink(missing_ok=True)
        return True


def with_bootstrap(settings: Settings, bootstrap: str) -> Settings:
    """``settings`` with Kafka pointed at ``bootstrap``."""
    return msgspec.structs.replace(
        settings, kafka=msgspec.structs.replace(settings.kafka, bootstrap_servers=bootstrap)
    )


async def _ready(settings: Settings, timeout: float, alive: Callable[[], bool],
                 acls: Sequence[Acl] = ()) -> None:
    """Wait for the broker, failing fast if its process dies; then create the topics and
    the ``acls`` (secured mode)."""
    waiting = asyncio.create_task(wait_for_broker(settings.kafka, timeout=timeout))
    while not waiting.done():
        if not alive():
            waiting.cancel()
            raise TimeoutError("the Kafka process exited during start-up")
        await asyncio.wait({waiting}, timeout=0.5)
    await waiting
    await ensure_topics(settings)
    if acls:
        from pipeline.dev.secure import create_acls

        await create_acls(settings.kafka, acls)


def _port_free(port: int) -> bool:
    """Whether the broker could bind 127.0.0.1:``port`` (as Java does, with SO_REUSEADDR,
    so sockets of a stopped broker in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_owner(port: int) -> str:
    """``pid N (command line)`` of the process listening on ``port``, from /proc (Linux),
    or '' when it cannot be told (another OS, or a process of another user)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if (len(fields) > 9 and fields[3] == "0A"  # LISTEN
                        and int(fields[1].rsplit(":", 1)[1], 16) == port):
                    inodes.add(fields[9])
    inodes.discard("0")
    if not inodes:
        return ""
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                        text = cmd.decode(errors="replace")
                        text = text if len(text) <= 120 else text[:117] + "..."
                        return f"pid {proc.name}: {text}" if text else f"pid {proc.name}"
    return "a process this user cannot inspect"


_RELEVANT = ("ERROR", "FATAL", "Exception", "Error:", "Caused by")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _relevant(path: Path, start: int = 0, lines: int = 15) -> list[str]:
    """The last ``lines`` lines of ``path`` from byte ``start`` that report an error (log4j
    ERROR/FATAL, exceptions and their causes), without the stack frames between them."""
    try:
        with path.open("rb") as f:
            f.seek(start if start <= _size(path) else 0)  # rolled over: read it all
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    found = [line for line in text.splitlines()
             if any(word in line for word in _RELEVANT) and not line.lstrip().startswith("at ")]
    return found[-lines:]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
