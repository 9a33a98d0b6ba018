"""Shared fixtures: real PostgreSQL and RabbitMQ, isolated per test run.

Each run gets a fresh database and a unique AMQP name prefix, so runs never collide. A
missing backend skips locally but fails when CI=true, so CI cannot pass green on skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest

from ca_worker.__main__ import serve as serve_ca
from ca_worker.settings import Settings as CaSettings
from contracts.names import Topology
from runtime.bus import Bus
from runtime.topology import remove_topology

# Admin servers stay off in tests unless a test gives one a free port: the default
# ports (runtime/admin.py) belong to whatever stack runs on this machine.
os.environ["ADMIN_PORT"] = "0"

PG_DSN = os.environ.get(
    "PKI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("PKI_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def missing_backend(what: str) -> None:
    """Skip locally; fail under CI, where every backend must be present."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{what} is not available, and CI requires it")
    pytest.skip(f"{what} is not available")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Backends:
    """Where this test run's isolated database and bus names are."""

    database: str
    prefix: str
    pg_host: str
    pg_port: int
    pg_user: str

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (worker or CLI) that uses this run's backends."""
        env = dict(os.environ)
        env.update(
            POSTGRES_HOSTNAME=self.pg_host,
            POSTGRES_PORT=str(self.pg_port),
            POSTGRES_USERNAME=self.pg_user,
            POSTGRES_DATABASE=self.database,
            AMQP_URL=AMQP_URL,
            AMQP_PREFIX=self.prefix,
            LOG_FORMAT="json",
            # No credentials directory: ``lamassu up`` children share these settings.
            LAMASSU_CREDENTIALS=os.devnull,
        )
        env.update(extra)
        return env

    async def pool(self, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
        """A pool on this run's database; the caller closes it."""
        pool = await asyncpg.create_pool(
            host=self.pg_host,
            port=self.pg_port,
            user=self.pg_user,
            database=self.database,
            min_size=min_size,
            max_size=max_size,
        )
        assert pool is not None
        return pool


@contextlib.contextmanager
def isolated_backends() -> Iterator[Backends]:
    """A fresh database and AMQP prefix, removed afterwards."""
    if not _reachable(PG_DSN, 5432):
        missing_backend("PostgreSQL")
    if not _reachable(AMQP_URL, 5672):
        missing_backend("RabbitMQ")
    run = uuid.uuid4().hex[:10]
    parts = urlsplit(PG_DSN)
    found = Backends(
        database=f"lamassu_test_{run}",
        prefix=f"test-{run}.",
        pg_host=parts.hostname or "127.0.0.1",
        pg_port=parts.port or 5432,
        pg_user=parts.username or "postgres",
    )

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{found.database}"'))
    try:
        yield found
    finally:
        asyncio.run(_delete_amqp(found.prefix))
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{found.database}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    """This run's backends, shared by the session's in-process workers."""
    with isolated_backends() as found:
        yield found


@pytest.fixture(scope="session")
async def handler_db() -> AsyncIterator[asyncpg.Pool]:
    """A database of its own for the in-memory handler tests (``runtime.testing``),
    which need PostgreSQL and nothing else: each test module migrates the schemas
    it needs, and each harness rolls back what it did."""
    if not _reachable(PG_DSN, 5432):
        missing_backend("PostgreSQL")
    name = f"lamassu_handlers_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(PG_DSN)
        pool = await asyncpg.create_pool(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            database=name,
            min_size=1,
            max_size=2,
        )
        assert pool is not None
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _delete_amqp(prefix: str) -> None:
    """Remove this run's queues and exchanges so the shared broker stays clean."""
    topology = Topology(prefix)
    own = [
        topology.queue("test", purpose)
        for purpose in ("commands", "events", "sweeps", "subscriber")
    ]
    await remove_topology(
        AMQP_URL,
        topology,
        [*topology.worker_queues(), *own, *(f"{name}.dead" for name in own)],
    )


def ca_settings(backends: Backends, keys: Path, **overrides: object) -> CaSettings:
    """CA worker settings for this run, independent of the developer's environment."""
    values: dict[str, object] = {
        "postgres_hostname": backends.pg_host,
        "postgres_port": backends.pg_port,
        "postgres_username": backends.pg_user,
        "postgres_database": backends.database,
        "amqp_url": AMQP_URL,
        "amqp_prefix": backends.prefix,
        "gopem_data": keys,
    }
    values.update(overrides)
    return CaSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def va_port() -> int:
    """Where the session's validation authority listens (tests/va_worker), chosen
    before the CA worker starts: its certificates point there (VA_URL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
async def ca_service(
    backends: Backends, keys_dir: Path, va_port: int
) -> AsyncIterator[CaSettings]:
    """The CA worker running in-process for the whole session."""
    settings = ca_settings(backends, keys_dir, va_url=f"http://127.0.0.1:{va_port}")
    stop = asyncio.Event()
    task = asyncio.create_task(serve_ca(settings, stop))
    bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    try:
        await wait_until_answered(bus, task)
    finally:
        await bus.close()
    yield settings
    stop.set()
    await asyncio.wait_for(task, 30)


async def wait_until_answered(bus: Bus, task: asyncio.Task[None] | None = None) -> None:
    """Poll the CA worker with a cheap query until it answers (deadline 30 s)."""
    from contracts.ca import ListCAs
    from lamassu_cli.client import Client
    from runtime.bus import BusUnavailable, RequestTimeout

    async with asyncio.timeout(30):
        while True:
            if task is not None and task.done():
                task.result()  # re-raise why the worker died
            try:
                await bus.request(Client.message(ListCAs()), timeout=2)
            except (BusUnavailable, RequestTimeout):
                await asyncio.sleep(0.1)
            else:
                return


@pytest.fixture(scope="session")
async def bus(backends: Backends, ca_service: CaSettings) -> AsyncIterator[Bus]:
    """A client connection to this run's bus, once the CA worker answers."""
    client = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def db(backends: Backends, ca_service: CaSettings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this run's database (migrated by the CA worker)."""
    pool = await backends.pool()
    yield pool
    await pool.close()


def worker_settings(
    settings_class: type[Any], backends: Backends, **overrides: object
) -> Any:
    """Settings of any worker for this run's backends, independent of the environment."""
    values: dict[str, object] = {
        "postgres_hostname": backends.pg_host,
        "postgres_port": backends.pg_port,
        "postgres_username": backends.pg_user,
        "postgres_database": backends.database,
        "amqp_url": AMQP_URL,
        "amqp_prefix": backends.prefix,
    }
    values.update(overrides)
    return settings_class(**values)


@contextlib.asynccontextmanager
async def running(
    serve: Callable[[Any, asyncio.Event], Coroutine[Any, Any, None]], settings: Any
) -> AsyncIterator[asyncio.Task[None]]:
    """Run a service's ``serve`` in-process; stop it cleanly afterwards."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def worker_running(
    package: str, schema: str, backends: Backends
) -> AsyncIterator[None]:
    """A worker package (``<package>.__main__.serve``) in-process, once it consumes."""
    main = importlib.import_module(f"{package}.__main__")
    settings_class = importlib.import_module(f"{package}.settings").Settings
    async with running(main.serve, worker_settings(settings_class, backends)) as task:
        bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
        try:
            await wait_until_queue(bus, schema, "commands", task)
        finally:
            await bus.close()
        yield


@pytest.fixture(scope="session")
async def dms_service(
    backends: Backends, ca_service: CaSettings
) -> AsyncIterator[None]:
    """The DMS worker in-process for the session (after the CA worker, which it asks)."""
    async with worker_running("dms_worker", "dms", backends):
        yield


@pytest.fixture(scope="session")
async def device_service(
    backends: Backends, ca_service: CaSettings
) -> AsyncIterator[None]:
    """The device worker in-process for the session."""
    async with worker_running("device_worker", "devices", backends):
        yield


async def wait_until_queue(
    bus: Bus, worker: str, purpose: str, task: asyncio.Task[None]
) -> None:
    """Wait (deadline 30 s) until a worker consumes its queue."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection, asyncio.timeout(30):
        channel = await connection.channel()
        while True:
            if task.done():
                task.result()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                queue = await channel.declare_queue(
                    bus.topology.queue(worker, purpose), passive=True
                )
                if queue.declaration_result.consumer_count:
                    return
            if channel.is_closed:
                channel = await connection.channel()
            await asyncio.sleep(0.05)


@dataclass
class Gateway:
    """Where the in-process EST gateway listens, and the file clients trust it by."""

    url: str
    server_certificate: Path

    async def knows(self, label: str, timeout: float = 10) -> None:
        """Wait until the gateway serves a CA's /cacerts (it learns CAs from events)."""
        import ssl

        import aiohttp

        context = ssl.create_default_context(cafile=str(self.server_certificate))
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context)
            ) as session,
            asyncio.timeout(timeout),
        ):
            while True:
                async with session.get(
                    f"{self.url}/.well-known/est/{label}/cacerts"
                ) as response:
                    if response.status == 200:
                        return
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def gateway_running(
    backends: Backends, tls_dir: Path, **overrides: object
) -> AsyncIterator[Gateway]:
    """The EST gateway in-process over real TLS on a free loopback port; ``overrides``
    are more of its settings."""
    from est_gateway.__main__ import serve
    from est_gateway.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    values: dict[str, Any] = {
        "amqp_url": AMQP_URL,
        "amqp_prefix": backends.prefix,
        "est_host": "127.0.0.1",
        "est_port": port,
        "est_tls_dir": tls_dir,
        "est_wait_seconds": 15,
    }
    settings = Settings(**(values | overrides))
    async with running(serve, settings) as task:
        async with asyncio.timeout(60):
            while True:
                if task.done():
                    task.result()
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                    break
                await asyncio.sleep(0.05)
        yield Gateway(f"https://127.0.0.1:{port}", tls_dir / "server.pem")


@pytest.fixture(scope="session")
async def gateway(
    backends: Backends,
    ca_service: CaSettings,
    dms_service: None,
    device_service: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateway]:
    """The gateway for the session, in front of the session's workers."""
    async with gateway_running(backends, tmp_path_factory.mktemp("est-tls")) as found:
        yield found
