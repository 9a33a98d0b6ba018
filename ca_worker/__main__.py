"""Wiring of the CA worker, and nothing else: ``python -m ca_worker``."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog

from ca_worker.handlers import HANDLERS, CaContext, CaDeps, ensure_internal_ca
from ca_worker.settings import Settings
from ca_worker.store import Store
from contracts.names import Topology
from engines.config import open_engine
from runtime.bus import Bus
from runtime.db import create_pool, discover_migrations, migrate
from runtime.dispatch import Dispatcher
from runtime.outbox import OutboxRelay
from runtime.service import run_service

__all__ = ["main", "serve"]

SCHEMA = "ca"
log = structlog.get_logger("ca_worker")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings."""
    engine = open_engine(settings.engine_config())
    pool = await create_pool(settings)
    bus: Bus | None = None
    relay_task: asyncio.Task[None] | None = None
    try:
        await migrate(pool, SCHEMA, discover_migrations("ca_worker"))
        bus = await Bus.connect(
            settings.amqp_url.get_secret_value(), Topology(settings.amqp_prefix)
        )
        deps = CaDeps(
            store=Store(), engines={engine.name: engine}, default_engine=engine.name
        )
        async with pool.acquire() as conn:
            await ensure_internal_ca(conn, deps, datetime.now(UTC))
        relay = OutboxRelay(pool, SCHEMA, bus) if settings.outbox_relay else None
        if relay is not None:
            relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        topology = bus.topology
        queue = await bus.declare_worker_queue(
            "ca",
            "commands",
            [(topology.commands, "ca.*"), (topology.commands, "certificate.*")],
        )
        dispatcher = Dispatcher(
            routes=HANDLERS,
            pool=pool,
            schema=SCHEMA,
            bus=bus,
            relay=relay,
            context=lambda conn, envelope, now: CaContext(
                conn, now, envelope.correlationid or envelope.id, deps
            ),
        )
        await bus.consume(queue, dispatcher, prefetch=settings.ca_prefetch)
        log.info("ca_worker_started", engine=engine.name, queue=queue)
        await stop.wait()
    finally:
        if relay_task is not None:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task
        if bus is not None:
            await bus.close()
        await pool.close()
        engine.close()
        log.info("ca_worker_stopped")


def main() -> None:
    run_service("ca_worker", Settings, serve)


if __name__ == "__main__":
    main()
