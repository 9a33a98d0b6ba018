"""A connection's limits: idle and slow clients cannot hold the gateway's resources."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ca_worker.settings import Settings as CaSettings
from contracts.ca import CreateCA
from runtime.bus import Bus
from tests.conftest import Backends, Gateway, gateway_running
from tests.pki import call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
async def limited(
    backends: Backends,
    ca_service: CaSettings,
    bus: Bus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway with short limits (the idle one is ``request.param`` when given),
    and the label of a CA it serves."""
    label = unique("limits-ca")
    assert (await call(bus, CreateCA(name=label))).ok
    async with gateway_running(
        backends,
        tmp_path,
        est_idle_timeout_seconds=getattr(request, "param", 0.5),
        est_read_timeout_seconds=0.5,
        est_max_connections=2,
    ) as gateway:
        await gateway.knows(label)
        yield gateway, label


async def _connect(
    gateway: Gateway,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.create_default_context(cafile=str(gateway.server_certificate))
    port = int(gateway.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port, ssl=context)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (deadline 10 s)."""
    async with asyncio.timeout(10):
        try:
            return b"" == await reader.read()
        except (ConnectionResetError, ssl.SSLError):
            return True


async def test_an_idle_connection_is_closed(limited: tuple[Gateway, str]) -> None:
    """A client that connects and sends nothing is disconnected after the idle limit."""
    gateway, _ = limited
    reader, writer = await _connect(gateway)
    assert await _closed_by_server(reader)
    writer.close()


async def test_a_slow_body_gets_408(limited: tuple[Gateway, str]) -> None:
    """Headers announce 200 bytes, 10 arrive: 408 after the read limit, not a hang."""
    gateway, label = limited
    reader, writer = await _connect(gateway)
    writer.write(
        f"POST /.well-known/est/{label}/simpleenroll HTTP/1.1\r\n"
        "Host: localhost\r\nContent-Type: application/pkcs10\r\n"
        "Content-Length: 200\r\n\r\nMIIBIjANBg".encode()
    )
    await writer.drain()
    async with asyncio.timeout(10):
        status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    writer.close()


@pytest.mark.parametrize("limited", [60.0], indirect=True)
async def test_connections_over_the_cap_are_refused(
    limited: tuple[Gateway, str],
) -> None:
    """With EST_MAX_CONNECTIONS=2, a third connection is closed at once (long before
    the idle limit, a minute here)."""
    gateway, _ = limited
    first, second = await _connect(gateway), await _connect(gateway)
    third_reader, third_writer = await _connect(gateway)
    assert await _closed_by_server(third_reader)
    for _, writer in (first, second, (third_reader, third_writer)):
        writer.close()
