"""Wiring of the DMS worker, and nothing else: ``python -m dms_worker``."""

from __future__ import annotations

import asyncio

import asyncpg

from contracts.ca import CertificateCreated, CertificateStatusUpdate
from contracts.devices import DeviceDecommissioned
from contracts.dms import DeviceOwnershipUpdate
from dms_worker.ca_client import CAClient
from dms_worker.handlers import (
    EVENT_HANDLERS,
    HANDLERS,
    INTERNAL_CA,
    DmsContext,
    DmsDeps,
)
from dms_worker.settings import Settings
from dms_worker.store import Store
from runtime.bus import Bus
from runtime.service import run_service
from runtime.worker import Plan, QueueSpec, serve_worker

__all__ = ["main", "serve"]


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set. Tests call this in-process with their own settings."""

    async def setup(_pool: asyncpg.Pool, bus: Bus) -> Plan:
        cas = CAClient(bus, timeout=settings.dms_ca_timeout)
        # Every enrollment checks the DMS certificate against it, so wait for it once.
        dms_manager = await cas.wait_for(
            INTERNAL_CA, deadline=settings.dms_startup_deadline
        )
        deps = DmsDeps(
            store=Store(),
            cas=cas,
            dms_manager_ca=dms_manager.certificate,
            settings=settings,
        )

        return Plan(
            context=DmsContext.factory(deps),
            queues=[
                QueueSpec(
                    "commands",
                    [("commands", "dms.*"), ("commands", "enrollment.*")],
                    HANDLERS,
                    prefetch=settings.dms_prefetch,
                ),
                QueueSpec(
                    "events",
                    [
                        ("events", CertificateCreated.TYPE),
                        ("events", CertificateStatusUpdate.TYPE),
                        ("events", DeviceDecommissioned.TYPE),
                        ("events", DeviceOwnershipUpdate.TYPE),
                    ],
                    EVENT_HANDLERS,
                    prefetch=settings.dms_prefetch,
                ),
            ],
        )

    await serve_worker(
        package="dms_worker", schema="dms", settings=settings, setup=setup, stop=stop
    )


def main() -> None:
    run_service("dms_worker", Settings, serve)


if __name__ == "__main__":
    main()
