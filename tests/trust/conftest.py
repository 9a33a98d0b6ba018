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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pytest

from contracts.names import Topology
from contracts.senders import IDENTITIES
from lamassu_cli.identities import definitions
from lamassu_cli.setup import import_definitions
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


@pytest.fixture(scope="module")
def trust_backends() -> Iterator[tuple[Backends, Identities]]:
    """A fresh database and prefix, and broker identities for them."""
    with isolated_backends() as backends, broker_identities(backends.prefix) as ids:
        yield backends, ids


@pytest.fixture(scope="module")
async def stack(
    trust_backends: tuple[Backends, Identities],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """Workers and gateway in-process, each with its own broker user."""
    from ca_worker.__main__ import serve as serve_ca
    from ca_worker.settings import Settings as CaSettings
    from tests.conftest import wait_until_answered

    backends, ids = trust_backends
    keys = tmp_path_factory.mktemp("trust-keys")
    ca = worker_settings(
        CaSettings, backends, amqp_url=ids.url("ca-worker"), gopem_data=keys
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
            await started.enter_async_context(_worker(package, backends, ids.url(role)))
        gateway = await started.enter_async_context(
            gateway_running(
                backends,
                tmp_path_factory.mktemp("trust-tls"),
                amqp_url=ids.url("est-gateway"),
            )
        )
        yield Stack(backends, ids, gateway, admin)


@contextlib.asynccontextmanager
async def _worker(package: str, backends: Backends, url: str) -> AsyncIterator[None]:
    """A worker in-process under its identity, once it consumes its commands."""
    main = importlib.import_module(f"{package}.__main__")
    settings_class = importlib.import_module(f"{package}.settings").Settings
    settings = worker_settings(settings_class, backends, amqp_url=url)
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
