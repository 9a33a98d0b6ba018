"""Wiring of the CA worker, and nothing else: ``python -m ca_worker``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from ca_worker.handlers import HANDLERS, CaContext, CaDeps, ensure_internal_ca
from ca_worker.settings import Settings
from ca_worker.store import Store
from contracts.envelope import CloudEvent
from engines.config import open_engine
from runtime.bus import Bus
from runtime.service import run_service
from runtime.worker import Plan, QueueSpec, serve_worker

__all__ = ["main", "serve"]


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings."""
    engine = open_engine(settings.engine_config())
    deps = CaDeps(
        store=Store(), engines={engine.name: engine}, default_engine=engine.name
    )

    def context(
        conn: asyncpg.Connection, envelope: CloudEvent, now: datetime
    ) -> CaContext:
        return CaContext(conn, now, envelope.correlationid or envelope.id, deps)

    async def setup(pool: asyncpg.Pool, _bus: Bus) -> Plan:
        async with pool.acquire() as conn:
            await ensure_internal_ca(conn, deps, datetime.now(UTC))

        async def close_engine() -> None:
            engine.close()

        return Plan(
            context=context,
            queues=[
                QueueSpec(
                    "commands",
                    [("commands", "ca.*"), ("commands", "certificate.*")],
                    HANDLERS,
                    prefetch=settings.ca_prefetch,
                )
            ],
            on_close=[close_engine],
        )

    await serve_worker(
        package="ca_worker", schema="ca", settings=settings, setup=setup, stop=stop
    )


def main() -> None:
    run_service("ca_worker", Settings, serve)


if __name__ == "__main__":
    main()
