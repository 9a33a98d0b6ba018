"""Wiring of the alerts worker, and nothing else: ``python -m alerts_worker``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from alerts_worker.channels import Sender
from alerts_worker.delivery import Deliverer
from alerts_worker.handlers import (
    COMMAND_HANDLERS,
    EVENT_HANDLERS,
    AlertsContext,
    AlertsDeps,
)
from alerts_worker.settings import Settings
from alerts_worker.store import SCHEMA, Store
from alerts_worker.subscriptions import Matcher
from runtime.bus import Bus
from runtime.service import run_service
from runtime.worker import Plan, QueueSpec, serve_worker

__all__ = ["main", "serve"]


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings
    (and a clock, to walk through retry periods and digests)."""
    deps = AlertsDeps(store=Store(), matcher=Matcher())
    sender = Sender(settings)

    async def setup(pool: asyncpg.Pool, _bus: Bus) -> Plan:
        deliverer = Deliverer(
            pool=pool, store=deps.store, sender=sender, settings=settings, clock=clock
        )
        return Plan(
            context=AlertsContext.factory(deps),
            queues=[
                # Observes every event; acts on none (DESIGN §1: alerts only observe).
                QueueSpec(
                    "events",
                    [("events", "#")],
                    EVENT_HANDLERS,
                    prefetch=settings.alerts_prefetch,
                ),
                QueueSpec("commands", [("commands", "alert.*")], COMMAND_HANDLERS),
            ],
            on_close=[sender.close],
            tasks=[deliverer.run],
        )

    await serve_worker(
        package="alerts_worker",
        schema=SCHEMA,
        settings=settings,
        setup=setup,
        stop=stop,
        clock=clock,
    )


def main() -> None:
    run_service("alerts_worker", Settings, serve)


if __name__ == "__main__":
    main()
