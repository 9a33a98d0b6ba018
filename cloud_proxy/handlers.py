"""One function per message type the cloud proxy takes, plus the routing tables.

Events only update the projection and make the items they affect due; the syncer
(``syncer.py``) talks to the platforms, outside any message's transaction, so a slow
or unreachable cloud never holds up the bus. Commands manage connections and report.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from cloud_proxy.errors import UnknownConnector
from cloud_proxy.items import Items
from cloud_proxy.store import Store
from contracts.ca import (
    CACreated,
    CAStatusUpdate,
    CAView,
    CertificateCreated,
    CertificateStatusUpdate,
    CertificateView,
)
from contracts.cloud import (
    CloudStatus,
    ConnectCA,
    ConnectionMode,
    GetCloudStatus,
    Reconcile,
)
from contracts.devices import DeviceDecommissioned, DeviceView
from contracts.envelope import CloudEvent
from runtime.errors import Invalid
from runtime.routes import ContextFactory, Mode, Outcome, Route, routes

__all__ = ["COMMAND_HANDLERS", "EVENT_HANDLERS", "CloudContext", "CloudDeps"]


@dataclass(frozen=True, slots=True)
class CloudDeps:
    """What every handler may use, built once in ``__main__``."""

    store: Store
    items: Items
    # Connectors this process is configured for (CLOUD_CONNECTORS).
    connectors: AbstractSet[str]


@dataclass(frozen=True, slots=True)
class CloudContext:
    conn: asyncpg.Connection
    now: datetime
    deps: CloudDeps

    @classmethod
    def factory(cls, deps: CloudDeps) -> ContextFactory:
        """How the dispatcher makes one per message (``runtime.routes``)."""

        def made(
            conn: asyncpg.Connection, _envelope: CloudEvent, now: datetime
        ) -> CloudContext:
            return cls(conn, now, deps)

        return made


# --- events: the projection --------------------------------------------------------


async def record_ca(view: CAView, ctx: CloudContext) -> Outcome:
    await ctx.deps.store.upsert_ca(
        ctx.conn, view.name, view.certificate_pem, view.status.value
    )
    await ctx.deps.items.touch(ctx.conn, ctx.now, cas=[view.name])
    return Outcome()


async def record_ca_status(update: CAStatusUpdate, ctx: CloudContext) -> Outcome:
    return await record_ca(update.updated, ctx)


async def record_certificate(view: CertificateView, ctx: CloudContext) -> Outcome:
    changed = await ctx.deps.store.upsert_certificate(ctx.conn, view)
    await ctx.deps.items.touch(ctx.conn, ctx.now, serials=changed)
    return Outcome()


async def record_certificate_status(
    update: CertificateStatusUpdate, ctx: CloudContext
) -> Outcome:
    return await record_certificate(update.updated, ctx)


async def record_decommission(device: DeviceView, ctx: CloudContext) -> Outcome:
    at = device.decommissioned_at or ctx.now
    serials = await ctx.deps.store.decommission(ctx.conn, device.id, at)
    await ctx.deps.items.touch(ctx.conn, ctx.now, serials=serials)
    return Outcome()


# --- commands ----------------------------------------------------------------------


async def connect_ca(request: ConnectCA, ctx: CloudContext) -> Outcome:
    """Connect a CA to a connector (again: update how). Its CA and certificates become
    due; what the projection has not seen yet is read from the CA worker (backfill)."""
    if request.connector not in ctx.deps.connectors:
        raise UnknownConnector(request.connector, ctx.deps.connectors)
    if request.mode is not ConnectionMode.JITP and request.provisioning_role_arn:
        raise Invalid("provisioning_role_arn: only a jitp connection uses a role")
    view = await ctx.deps.store.connect(ctx.conn, request, ctx.now)
    await ctx.deps.items.touch_connection(ctx.conn, request.ca, ctx.now)
    return Outcome(view)


async def get_status(request: GetCloudStatus, ctx: CloudContext) -> Outcome:
    return Outcome(await _status(request.connector, ctx))


async def reconcile(request: Reconcile, ctx: CloudContext) -> Outcome:
    """Ask for a reconciliation now; the answer is the status before it runs."""
    if request.connector is not None and request.connector not in ctx.deps.connectors:
        raise UnknownConnector(request.connector, ctx.deps.connectors)
    names = [request.connector] if request.connector else sorted(ctx.deps.connectors)
    await ctx.deps.items.request_reconciliation(ctx.conn, names, ctx.now)
    return Outcome(await _status(request.connector, ctx))


async def _status(connector: str | None, ctx: CloudContext) -> CloudStatus:
    found = await ctx.deps.store.status(
        ctx.conn, sorted(ctx.deps.connectors), set(ctx.deps.connectors)
    )
    if connector is not None:
        found = [status for status in found if status.connector == connector]
        if not found:
            raise UnknownConnector(connector, ctx.deps.connectors)
    return CloudStatus(items=found)


COMMAND_HANDLERS = routes(
    Route(ConnectCA, connect_ca),
    Route(GetCloudStatus, get_status, mode=Mode.READ),
    Route(Reconcile, reconcile),
)

EVENT_HANDLERS = routes(
    Route(CACreated, record_ca),
    Route(CAStatusUpdate, record_ca_status),
    Route(CertificateCreated, record_certificate),
    Route(CertificateStatusUpdate, record_certificate_status),
    Route(DeviceDecommissioned, record_decommission),
)
