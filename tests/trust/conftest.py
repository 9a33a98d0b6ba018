"""Real broker identities for a test module: a vhost of its own, users ``<prefix><role>``,
made with one ``rabbitmqctl import_definitions`` (as ``lamassu bus setup`` does) and
removed afterwards. rabbitmqctl needs root (or the broker's user): without it the
tests skip locally and fail under CI, like any missing backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

from contracts.names import Topology
from contracts.senders import IDENTITIES
from lamassu_cli.bus_setup import import_definitions
from lamassu_cli.db_setup import WORKER_SCHEMAS, setup_roles
from lamassu_cli.identities import definitions
from runtime.bus import Bus
from tests.conftest import (
    AMQP_URL,
    Backends,
    Gateway,
    gateway_running,
    isolated_backends,
    missing_backend,
    running,
    worker_settings,
)


@dataclass(frozen=True)
class Identities:
    """Where each role connects: its AMQP URL in the module's vhost."""

    vhost: str
    urls: dict[str, str]

    def url(self, role: str) -> str:
        return self.urls[role]


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, timeout=60, check=False
    )


@contextlib.contextmanager
def broker_identities(prefix: str) -> Iterator[Identities]:
    """The vhost and its users for this prefix, gone afterwards."""
    if shutil.which("rabbitmqctl") is None or _rabbitmqctl("-q", "status").returncode:
        missing_backend("rabbitmqctl (root is needed to import definitions)")
    vhost = f"lamassu-test-{uuid.uuid4().hex[:10]}"
    passwords = {role: uuid.uuid4().hex for role in IDENTITIES}
    import_definitions(
        "rabbitmqctl",
        definitions(vhost=vhost, topology=Topology(prefix), passwords=passwords),
    )
    broker = urlsplit(AMQP_URL)
    host = f"{broker.hostname or '127.0.0.1'}:{broker.port or 5672}"
    urls = {
        role: f"amqp://{quote(prefix + role, safe='')}:{password}@{host}/{quote(vhost, safe='')}"
        for role, password in passwords.items()
    }
    try:
        yield Identities(vhost, urls)
    finally:
        _rabbitmqctl("delete_vhost", vhost)
        for role in IDENTITIES:
            _rabbitmqctl("delete_user", f"{prefix}{role}")


@dataclass(frozen=True)
class Stack:
    """The enrollment path (CA, DMS and device workers, gateway) under identities."""

    backends: Backends
    identities: Identities
    gateway: Gateway
    admin: Bus


@contextlib.contextmanager
def database_roles(backends: Backends) -> Iterator[dict[str, str]]:
    """``lamassu db setup``'s roles in this run's database (role name by identity);
    dropped afterwards with what they own (roles are per cluster)."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"

    async def run(work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        conn = await asyncpg.connect(
            host=backends.pg_host,
            port=backends.pg_port,
            user=backends.pg_user,
            database=backends.database,
        )
        try:
            return await work(conn)
        finally:
            await conn.close()

    passwords = {identity: uuid.uuid4().hex for identity in WORKER_SCHEMAS}
    names: dict[str, str] = asyncio.run(
        run(lambda conn: setup_roles(conn, prefix, passwords))
    )

    async def drop(conn: asyncpg.Connection) -> None:
        for name in names.values():
            await conn.execute(f"DROP OWNED BY {name} CASCADE")
            await conn.execute(f"DROP ROLE {name}")

    try:
        yield names
    finally:
        asyncio.run(run(drop))


@pytest.fixture(scope="module")
def trust_backends() -> Iterator[tuple[Backends, Identities, dict[str, str]]]:
    """A fresh database and prefix, broker identities and database roles for them."""
    with (
        isolated_backends() as backends,
        broker_identities(backends.prefix) as ids,
        database_roles(backends) as roles,
    ):
        yield backends, ids, roles


@pytest.fixture(scope="module")
async def stack(
    trust_backends: tuple[Backends, Identities, dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """Workers and gateway in-process, each with its own broker user."""
    from ca_worker.__main__ import serve as serve_ca
    from ca_worker.settings import Settings as CaSettings
    from tests.conftest import wait_until_answered

    backends, ids, roles = trust_backends
    keys = tmp_path_factory.mktemp("trust-keys")
    ca = worker_settings(
        CaSettings,
        backends,
        amqp_url=ids.url("ca-worker"),
        postgres_username=roles["ca-worker"],
        gopem_data=keys,
    )
    async with contextlib.AsyncExitStack() as started:
        task = await started.enter_async_context(running(serve_ca, ca))
        admin = await Bus.connect(ids.url("admin"), Topology(backends.prefix))
        started.push_async_callback(admin.close)
        await wait_until_answered(admin, task)
        for package, role in (
            ("dms_worker", "dms-worker"),
            ("device_worker", "device-worker"),
        ):
            await started.enter_async_context(
                _worker(package, backends, ids.url(role), roles[role])
            )
        gateway = await started.enter_async_context(
            gateway_running(
                backends,
                tmp_path_factory.mktemp("trust-tls"),
                amqp_url=ids.url("est-gateway"),
            )
        )
        yield Stack(backends, ids, gateway, admin)


@contextlib.asynccontextmanager
async def _worker(
    package: str, backends: Backends, url: str, database_role: str
) -> AsyncIterator[None]:
    """A worker in-process under its identity, once it consumes its commands."""
    main = importlib.import_module(f"{package}.__main__")
    settings_class = importlib.import_module(f"{package}.settings").Settings
    settings = worker_settings(
        settings_class, backends, amqp_url=url, postgres_username=database_role
    )
    schema = {"dms_worker": "dms", "device_worker": "devices"}[package]
    async with running(main.serve, settings) as task:
        bus = await Bus.connect(url, Topology(backends.prefix))
        try:
            async with asyncio.timeout(30):
                queue = bus.topology.queue(schema, "commands")
                while not await bus.consumer_count(queue):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.05)
        finally:
            await bus.close()
        yield
