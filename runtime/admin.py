"""Each process's admin port: ``/healthz``, ``/readyz`` and ``/metrics``.

It is a second, plain-HTTP aiohttp server on ``ADMIN_HOST:ADMIN_PORT`` (127.0.0.1 by
default: the endpoints are for the local Prometheus and the on-call engineer, not
for devices), never the EST port. ``/healthz`` answers while the event loop runs;
``/readyz`` runs every readiness check and answers 503 naming the ones that fail, so
a load balancer or compose's healthcheck stops sending work to a process that is up
but cannot serve (its broker connection lost, its outbox relay dead).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_ADMIN_PORTS",
    "AdminPortError",
    "AdminServer",
    "AdminSettings",
    "Check",
    "admin_port",
    "serve_admin",
]

log = structlog.get_logger("admin")

# The admin port of each service when ADMIN_PORT is unset (README "Health and
# metrics"); a service not listed here has no admin server unless ADMIN_PORT is set.
DEFAULT_ADMIN_PORTS: Mapping[str, int] = {
    "ca_worker": 9101,
    "dms_worker": 9102,
    "device_worker": 9103,
    "est_gateway": 9104,
}

# A readiness check: None when it holds, else a one-line reason.
Check = Callable[[], Awaitable[str | None]]

# A check that takes longer than this fails: a probe must answer quickly.
_CHECK_TIMEOUT = 3.0


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    admin_host: str = "127.0.0.1"
    # None: the service's default (DEFAULT_ADMIN_PORTS); 0: no admin server.
    admin_port: int | None = Field(default=None, ge=0, lt=65536)
    # /readyz fails when the oldest outbox row is older than this many seconds:
    # events are written but not leaving.
    ready_outbox_age_seconds: float = Field(default=60.0, gt=0)


def admin_port(settings: AdminSettings, service: str) -> int:
    """The port ``service`` serves its admin endpoints on; 0 means none."""
    if settings.admin_port is not None:
        return settings.admin_port
    return DEFAULT_ADMIN_PORTS.get(service, 0)


@dataclass(frozen=True, slots=True)
class AdminServer:
    """The three endpoints over a registry, readiness checks and scrape-time refreshes."""

    registry: CollectorRegistry
    checks: Mapping[str, Check]
    # Run before each scrape: gauges read from the database or the broker.
    refresh: Sequence[Callable[[], Awaitable[None]]] = ()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def readiness(self) -> dict[str, str | None]:
        """Each check's name and its failure reason (None when it holds)."""
        names = list(self.checks)
        results = await asyncio.gather(*(_run(self.checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def start(self, host: str, port: int) -> web.AppRunner:
        """Listen on ``host:port``; the caller cleans the runner up."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AdminPortError(
                f"ADMIN_PORT: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        log.info("admin_listening", url=f"http://{host}:{port}/")
        return runner

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _readyz(self, _request: web.Request) -> web.Response:
        results = await self.readiness()
        failing = {name: reason for name, reason in results.items() if reason}
        body = {
            "ready": not failing,
            "checks": {name: reason or "ok" for name, reason in results.items()},
        }
        return web.json_response(body, status=503 if failing else 200)

    async def _metrics(self, _request: web.Request) -> web.Response:
        for refresh in self.refresh:
            # A gauge that cannot be read now keeps its last value; the scrape goes on.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CHECK_TIMEOUT):
                    await refresh()
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


class AdminPortError(Exception):
    """The admin port cannot be opened (in use); ``str()`` is one line."""


async def _run(check: Check) -> str | None:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            return await check()
    except TimeoutError:
        return f"no answer within {_CHECK_TIMEOUT:g} s"
    except Exception as exc:  # noqa: BLE001 - a failing check is a reason, not a crash
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def serve_admin(
    server: AdminServer, settings: AdminSettings, service: str
) -> web.AppRunner | None:
    """Start ``server`` on the service's admin port; None when it is turned off."""
    port = admin_port(settings, service)
    if port == 0:
        return None
    return await server.start(settings.admin_host, port)
