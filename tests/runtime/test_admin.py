"""The admin port of a worker: /healthz, /readyz turning false and true again, /metrics.

The broker is made to go away with a TCP relay between the worker and the real
RabbitMQ (the shared broker itself is never stopped): closing the relay drops the
worker's connection exactly as a broker restart does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from device_worker.settings import Settings as DeviceSettings
from runtime.admin import AdminPortError, AdminServer, AdminSettings, admin_port
from runtime.bus import Bus
from runtime.settings import SettingsError, load_settings
from runtime.worker import Plan, QueueSpec, serve_worker
from tests.conftest import AMQP_URL, Backends, isolated_backends, worker_settings

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Relay:
    """Forwards 127.0.0.1:``port`` to the broker until ``close``; ``open`` again."""

    def __init__(self, port: int) -> None:
        parts = urlsplit(AMQP_URL)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._pipe, "127.0.0.1", self.port, reuse_address=True
        )

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


class Stage:
    def __init__(self, admin: str, die: asyncio.Event, relay: Relay) -> None:
        self.admin = admin
        self.die = die
        self.relay = relay


@pytest.fixture
async def stage(own_backends: Backends) -> AsyncIterator[Stage]:
    async with running_stage(own_backends) as found:
        yield found


@contextlib.asynccontextmanager
async def running_stage(
    own_backends: Backends, **overrides: object
) -> AsyncIterator[Stage]:
    """A worker (the device worker's schema) with one background task that dies
    each time ``die`` is set, reached through a relay, its admin port open."""
    relay = Relay(free_port())
    await relay.open()
    port = free_port()
    url = urlsplit(AMQP_URL)
    settings = worker_settings(
        DeviceSettings,
        own_backends,
        amqp_url=url._replace(
            netloc=f"{url.netloc.split('@')[0]}@127.0.0.1:{relay.port}"
        ).geturl(),
        admin_port=port,
        **overrides,
    )
    die = asyncio.Event()

    async def fragile(_wake: Any) -> None:
        await die.wait()
        die.clear()
        raise RuntimeError("a bug in a background loop")

    async def setup(_pool: Any, _bus: Bus) -> Plan:
        return Plan(
            context=lambda *_: None,
            queues=[QueueSpec("commands", [("commands", "device.none")], {})],
            tasks=[fragile],
        )

    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_worker(
            package="device_worker",
            schema="devices",
            settings=settings,
            setup=setup,
            stop=stop,
        )
    )
    admin = f"http://127.0.0.1:{port}"
    try:
        await _until(admin, task, lambda status, _body: status == 200)
        yield Stage(admin, die, relay)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        with contextlib.suppress(AssertionError):
            await relay.close()


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def _until(
    admin: str,
    task: asyncio.Task[None] | None,
    wanted: Any,
    path: str = "/readyz",
) -> str:
    """Poll ``path`` until ``wanted(status, body)``; deadline 30 s. The body."""
    async with asyncio.timeout(30):
        while True:
            if task is not None and task.done():
                task.result()
            with contextlib.suppress(aiohttp.ClientError):
                status, body = await _get(admin + path)
                if wanted(status, body):
                    return body
            await asyncio.sleep(0.02)


async def test_ready_turns_false_when_a_background_task_dies_and_true_after(
    stage: Stage,
) -> None:
    status, body = await _get(stage.admin + "/healthz")
    assert (status, body) == (200, '{"ok": true}')
    stage.die.set()
    body = await _until(stage.admin, None, lambda s, _b: s == 503)
    assert '"tasks": "not running: devices-task-0"' in body
    assert '"ready": false' in body
    # The supervisor starts it again after its backoff: ready once more.
    await _until(stage.admin, None, lambda s, _b: s == 200)


async def test_ready_turns_false_without_the_broker_and_true_after(
    stage: Stage,
) -> None:
    await stage.relay.close()
    body = await _until(stage.admin, None, lambda s, _b: s == 503)
    assert '"bus": "not connected to the broker"' in body
    assert '"consumers": "not consuming: ' in body
    status, _ = await _get(stage.admin + "/healthz")
    assert status == 200  # alive: only not ready
    await stage.relay.open()
    body = await _until(stage.admin, None, lambda s, _b: s == 200)
    assert '"bus": "ok"' in body
    assert '"consumers": "ok"' in body


async def test_metrics_report_outbox_inbox_and_dead_letter_queues(
    stage: Stage,
) -> None:
    text = await _until(stage.admin, None, lambda s, _b: s == 200, "/metrics")
    lines = text.splitlines()
    assert 'lamassu_outbox_backlog{worker="devices"} 0.0' in lines
    assert any(
        line.startswith('lamassu_outbox_oldest_age_seconds{worker="devices"}')
        for line in lines
    )
    assert any(
        line.startswith('lamassu_inbox_rows{worker="devices"}') for line in lines
    )
    assert any(
        line.startswith("lamassu_queue_messages{") and "devices.commands.dead" in line
        for line in lines
    )


def test_admin_port_defaults_per_service_and_zero_turns_it_off() -> None:
    unset = AdminSettings.model_construct(admin_port=None)
    assert admin_port(unset, "ca_worker") == 9101
    assert admin_port(unset, "est_gateway") == 9104
    assert admin_port(unset, "a_new_worker") == 0
    assert admin_port(AdminSettings(admin_port=0), "ca_worker") == 0
    assert admin_port(AdminSettings(admin_port=9200), "ca_worker") == 9200


def test_bad_admin_port_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADMIN_PORT", "70000")
    with pytest.raises(SettingsError, match=r"^ADMIN_PORT: ") as caught:
        load_settings(AdminSettings)
    assert "\n" not in str(caught.value)


async def test_admin_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = AdminServer(CollectorRegistry(), {})
        with pytest.raises(
            AdminPortError, match=rf"^ADMIN_PORT: cannot listen on 127.0.0.1:{port}: "
        ):
            await server.start("127.0.0.1", port)


async def test_admin_answers_garbage_with_client_errors(stage: Stage) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(stage.admin + "/nothing-here") as response:
            assert response.status == 404
        async with session.post(
            stage.admin + "/readyz", data=b"\x00" * 100
        ) as response:
            assert response.status == 405
        async with session.get(stage.admin + "/metrics?format=<script>") as response:
            assert response.status == 200
    status, _ = await _get(stage.admin + "/healthz")
    assert status == 200  # still serving


def test_bad_readiness_threshold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READY_OUTBOX_AGE_SECONDS", "-5")
    with pytest.raises(SettingsError, match=r"^READY_OUTBOX_AGE_SECONDS: "):
        load_settings(AdminSettings)


async def test_ready_turns_false_while_the_outbox_lags(own_backends: Backends) -> None:
    """An outbox row older than READY_OUTBOX_AGE_SECONDS: events are not leaving."""
    # No relay in this process (as when another one relays), so the row stays.
    async with running_stage(
        own_backends, outbox_relay=False, ready_outbox_age_seconds=30
    ) as stage:
        pool = await own_backends.pool()
        try:
            await pool.execute(
                "INSERT INTO devices.outbox (id, routing_key, body, created_at) "
                "VALUES ('lagging', 'device.none', '\\x7b7d', now() - interval '1 hour')"
            )
            body = await _until(stage.admin, None, lambda s, _b: s == 503)
            lag = r'"database": "the oldest outbox row is 360\d s old \(limit 30 s\)"'
            assert re.search(lag, body), body
            metrics = await _until(
                stage.admin, None, lambda s, _b: s == 200, "/metrics"
            )
            assert (
                'lamassu_outbox_backlog{worker="devices"} 1.0' in metrics.splitlines()
            )
            await pool.execute("DELETE FROM devices.outbox WHERE id = 'lagging'")
            await _until(stage.admin, None, lambda s, _b: s == 200)
        finally:
            await pool.close()
