"""The life of a worker process: pool, migrations, bus, outbox relay, queues, shutdown.

Each worker's ``__main__`` only says what is its own (schema, queues, routes, context);
this module does the rest in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import structlog

from contracts.names import Topology
from runtime.bus import Bus
from runtime.db import create_pool, discover_migrations, migrate
from runtime.dispatch import ContextFactory, Dispatcher, Route
from runtime.outbox import OutboxRelay
from runtime.settings import BusSettings, DatabaseSettings

__all__ = ["Plan", "QueueSpec", "WorkerSettings", "serve_worker"]

log = structlog.get_logger("worker")


class WorkerSettings(DatabaseSettings, BusSettings):
    """What every worker reads: database, bus, and whether it relays its own outbox."""

    # Off only where the outbox relay runs in another process (and in the crash test).
    outbox_relay: bool = True


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One durable queue of the worker: its bindings and the routes it serves."""

    purpose: str
    bindings: Sequence[tuple[Literal["commands", "events"], str]]
    routes: Mapping[str, Route]
    prefetch: int = 32
    # Bindings an earlier version made and this one no longer wants: a binding outlives
    # the code that declared it, so it is removed at start (idempotent).
    retired_bindings: Sequence[tuple[Literal["commands", "events"], str]] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """What a worker's setup returns: per-message context and the queues to consume."""

    context: ContextFactory
    queues: Sequence[QueueSpec]
    on_close: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=tuple)
    # Background loops (a scheduler, say), started once the queues consume and
    # cancelled at stop; each gets the outbox relay's wake-up for what it writes.
    tasks: Sequence[Callable[[Callable[[], None]], Coroutine[Any, Any, None]]] = field(
        default_factory=tuple
    )


async def serve_worker(
    *,
    package: str,
    schema: str,
    settings: WorkerSettings,
    setup: Callable[[asyncpg.Pool, Bus], Awaitable[Plan]],
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run a worker until ``stop`` is set; migrations come from ``<package>/migrations``.

    ``clock`` is every handler's ``now``; tests inject one to walk through expiry.
    """
    pool = await create_pool(settings)
    bus: Bus | None = None
    relay_task: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = []
    plan: Plan | None = None
    try:
        await migrate(pool, schema, discover_migrations(package))
        bus = await Bus.connect(
            settings.amqp_url.get_secret_value(), Topology(settings.amqp_prefix)
        )
        plan = await setup(pool, bus)
        relay = OutboxRelay(pool, schema, bus) if settings.outbox_relay else None
        if relay is not None:
            relay_task = asyncio.create_task(relay.run(), name=f"{schema}-outbox-relay")
        exchanges = {"commands": bus.topology.commands, "events": bus.topology.events}
        # Every queue exists before any is consumed: a handler may send commands to
        # another queue of this worker (sweep.run -> sweep.shard), and the relay
        # publishes them unroutable-is-dropped on the very first start otherwise.
        queues = [
            await bus.declare_worker_queue(
                schema,
                spec.purpose,
                [(exchanges[kind], key) for kind, key in spec.bindings],
                retired=[(exchanges[kind], key) for kind, key in spec.retired_bindings],
            )
            for spec in plan.queues
        ]
        for spec, queue in zip(plan.queues, queues, strict=True):
            dispatcher = Dispatcher(
                routes=spec.routes,
                pool=pool,
                schema=schema,
                bus=bus,
                relay=relay,
                context=plan.context,
                clock=clock,
            )
            await bus.consume(queue, dispatcher, prefetch=spec.prefetch)
        wake = relay.wake if relay is not None else lambda: None
        tasks = [asyncio.create_task(task(wake)) for task in plan.tasks]
        log.info(
            "worker_started", worker=package, queues=[q.purpose for q in plan.queues]
        )
        await stop.wait()
    finally:
        for task in [*tasks, *([relay_task] if relay_task is not None else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if bus is not None:
            await bus.close()
        await pool.close()
        for close in plan.on_close if plan is not None else ():
            await close()
        log.info("worker_stopped", worker=package)
