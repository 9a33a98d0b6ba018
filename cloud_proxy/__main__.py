"""Wiring of the cloud proxy, and nothing else: ``python -m cloud_proxy``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cloud_proxy.aws import AwsIotProvider
from cloud_proxy.handlers import (
    COMMAND_HANDLERS,
    EVENT_HANDLERS,
    CloudContext,
    CloudDeps,
)
from cloud_proxy.items import Items
from cloud_proxy.provider import CloudProvider
from cloud_proxy.settings import Settings
from cloud_proxy.store import SCHEMA, Store
from cloud_proxy.syncer import Syncer, Timing
from contracts.ca import (
    CACreated,
    CAStatusUpdate,
    CertificateCreated,
    CertificateStatusUpdate,
)
from contracts.devices import DeviceDecommissioned
from runtime.bus import Bus
from runtime.schedule import Scheduler
from runtime.service import run_service
from runtime.worker import Plan, QueueSpec, serve_worker

__all__ = ["main", "serve"]


async def _open_providers(settings: Settings) -> dict[str, CloudProvider]:
    endpoint = settings.cloud_aws_endpoint_url
    providers: dict[str, CloudProvider] = {}
    for name, profile in settings.connectors().items():
        providers[name] = await AwsIotProvider.open(
            profile=profile,
            region=settings.cloud_aws_region,
            endpoint_url=None if endpoint is None else str(endpoint),
            max_attempts=settings.cloud_aws_max_attempts,
        )
    return providers


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings."""
    store, items = Store(), Items()
    deps = CloudDeps(
        store=store, items=items, connectors=frozenset(settings.connectors())
    )

    async def setup(pool: asyncpg.Pool, bus: Bus) -> Plan:
        providers = await _open_providers(settings)
        tasks: list[Callable[[Callable[[], None]], Coroutine[Any, Any, None]]] = []
        if providers:  # none configured: keep the projection, touch no cloud
            syncer = Syncer(
                pool=pool,
                store=store,
                items=items,
                bus=bus,
                providers=providers,
                clock=clock,
                timing=Timing(
                    retry_base_seconds=settings.cloud_retry_base_seconds,
                    retry_max_seconds=settings.cloud_retry_max_seconds,
                    batch=settings.cloud_sync_batch,
                    concurrency=settings.cloud_sync_concurrency,
                    request_timeout_seconds=settings.cloud_request_timeout_seconds,
                ),
            )
            tasks.append(syncer.run)
            schedule = settings.schedule()
            if schedule is not None:

                async def request(
                    conn: asyncpg.Connection, _period: datetime, now: datetime
                ) -> None:
                    await items.request_reconciliation(conn, sorted(providers), now)

                tasks.append(
                    Scheduler(
                        pool=pool,
                        schema=SCHEMA,
                        name="cloud-reconcile",
                        schedule=schedule,
                        fire=request,
                        clock=clock,
                    ).run
                )
        return Plan(
            context=CloudContext.factory(deps),
            queues=[
                # Events first: once commands are answered, no PKI event is missed.
                QueueSpec(
                    "events",
                    [
                        ("events", CACreated.TYPE),
                        ("events", CAStatusUpdate.TYPE),
                        ("events", CertificateCreated.TYPE),
                        ("events", CertificateStatusUpdate.TYPE),
                        ("events", DeviceDecommissioned.TYPE),
                    ],
                    EVENT_HANDLERS,
                    prefetch=settings.cloud_prefetch,
                ),
                QueueSpec(
                    "commands",
                    [("commands", "cloud.*")],
                    COMMAND_HANDLERS,
                    prefetch=settings.cloud_prefetch,
                ),
            ],
            on_close=[provider.close for provider in providers.values()],
            tasks=tasks,
        )

    await serve_worker(
        package="cloud_proxy",
        schema=SCHEMA,
        settings=settings,
        setup=setup,
        stop=stop,
        clock=clock,
    )


def main() -> None:
    run_service("cloud_proxy", Settings, serve)


if __name__ == "__main__":
    main()
