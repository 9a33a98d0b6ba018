"""The gateway's server TLS context over a real loopback handshake."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from est_gateway.tls import ServerCredentials, server_context


@pytest.mark.parametrize(
    ("version", "tickets", "expected"),
    [
        (ssl.TLSVersion.TLSv1_3, 0, False),
        (ssl.TLSVersion.TLSv1_2, 0, False),
        (ssl.TLSVersion.TLSv1_3, 2, True),
        (ssl.TLSVersion.TLSv1_2, 2, True),
    ],
    ids=["tls1.3-none", "tls1.2-none", "tls1.3-two", "tls1.2-two"],
)
async def test_session_tickets(
    tmp_path: Path, version: ssl.TLSVersion, tickets: int, expected: bool
) -> None:
    """A client gets a session ticket only when the gateway is set to send some."""
    credentials = ServerCredentials.load_or_create(tmp_path, ["127.0.0.1"])
    server_tls = server_context(credentials, session_tickets=tickets)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    client_tls = ssl.create_default_context(cafile=str(credentials.cert_file))
    client_tls.maximum_version = version
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls
        )
        writer.write(b"ping")
        # TLS 1.3 tickets follow the handshake: reading the answer has read them too.
        assert b"ping" == await reader.readexactly(4)
        session = writer.get_extra_info("ssl_object").session
        writer.close()
        await writer.wait_closed()

    assert session is not None
    assert expected == session.has_ticket
