"""Wiring of the device worker, and nothing else: ``python -m device_worker``."""

from __future__ import annotations

import asyncio

import asyncpg

from contracts.ca import CertificateCreated, CertificateStatusUpdate
from contracts.dms import DeviceOwnershipUpdate, DMSCreated, DMSUpdate
from device_worker.handlers import (
    COMMAND_HANDLERS,
    EVENT_HANDLERS,
    DeviceContext,
    DeviceDeps,
)
from device_worker.settings import Settings
from device_worker.store import SCHEMA, Store
from runtime.bus import Bus
from runtime.service import run_service
from runtime.worker import Plan, QueueSpec, serve_worker

__all__ = ["main", "serve"]


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings."""
    deps = DeviceDeps(store=Store())

    async def setup(_pool: asyncpg.Pool, _bus: Bus) -> Plan:
        return Plan(
            context=DeviceContext.factory(deps),
            queues=[
                # Events first: once commands are answered, no certificate event is missed.
                QueueSpec(
                    "events",
                    [
                        ("events", CertificateCreated.TYPE),
                        ("events", CertificateStatusUpdate.TYPE),
                        ("events", DMSCreated.TYPE),
                        ("events", DMSUpdate.TYPE),
                        ("events", DeviceOwnershipUpdate.TYPE),
                    ],
                    EVENT_HANDLERS,
                    prefetch=settings.device_prefetch,
                ),
                QueueSpec(
                    "commands",
                    [("commands", "device.*")],
                    COMMAND_HANDLERS,
                    prefetch=settings.device_prefetch,
                ),
            ],
        )

    await serve_worker(
        package="device_worker",
        schema=SCHEMA,
        settings=settings,
        setup=setup,
        stop=stop,
    )


def main() -> None:
    run_service("device_worker", Settings, serve)


if __name__ == "__main__":
    main()
