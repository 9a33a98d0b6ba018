"""One function per device message type, plus the routing tables at the bottom.

A handler takes a validated contract and a ``DeviceContext`` (connection in an open
transaction, ``now``, dependencies) and returns an ``Outcome``; the dispatcher writes its
events to the outbox in the same transaction. Status rules live in ``status.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from contracts.ca import (
    CertificateCreated,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    RevocationReason,
    RevokeCertificate,
    RevokeDeviceCertificates,
)
from contracts.devices import (
    DecommissionDevice,
    DeviceCreated,
    DeviceDecommissioned,
    DeviceIdentityUpdate,
    Devices,
    DeviceStatusUpdate,
    GetDevice,
    ListDevices,
    RegisterDevice,
)
from contracts.dms import (
    DeviceOwnership,
    DeviceOwnershipUpdate,
    DMSCreated,
    DMSStatus,
    DMSUpdate,
    DMSView,
)
from contracts.envelope import CloudEvent, new_message
from contracts.message import Message
from contracts.names import Source
from contracts.pki import DEFAULT_SLOT
from device_worker.errors import (
    AlreadyDecommissioned,
    DeviceExists,
    DeviceNotFound,
    DMSNotFound,
    DMSRevoked,
)
from device_worker.status import (
    SlotCertificate,
    SlotState,
    apply_certificate_status,
    bind_certificate,
    derive_status,
)
from device_worker.store import SCHEMA, Device, Store
from runtime.outbox import write_commands
from runtime.routes import Batch, Context, Mode, Outcome, Route, routes

__all__ = ["COMMAND_HANDLERS", "EVENT_HANDLERS", "DeviceContext", "DeviceDeps"]

SOURCE = Source.DEVICES

_LIVE = {CertificateStatus.ACTIVE, CertificateStatus.ABOUT_TO_EXPIRE}


@dataclass(frozen=True, slots=True)
class DeviceDeps:
    """What every device handler may use, built once in ``__main__``."""

    store: Store


# Per message: the connection, the clock reading, the causing request, the deps.
DeviceContext = Context[DeviceDeps]


def _event(ctx: DeviceContext, device_id: str, data: Message) -> CloudEvent:
    return new_message(
        source=SOURCE,
        subject=f"device/{device_id}",
        data=data,
        now=ctx.now,
        correlation_id=ctx.correlation_id,
    )


def _change(
    ctx: DeviceContext,
    model: type[DeviceStatusUpdate | DeviceIdentityUpdate],
    before: Device,
    after: Device,
) -> CloudEvent:
    """``{"previous": ..., "updated": ...}`` of the device, as DESIGN §2 has updates."""
    data = model(previous=before.view(), updated=after.view())
    return _event(ctx, before.id, data)


def _revocations(ctx: DeviceContext, serials: Sequence[str]) -> list[CloudEvent]:
    """Fire-and-forget ``certificate.revoke`` commands: the CA worker acts, nobody replies."""
    return [
        new_message(
            source=SOURCE,
            subject=f"certificate/{serial}",
            data=RevokeCertificate(
                serial=serial, reason=RevocationReason.CESSATION_OF_OPERATION
            ),
            now=ctx.now,
            correlation_id=ctx.correlation_id,
        )
        for serial in serials
    ]


def _live_serials(slots: Sequence[SlotState]) -> list[str]:
    return [
        s.certificate.serial
        for s in slots
        if s.certificate is not None and s.certificate.status in _LIVE
    ]


def _serials(slots: Sequence[SlotState]) -> dict[str, str | None]:
    return {
        s.name: None if s.certificate is None else s.certificate.serial for s in slots
    }


async def register_device(cmd: RegisterDevice, ctx: DeviceContext) -> Outcome:
    if cmd.dms is not None:
        status = await ctx.deps.store.dms_status(ctx.conn, cmd.dms)
        if status is None:
            raise DMSNotFound(cmd.dms)
        if status == DMSStatus.REVOKED:
            raise DMSRevoked(cmd.dms)
    device = await ctx.deps.store.insert_device(
        ctx.conn, device_id=cmd.id, dms=cmd.dms, slots=cmd.slots, now=ctx.now
    )
    if device is None:
        raise DeviceExists(cmd.id)
    view = device.view()
    events = [_event(ctx, cmd.id, DeviceCreated.of(view))]
    if cmd.dms is not None:
        # The DMS worker gives the device to this DMS (unless one enrolled it first).
        owner = DeviceOwnership(device_id=cmd.id, dms=cmd.dms, since=ctx.now)
        update = DeviceOwnershipUpdate(previous=None, updated=owner)
        events.append(_event(ctx, cmd.id, update))
    return Outcome(view, events)


async def decommission_device(cmd: DecommissionDevice, ctx: DeviceContext) -> Outcome:
    """Retire a device for good and revoke every certificate it was issued
    (cessationOfOperation)."""
    store = ctx.deps.store
    device = await store.get_device(ctx.conn, cmd.id, lock=True)
    if device is None:
        raise DeviceNotFound(cmd.id)
    if device.decommissioned_at is not None:
        raise AlreadyDecommissioned(cmd.id)
    await store.mark_decommissioned(ctx.conn, cmd.id, ctx.now)
    # Every certificate the device was ever issued, not only what its slots hold now
    # (a superseded one may still be valid): the CA worker knows them all.
    revoke_all = new_message(
        source=SOURCE,
        subject=f"device/{cmd.id}",
        data=RevokeDeviceCertificates(device_id=cmd.id),
        now=ctx.now,
        correlation_id=ctx.correlation_id,
    )
    await write_commands(ctx.conn, SCHEMA, [revoke_all])
    updated = replace(
        device,
        status=derive_status(device.slots, decommissioned=True),
        decommissioned_at=ctx.now,
    )
    view = updated.view()
    return Outcome(
        view,
        [
            _change(ctx, DeviceStatusUpdate, device, updated),
            # Its own routing key: the DMS worker needs only this fact, not every
            # status change of every enrollment (DESIGN §2, type = routing key).
            _event(ctx, cmd.id, DeviceDecommissioned.of(view)),
        ],
    )


async def get_device(query: GetDevice, ctx: DeviceContext) -> Outcome:
    device = await ctx.deps.store.get_device(ctx.conn, query.id)
    if device is None:
        raise DeviceNotFound(query.id)
    return Outcome(device.view())


async def list_devices(query: ListDevices, ctx: DeviceContext) -> Outcome:
    devices = await ctx.deps.store.list_devices(
        ctx.conn, status=query.status, limit=query.limit, after=query.after
    )
    return Outcome(Devices(items=[d.view() for d in devices]))


async def record_certificates(
    batch: Batch[CertificateCreated, DeviceContext],
) -> list[Outcome]:
    """``certificate.create``: an enrollment certificate fills its device's slot;
    certificates not issued through enrollment name no device and change nothing."""
    return await _observe(
        [(ctx, certificate.device_id, certificate) for certificate, ctx in batch.items]
    )


async def record_certificate_statuses(
    batch: Batch[CertificateStatusUpdate, DeviceContext],
) -> list[Outcome]:
    """A batch of ``certificate.status.update`` (a sweep sends thousands): the devices
    holding those certificates are read with one statement and saved with one more.

    An enrollment certificate also names its device: if its update overtook its
    ``certificate.create`` (one queue, consumed concurrently), binding it here keeps
    the status, and the late create changes nothing. The rules are order-free.
    """
    ctx, items = batch.ctx, batch.items
    store = ctx.deps.store
    holders = await store.devices_holding(
        ctx.conn, [update.updated.serial for update, _ in items]
    )
    before = {device.id: device for device in holders.values()}
    now = dict(before)
    outcomes: list[Outcome | None] = []
    for update, item_ctx in items:
        held = holders.get(update.updated.serial)
        if held is None:
            outcomes.append(None)
            continue
        device, outcome = _observed(item_ctx, now[held.id], update.updated)
        now[held.id] = device
        outcomes.append(outcome)
    await store.save_devices(ctx.conn, [(before[i], now[i]) for i in now])
    unheld = [
        (item_ctx, update.updated.device_id, update.updated)
        for outcome, (update, item_ctx) in zip(outcomes, items, strict=True)
        if outcome is None
    ]
    bound = iter(await _observe(unheld) if unheld else [])
    return [next(bound) if outcome is None else outcome for outcome in outcomes]


async def _observe(
    items: Sequence[tuple[DeviceContext, str | None, CertificateView]],
) -> list[Outcome]:
    """Bind and update each certificate in the device it names, in order, with the
    devices read (or created) with one statement and saved with one more; the events
    each change causes. A certificate naming no device changes nothing."""
    ctx = items[0][0]
    wanted: dict[str, str | None] = {}
    for _, device_id, certificate in items:
        if device_id is not None:
            wanted.setdefault(device_id, certificate.dms)
    if not wanted:
        return [Outcome() for _ in items]
    store = ctx.deps.store
    devices = await store.get_or_create_devices(ctx.conn, wanted, ctx.now)
    before = {device_id: device for device_id, (device, _) in devices.items()}
    created = {device_id for device_id, (_, new) in devices.items() if new}
    now = dict(before)
    outcomes = []
    for item_ctx, device_id, certificate in items:
        if device_id is None:
            outcomes.append(Outcome())
            continue
        device, outcome = _observed(item_ctx, now[device_id], certificate)
        now[device_id] = device
        if device_id in created:
            created.discard(device_id)
            view = before[device_id].view()
            outcome = replace(
                outcome,
                events=[
                    _event(item_ctx, device_id, DeviceCreated.of(view)),
                    *outcome.events,
                ],
            )
        outcomes.append(outcome)
    await store.save_devices(ctx.conn, [(before[i], now[i]) for i in now])
    return outcomes


def _observed(
    ctx: DeviceContext, device: Device, certificate: CertificateView
) -> tuple[Device, Outcome]:
    """``device`` after ``certificate`` was bound and its status applied, and the
    events (and revocations) that change causes. No I/O."""
    slots = device.slots
    if certificate.device_id == device.id:
        slots = bind_certificate(
            slots,
            certificate.slot or DEFAULT_SLOT,
            SlotCertificate(
                serial=certificate.serial,
                status=certificate.status,
                not_before=certificate.not_before,
                not_after=certificate.not_after,
                replaces=certificate.replaces,
            ),
        )
    slots = apply_certificate_status(slots, certificate.serial, certificate.status)
    decommissioned = device.decommissioned_at is not None
    updated = replace(
        device, slots=slots, status=derive_status(slots, decommissioned=decommissioned)
    )
    events: list[CloudEvent] = []
    commands: list[CloudEvent] = []
    if _serials(slots) != _serials(device.slots):
        events.append(_change(ctx, DeviceIdentityUpdate, device, updated))
        if (
            decommissioned
        ):  # DESIGN §4: a decommissioned device keeps no live certificate
            new = set(_live_serials(slots)) - set(_live_serials(device.slots))
            commands += _revocations(ctx, sorted(new))
    if updated.status != device.status:
        events.append(_change(ctx, DeviceStatusUpdate, device, updated))
    return updated, Outcome(None, events, commands=commands)


async def record_dms(dms: DMSView, ctx: DeviceContext) -> Outcome:
    """``dms.create``: a DMS devices may be registered for."""
    await ctx.deps.store.record_dms(ctx.conn, dms.name, dms.status.value)
    return Outcome()


async def record_dms_update(update: DMSUpdate, ctx: DeviceContext) -> Outcome:
    """``dms.update``: a revoked DMS gets no new devices."""
    return await record_dms(update.updated, ctx)


async def record_ownership(
    update: DeviceOwnershipUpdate, ctx: DeviceContext
) -> Outcome:
    """``device.ownership.update`` of a transfer: the device now shows the DMS it was
    given to. (One without a previous owner is this worker's own registration.)"""
    if update.previous is not None:
        owner = update.updated
        await ctx.deps.store.set_dms(ctx.conn, owner.device_id, owner.dms)
    return Outcome()


COMMAND_HANDLERS = routes(
    Route(RegisterDevice, register_device),
    Route(DecommissionDevice, decommission_device),
    Route(GetDevice, get_device, mode=Mode.READ),
    Route(ListDevices, list_devices, mode=Mode.READ),
)

EVENT_HANDLERS = routes(
    Route(CertificateCreated, handle_batch=record_certificates),
    Route(CertificateStatusUpdate, handle_batch=record_certificate_statuses),
    Route(DMSCreated, record_dms),
    Route(DMSUpdate, record_dms_update),
    Route(DeviceOwnershipUpdate, record_ownership),
)
