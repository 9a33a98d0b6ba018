"""The life of a worker process: pool, migrations, bus, outbox relay, queues, shutdown.

Each worker's ``__main__`` only says what is its own (schema, queues, routes, context);
this module does the rest in one place. Background loops (the outbox relay, the inbox
retention schedule, the worker's own) run under one ``Supervisor``: a loop that fails
is restarted, and one that cannot recover stops the process with ``Unrecoverable``.
Shutdown always closes the consumers, the bus and the pool, whatever failed before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import field_validator

from contracts.names import Topology
from runtime.admin import AdminServer, AdminSettings, Check, serve_admin
from runtime.bus import Bus
from runtime.db import create_pool, discover_migrations, migrate
from runtime.dispatch import Dispatcher
from runtime.inbox import prune_inbox
from runtime.metrics import WorkerMetrics
from runtime.outbox import OutboxRelay
from runtime.routes import ContextFactory, Route
from runtime.schedule import Interval, Scheduler, parse_duration
from runtime.settings import BusSettings, DatabaseSettings
from runtime.supervise import Supervisor

__all__ = ["Plan", "QueueSpec", "WorkerSettings", "serve_worker"]

log = structlog.get_logger("worker")


class WorkerSettings(DatabaseSettings, BusSettings, AdminSettings):
    """What every worker reads: database, bus, and whether it relays its own outbox."""

    # Off only where the outbox relay runs in another process (and in the crash test).
    outbox_relay: bool = True
    # How long processed message ids and their stored replies are kept (runtime/inbox.py).
    inbox_retention: timedelta = timedelta(days=7)
    inbox_reply_retention: timedelta = timedelta(hours=1)

    @field_validator("inbox_retention", "inbox_reply_retention", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One durable queue of the worker: its bindings and the routes it serves."""

    purpose: str
    bindings: Sequence[tuple[Literal["commands", "events"], str]]
    routes: Mapping[str, Route[Any, Any]]
    prefetch: int = 32


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
    # Exceptions of the worker's own backends that mean "retry later" (an engine's
    # EngineUnavailable), beside those runtime.faults knows.
    transient: tuple[type[BaseException], ...] = ()
    # Run before each /metrics scrape: the worker's own gauges, read from its
    # tables (on the registry given to serve_worker).
    refresh: Sequence[Callable[[], Awaitable[None]]] = ()


async def serve_worker(
    *,
    package: str,
    schema: str,
    settings: WorkerSettings,
    setup: Callable[[asyncpg.Pool, Bus], Awaitable[Plan]],
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    registry: CollectorRegistry | None = None,
) -> None:
    """Run a worker until ``stop`` is set; migrations come from ``<package>/migrations``.

    ``clock`` is every handler's ``now``; tests inject one to walk through expiry.
    ``registry`` takes the worker's metrics (a new one per call when None); they and
    its readiness are served on the admin port (runtime/admin.py).
    Raises ``Unrecoverable`` when a background loop keeps failing.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = WorkerMetrics(registry, schema)
    pool = await create_pool(settings)
    bus: Bus | None = None
    plan: Plan | None = None
    supervisor: Supervisor | None = None
    admin: web.AppRunner | None = None
    dispatchers: list[Dispatcher] = []
    try:
        await migrate(pool, schema, discover_migrations(package))
        bus = await Bus.connect(
            settings.amqp_url.get_secret_value(), Topology(settings.amqp_prefix)
        )
        bus.warn_if_unchecked()
        plan = await setup(pool, bus)
        supervisor = Supervisor(transient=plan.transient)
        relay = OutboxRelay(pool, schema, bus) if settings.outbox_relay else None
        if relay is not None:
            supervisor.start(f"{schema}-outbox-relay", relay.run)
        exchanges = {"commands": bus.topology.commands, "events": bus.topology.events}
        # Every queue exists before any is consumed: a handler may send commands to
        # another queue of this worker (sweep.run -> sweep.shard), and the relay
        # publishes them unroutable-is-dropped on the very first start otherwise.
        queues = [
            await bus.declare_worker_queue(
                schema,
                spec.purpose,
                [(exchanges[kind], key) for kind, key in spec.bindings],
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
                transient=plan.transient,
                observe=metrics.settled,
            )
            dispatchers.append(dispatcher)
            await bus.consume(queue, dispatcher, prefetch=spec.prefetch)
        wake = relay.wake if relay is not None else lambda: None
        _start_inbox_retention(
            supervisor,
            pool=pool,
            schema=schema,
            settings=settings,
            clock=clock,
            wake=wake,
        )
        for index, task in enumerate(plan.tasks):
            supervisor.start(f"{schema}-task-{index}", _bound(task, wake))
        admin = await serve_admin(
            AdminServer(
                registry,
                _readiness(pool, bus, supervisor, metrics, settings),
                refresh=[
                    lambda: _read_outbox(metrics, pool),
                    lambda: metrics.read_queues(bus, queues),
                    *plan.refresh,
                ],
            ),
            settings,
            package,
        )
        log.info(
            "worker_started", worker=package, queues=[q.purpose for q in plan.queues]
        )
        await supervisor.watch(stop)
    finally:
        if admin is not None:
            await admin.cleanup()
        for dispatcher in dispatchers:
            dispatcher.close()
        if supervisor is not None:
            await supervisor.close()
        if bus is not None:
            with contextlib.suppress(Exception):
                await bus.close()
        with contextlib.suppress(Exception):
            await pool.close()
        for close in plan.on_close if plan is not None else ():
            await close()
        log.info("worker_stopped", worker=package)


async def _read_outbox(metrics: WorkerMetrics, pool: asyncpg.Pool) -> None:
    await metrics.read_outbox(pool)


def _readiness(
    pool: asyncpg.Pool,
    bus: Bus,
    supervisor: Supervisor,
    metrics: WorkerMetrics,
    settings: WorkerSettings,
) -> dict[str, Check]:
    """What /readyz checks (served once every queue is consumed)."""

    async def bus_connected() -> str | None:
        return None if bus.connected else "not connected to the broker"

    async def consumers() -> str | None:
        detached = bus.detached()
        return f"not consuming: {', '.join(detached)}" if detached else None

    async def database() -> str | None:
        _backlog, age = await metrics.read_outbox(pool)
        limit = settings.ready_outbox_age_seconds
        if age > limit:
            return f"the oldest outbox row is {age:.0f} s old (limit {limit:g} s)"
        return None

    async def tasks() -> str | None:
        dead = sorted(name for name, up in supervisor.alive().items() if not up)
        return f"not running: {', '.join(dead)}" if dead else None

    return {
        "bus": bus_connected,
        "consumers": consumers,
        "database": database,
        "tasks": tasks,
    }


def _bound(
    task: Callable[[Callable[[], None]], Coroutine[Any, Any, None]],
    wake: Callable[[], None],
) -> Callable[[], Coroutine[Any, Any, None]]:
    return lambda: task(wake)


def _start_inbox_retention(
    supervisor: Supervisor,
    *,
    pool: asyncpg.Pool,
    schema: str,
    settings: WorkerSettings,
    clock: Callable[[], datetime],
    wake: Callable[[], None],
) -> None:
    """Prune the inbox hourly, once per hour across the worker's replicas."""

    async def fire(conn: asyncpg.Connection, _period: datetime, _now: datetime) -> None:
        await prune_inbox(
            conn,
            schema,
            keep_ids=settings.inbox_retention,
            keep_replies=settings.inbox_reply_retention,
        )

    scheduler = Scheduler(
        pool=pool,
        schema=schema,
        name="inbox-retention",
        schedule=Interval(3600),
        fire=fire,
        clock=clock,
    )
    supervisor.start(f"{schema}-inbox-retention", _bound(scheduler.run, wake))
