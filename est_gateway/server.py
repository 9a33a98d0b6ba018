"""The gateway's listening socket: a bounded TLS handshake and a bounded number of
connections, so idle or slow clients cannot hold the gateway's memory.

aiohttp's ``TCPSite`` offers neither, so this site makes the server itself. The other
limits live in aiohttp and the app: ``keepalive_timeout`` closes a connection idle
before, between or in the middle of a request's headers; the app bounds the body read.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import structlog
from aiohttp import web

__all__ = ["EstSite", "quiet_client_disconnects"]

log = structlog.get_logger("est_gateway")


class _Refused(asyncio.Protocol):
    """Stands in for a connection over the cap: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.warning("connection_refused", reason="EST_MAX_CONNECTIONS reached")
        transport.close()


class EstSite(web.BaseSite):
    """An HTTPS site with a TLS handshake timeout and a connection cap."""

    __slots__ = ("_handshake_timeout", "_host", "_max_connections", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
        max_connections: int,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._handshake_timeout = handshake_timeout
        self._max_connections = max_connections

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # pragma: no cover - set up by runner.setup()
            raise RuntimeError("the runner is not set up")
        cap = self._max_connections

        def protocol() -> asyncio.Protocol:
            if len(server.connections) >= cap:
                return _Refused()
            return server()

        # SO_REUSEPORT: the other gateway processes of EST_WORKERS bind it too.
        self._server = await asyncio.get_running_loop().create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout,
            backlog=self._backlog,
            reuse_port=True,
        )


class _ClientDisconnects(logging.Filter):
    """A client that resets its connection or fails its TLS handshake is the client's
    business, not an error of ours: such records from asyncio and aiohttp are lowered
    to INFO (and dropped below the configured level)."""

    _KINDS = (ConnectionResetError, BrokenPipeError, ssl.SSLError, TimeoutError)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        if isinstance(exc, self._KINDS) or "SSL" in text or "reset by peer" in text:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = None
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def quiet_client_disconnects() -> None:
    """Install the filter on the loggers that report them (call once, in ``__main__``)."""
    for name in ("asyncio", "aiohttp.server", "aiohttp.web"):
        logging.getLogger(name).addFilter(_ClientDisconnects())
