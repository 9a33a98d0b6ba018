"""Wiring of the CA worker, and nothing else: ``python -m ca_worker``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import CollectorRegistry

from ca_worker.authorities import close_authorities, open_authorities
from ca_worker.cas import ensure_internal_ca, report_missing_keys
from ca_worker.context import CaContext, CaDeps
from ca_worker.handlers import HANDLERS
from ca_worker.inspection import inspection_handlers
from ca_worker.metrics import CAMetrics
from ca_worker.publication import VA_HANDLERS
from ca_worker.settings import Settings
from ca_worker.store import Store
from ca_worker.sweeps import SHARD_HANDLERS, SWEEP_HANDLERS, fire_scheduled_sweep
from contracts.sweeps import GetSweep, RunSweep, SweepShard
from engines import EngineError, EngineUnavailable
from runtime.bus import Bus
from runtime.schedule import Scheduler
from runtime.service import run_service
from runtime.worker import Plan, QueueSpec, serve_worker

__all__ = ["main", "serve"]

log = structlog.get_logger("ca_worker")


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings
    and, to walk through expiry without waiting, their own ``clock``."""
    for warning in settings.transport_warnings():
        log.warning("insecure_setting", reason=warning)
    # Engines first: a wrong engine setting stops the process before anything else.
    authorities = await asyncio.to_thread(
        open_authorities, settings.engine_configs(), settings.va_url_for
    )
    registry = CollectorRegistry()
    metrics = CAMetrics(registry)
    deps = CaDeps(
        store=Store(),
        authorities=metrics.timed(authorities),
        default_engine=settings.engine,
        sweep_shards=settings.sweep_shards,
    )

    async def setup(pool: asyncpg.Pool, _bus: Bus) -> Plan:
        async with pool.acquire() as conn:
            await ensure_internal_ca(conn, deps, clock())
            await report_missing_keys(conn, deps)
        schedule = settings.schedule()
        tasks = []
        if schedule is not None:
            scheduler = Scheduler(
                pool=pool,
                schema="ca",
                name="sweep",
                schedule=schedule,
                fire=lambda conn, _period, now: fire_scheduled_sweep(conn, deps, now),
                clock=clock,
            )
            tasks.append(scheduler.run)
        return Plan(
            context=CaContext.factory(deps),
            queues=[
                QueueSpec(
                    "commands",
                    [
                        ("commands", "ca.*"),
                        ("commands", "certificate.*"),
                        ("commands", "profile.*"),
                        ("commands", RunSweep.TYPE),
                        ("commands", GetSweep.TYPE),
                        *(("commands", type_) for type_ in VA_HANDLERS),
                    ],
                    {
                        **HANDLERS,
                        **SWEEP_HANDLERS,
                        **VA_HANDLERS,
                        **inspection_handlers(settings.engine_configs()),
                    },
                    prefetch=settings.ca_prefetch,
                ),
                QueueSpec(
                    "sweeps",
                    [("commands", SweepShard.TYPE)],
                    SHARD_HANDLERS,
                    prefetch=settings.sweep_prefetch,
                ),
            ],
            tasks=tasks,
            transient=(EngineUnavailable,),
            refresh=[lambda: metrics.read(pool)],
        )

    try:
        await serve_worker(
            package="ca_worker",
            schema="ca",
            settings=settings,
            setup=setup,
            stop=stop,
            clock=clock,
            registry=registry,
        )
    finally:
        # After serve_worker: its consumers and pool are closed, nothing signs any more.
        close_authorities(authorities.values())


def main() -> None:
    run_service("ca_worker", Settings, serve, startup_errors=(EngineError,))


if __name__ == "__main__":
    main()
