"""A RabbitMQ node and a PostgreSQL cluster of the fault tests' own, on free ports.

The machine's shared services are never stopped or restarted: the faults are injected
into these, which live in a temporary directory and are removed afterwards. Both run as
the service's own system user when the tests run as root (as in CI), else as the
current user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OwnPostgres", "OwnRabbit", "free_port", "missing_tools"]

_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def missing_tools() -> str | None:
    """What is absent to run the fault suite here, or None."""
    if not (_RABBIT_BIN / "rabbitmq-server").exists():
        return "rabbitmq-server (Debian package)"
    if _postgres_bin() is None:
        return "PostgreSQL server binaries (Debian package postgresql)"
    return None


def _as(user: str, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` as ``user`` when we are root (servers refuse to run as root)."""
    if os.geteuid() != 0:
        return list(argv)
    return ["runuser", "-u", user, "--", *argv]


def _own(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _wait(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:g} s")
        time.sleep(0.1)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class OwnRabbit:
    """A single RabbitMQ node: ``stop_app``/``start_app`` and a full restart."""

    directory: Path
    port: int
    node: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @classmethod
    @contextlib.contextmanager
    def running(cls, base: Path) -> Iterator[OwnRabbit]:
        directory = base / "rabbitmq"
        directory.mkdir()
        (directory / "enabled_plugins").write_text("[].\n")
        port = free_port()
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{port}\n"
            "disk_free_limit.absolute = 10MB\n"
            "log.console = false\n"
        )
        (directory / "rabbitmq-env.conf").write_text("")
        _own(directory, "rabbitmq")
        for child in directory.iterdir():
            _own(child, "rabbitmq")
        rabbit = cls(directory, port, f"faults-{uuid.uuid4().hex[:8]}@localhost")
        rabbit.start()
        try:
            yield rabbit
        finally:
            rabbit.stop()
            shutil.rmtree(directory, ignore_errors=True)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_CONFIG_FILE=str(self.directory / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(self.directory / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.directory / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.directory / "log"),
            RABBITMQ_PID_FILE=str(self.directory / "pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        if os.geteuid() == 0:
            env["HOME"] = pwd.getpwnam("rabbitmq").pw_dir  # its Erlang cookie
        return env

    def ctl(self, *args: str) -> None:
        subprocess.run(
            _as("rabbitmq", [str(_RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args]),
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        with (self.directory / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                _as("rabbitmq", [str(_RABBIT_BIN / "rabbitmq-server")]),
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        _wait("own RabbitMQ node", lambda: _port_open(self.port), 120)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl("stop")
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        _wait("own RabbitMQ app", lambda: _port_open(self.port), 60)

    def restart(self) -> None:
        """Stop the whole node (the Erlang VM), then start it on the same data."""
        self.stop()
        self.start()


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster: fast stop and start on the same data."""

    directory: Path
    port: int
    bin: Path

    @classmethod
    @contextlib.contextmanager
    def running(cls, base: Path) -> Iterator[OwnPostgres]:
        found = _postgres_bin()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries")
        directory = base / "postgres"
        directory.mkdir()
        _own(directory, "postgres")
        cluster = cls(directory, free_port(), found)
        subprocess.run(
            _as(
                "postgres",
                [
                    str(found / "initdb"),
                    "-D",
                    str(directory / "data"),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                ],
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(directory, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as(
                "postgres",
                [str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), *args],
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c fsync=off"
        )
        self._ctl(
            "-o", options, "-l", str(self.directory / "server.log"), "-w", "start"
        )

    def stop(self) -> None:
        """A fast shutdown: sessions are terminated, as on a routine restart."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "fast", "-w", "stop")
