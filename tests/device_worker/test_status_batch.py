"""A batch of ``certificate.status.update`` (``record_certificate_statuses``) or of
``certificate.create`` (``record_certificates``) ends exactly where the same messages
one at a time (the route's derived one-message handler, a batch of one), applied in
the same order, end: same devices, same events. On real PostgreSQL, in transactions
that are rolled back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from contracts.ca import (
    CertificateCreated,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
)
from contracts.devices import DeviceStatus, DeviceView
from device_worker.handlers import EVENT_HANDLERS, DeviceContext, DeviceDeps
from device_worker.store import Store
from runtime.routes import Outcome
from tests.device_worker.device_bus import enrollment_certificate
from tests.pki import unique

pytestmark = [pytest.mark.postgres]

CREATED = EVENT_HANDLERS[CertificateCreated.TYPE]
STATUS = EVENT_HANDLERS[CertificateStatusUpdate.TYPE]

NOW = datetime.now(UTC)
ABOUT = CertificateStatus.ABOUT_TO_EXPIRE
EXPIRED = CertificateStatus.EXPIRED
REVOKED = CertificateStatus.REVOKED


def moved(
    certificate: CertificateView, status: CertificateStatus
) -> CertificateStatusUpdate:
    return CertificateStatusUpdate(
        previous=certificate,
        updated=certificate.model_copy(update={"status": status}),
    )


Steps = Callable[[DeviceContext], Awaitable[Sequence[Outcome]]]
Result = tuple[list[DeviceView | None], list[tuple[str, str | None, dict[str, Any]]]]


async def _after(pool: asyncpg.Pool, steps: Steps, devices: Sequence[str]) -> Result:
    """Devices and the events of ``steps``, in a transaction that is then undone."""
    store = Store()
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            outcomes = await steps(DeviceContext(conn, NOW, None, DeviceDeps(store)))
            found = [await store.get_device(conn, device_id) for device_id in devices]
        finally:
            await tx.rollback()
    views = [None if device is None else device.view() for device in found]
    events = [(e.type, e.subject, e.data) for o in outcomes for e in o.events]
    return views, events


async def _outcome(
    pool: asyncpg.Pool,
    seeds: Sequence[CertificateView],
    updates: Sequence[CertificateStatusUpdate],
    devices: Sequence[str],
    *,
    batch: bool,
) -> Result:
    """Devices and events after ``updates``, as one batch or one by one."""

    async def steps(ctx: DeviceContext) -> Sequence[Outcome]:
        for certificate in seeds:
            await CREATED.one(CertificateCreated.of(certificate), ctx)
        if batch:
            return await STATUS.many([(u, ctx) for u in updates])
        return [await STATUS.one(u, ctx) for u in updates]

    return await _after(pool, steps, devices)


async def test_a_batch_ends_where_one_by_one_ends(
    db: asyncpg.Pool, device_service: None
) -> None:
    a, b, c = unique("batch-a"), unique("batch-b"), unique("batch-c")
    a1, b1, c1 = (enrollment_certificate(d) for d in (a, b, c))
    no_device = enrollment_certificate(unique("x")).model_copy(
        update={"device_id": None, "slot": None}
    )
    updates = [
        moved(a1, ABOUT),
        moved(b1, REVOKED),
        moved(a1, EXPIRED),  # the same device twice in one batch
        moved(c1, ABOUT),  # no slot holds it yet: overtook its certificate.create
        moved(no_device, EXPIRED),  # not an enrollment certificate: nothing to do
        moved(b1, EXPIRED),  # REVOKED is final
    ]
    one_by_one = await _outcome(db, [a1, b1], updates, [a, b, c], batch=False)
    batched = await _outcome(db, [a1, b1], updates, [a, b, c], batch=True)

    assert one_by_one == batched
    views, events = batched
    assert [
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
        DeviceStatus.REQUIRES_ACTION,
    ] == [None if v is None else v.status for v in views]
    assert [
        ("device.status.update", f"device/{a}"),
        ("device.status.update", f"device/{b}"),
        ("device.status.update", f"device/{a}"),
        ("device.create", f"device/{c}"),
        ("device.identity.update", f"device/{c}"),
        ("device.status.update", f"device/{c}"),
    ] == [(type_, subject) for type_, subject, _ in events]


async def test_a_batch_of_certificates_ends_where_one_by_one_ends(
    db: asyncpg.Pool, device_service: None
) -> None:
    a, b, registered = unique("new-a"), unique("new-b"), unique("registered")
    a1 = enrollment_certificate(a)
    a2 = enrollment_certificate(a).model_copy(update={"slot": "tpm"})
    a3 = enrollment_certificate(a).model_copy(update={"replaces": a1.serial})
    b1 = enrollment_certificate(b)
    r1 = enrollment_certificate(registered)
    no_device = enrollment_certificate(unique("x")).model_copy(
        update={"device_id": None, "slot": None}
    )
    # Two slots of one device, a renewal in the same batch, a certificate with no
    # device, and a device registered before its first certificate.
    created = [a1, b1, a2, no_device, a3, r1]

    def steps(batch: bool) -> Steps:
        async def run(ctx: DeviceContext) -> Sequence[Outcome]:
            await ctx.deps.store.insert_device(
                ctx.conn, device_id=registered, dms=None, slots=["default"], now=NOW
            )
            events = [CertificateCreated.of(c) for c in created]
            if batch:
                return await CREATED.many([(e, ctx) for e in events])
            return [await CREATED.one(e, ctx) for e in events]

        return run

    devices = [a, b, registered]
    one_by_one = await _after(db, steps(batch=False), devices)
    batched = await _after(db, steps(batch=True), devices)

    assert one_by_one == batched
    views, events = batched
    assert [DeviceStatus.FULLY_PROVISIONED] * 3 == [
        None if v is None else v.status for v in views
    ]
    assert views[0] is not None
    assert {"default": a3.serial, "tpm": a2.serial} == {
        slot.name: slot.certificate_serial for slot in views[0].slots
    }
    assert [
        ("device.create", f"device/{a}"),
        ("device.identity.update", f"device/{a}"),
        ("device.status.update", f"device/{a}"),
        ("device.create", f"device/{b}"),
        ("device.identity.update", f"device/{b}"),
        ("device.status.update", f"device/{b}"),
        ("device.identity.update", f"device/{a}"),
        ("device.identity.update", f"device/{a}"),
        ("device.identity.update", f"device/{registered}"),
        ("device.status.update", f"device/{registered}"),
    ] == [(type_, subject) for type_, subject, _ in events]
