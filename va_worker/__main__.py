"""Wiring of the validation authority, and nothing else: ``python -m va_worker``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from aiohttp import web
from cryptography import x509

from contracts.pki import serial_hex
from contracts.va import GetCRL
from engines import Engine, EngineError, EngineMisconfigured, PemFileEngine
from runtime.bus import Bus
from runtime.service import run_service
from runtime.worker import Plan, QueueSpec, serve_worker
from va_worker.app import create_app
from va_worker.catch_up import CatchUp
from va_worker.handlers import (
    COMMAND_HANDLERS,
    EVENT_HANDLERS,
    VaContext,
    VaDeps,
    crl_of,
    responder_key,
)
from va_worker.ocsp import CertState
from va_worker.served import Served
from va_worker.settings import Settings
from va_worker.store import SCHEMA, Store
from va_worker.upkeep import Upkeep

__all__ = ["main", "serve"]

log = structlog.get_logger("va_worker")


async def _load(
    pool: asyncpg.Pool, store: Store, served: Served, engine: Engine
) -> None:
    """The hot copy from the projection: CAs, responders and CRLs (responses are
    signed again on request)."""
    async with pool.acquire() as conn:
        for name, der in await store.cas(conn):
            served.add_ca(name, x509.load_der_x509_certificate(der))
        for row in await store.responders(conn):
            try:
                responder = await asyncio.to_thread(
                    responder_key, engine, row.key_id, row.certificate_der
                )
            except EngineError as exc:
                log.warning("ocsp_responder_key_missing", ca=row.ca, error=str(exc))
                continue
            served.set_responder(row.ca, responder)
        for crl in await store.crls(conn):
            served.set_crl(crl.ca, delta=crl.delta, crl=crl_of(crl))


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings."""
    # The engine first: a wrong VA_KEYS stops the process before anything else.
    try:
        engine = await asyncio.to_thread(PemFileEngine, settings.va_keys)
    except EngineMisconfigured as exc:
        # The gopem engine names its own variable; here the directory is VA_KEYS.
        reason = str(exc).removeprefix("GOPEM_DATA: ")
        raise EngineMisconfigured(f"VA_KEYS: {reason}") from None
    store = Store()

    async def setup(pool: asyncpg.Pool, bus: Bus) -> Plan:
        async def lookup(ca: str, serial: int) -> CertState | None:
            return await store.certificate(pool, ca, serial_hex(serial))

        served = Served(validity=settings.ocsp_validity, lookup=lookup)
        await _load(pool, store, served, engine)
        deps = VaDeps(
            store=store,
            served=served,
            engine=engine,
            crl_debounce=timedelta(seconds=settings.va_crl_debounce_seconds),
        )

        upkeep = Upkeep(
            pool=pool,
            store=store,
            engine=engine,
            clock=clock,
            interval=settings.va_upkeep_seconds,
            crl_validity_hours=settings.va_crl_validity_hours,
            delta_crl_validity_hours=settings.va_delta_crl_validity_hours,
            responder_validity_hours=settings.va_responder_validity_hours,
            responder_renew=timedelta(hours=settings.va_responder_renew_hours),
        )

        catch_up = CatchUp(bus=bus, pool=pool, store=store, served=served, clock=clock)

        # Bound here, so that a port in use stops the start; served until stop.
        runner = web.AppRunner(
            create_app(served, clock=clock, max_body=settings.va_max_request_bytes),
            access_log=None,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.va_host, settings.va_port).start()
        except OSError:
            await runner.cleanup()
            raise
        log.info("va_http_started", host=settings.va_host, port=settings.va_port)

        async def http(_wake: Callable[[], None]) -> None:
            try:
                await asyncio.Event().wait()  # until cancelled at stop
            finally:
                await runner.cleanup()

        return Plan(
            context=VaContext.factory(deps),
            queues=[
                QueueSpec(
                    "events",
                    [("events", key) for key in EVENT_HANDLERS],
                    EVENT_HANDLERS,
                    prefetch=settings.va_prefetch,
                ),
                QueueSpec("commands", [("commands", GetCRL.TYPE)], COMMAND_HANDLERS),
            ],
            tasks=[http, upkeep.run, catch_up.run],
        )

    try:
        await serve_worker(
            package="va_worker",
            schema=SCHEMA,
            settings=settings,
            setup=setup,
            stop=stop,
            clock=clock,
        )
    finally:
        with contextlib.suppress(EngineError):
            engine.close()


def main() -> None:
    run_service("va_worker", Settings, serve, startup_errors=(EngineError,))


if __name__ == "__main__":
    main()
