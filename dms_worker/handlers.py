"""One function per DMS message type, plus the routing tables ``HANDLERS`` (commands and
queries) and ``EVENT_HANDLERS`` (events of the CA and device workers) at the bottom.

A handler takes a validated contract and a ``DmsContext`` and returns an ``Outcome``.
The enrollment pipeline's handlers are in ``enrollment``; their route is here.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from cryptography import x509

from contracts.ca import (
    INTERNAL_CA,
    CertificateCreated,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    RevocationReason,
    RevokeCertificate,
)
from contracts.devices import (
    DeviceDecommissioned,
    DeviceStatus,
    DeviceView,
)
from contracts.dms import (
    AuthorizeEnrollment,
    CreateDMS,
    DeviceOwnershipUpdate,
    DMSCreated,
    DMSEnrolled,
    DMSReenrolled,
    DMSs,
    DMSStatus,
    DMSUpdate,
    DMSView,
    EnrollmentRequest,
    GetDMS,
    ListDMSs,
    RenewDMS,
    RevokeDMS,
    TransferDevice,
    UpdateAuthorizedCAs,
    UpdateDMSPolicy,
)
from contracts.envelope import CloudEvent
from contracts.pki import DEFAULT_SLOT
from dms_worker.ca_client import KnownCA
from dms_worker.context import DmsContext, DmsDeps, csr, message
from dms_worker.enrollment import authorize_only, authorize_requests
from dms_worker.errors import (
    AlreadyRevoked,
    DMSExists,
    DMSNotFound,
    DMSRevoked,
    InternalCARefused,
)
from dms_worker.store import NewDMS
from runtime.outbox import write_commands
from runtime.routes import Batch, Events, Mode, Outcome, Route, routes

__all__ = [
    "EVENT_HANDLERS",
    "HANDLERS",
    "INTERNAL_CA",
    "DmsContext",
    "DmsDeps",
]

# Names the ids of dms.enroll / dms.reenroll (RFC 9562 §5.5): one per certificate.
_ANNOUNCEMENTS = uuid.UUID("5b0c3a52-3f3e-4d55-9b1e-0d7a4c2f9e61")
SCHEMA = "dms"


def _update(ctx: DmsContext, previous: DMSView, updated: DMSView) -> CloudEvent:
    return message(
        ctx,
        f"dms/{updated.name}",
        DMSUpdate(previous=previous, updated=updated),
    )


async def _allowable_ca(ctx: DmsContext, name: str) -> KnownCA:
    """A CA a DMS may have in its allow-list: it exists and is not internal."""
    ca = await ctx.deps.cas.get(name)
    if ca.internal:
        raise InternalCARefused(name)
    return ca


# --- commands and queries ------------------------------------------------------------


async def create_dms(cmd: CreateDMS, ctx: DmsContext) -> Outcome:
    store = ctx.deps.store
    csr(cmd.csr_pem)  # refuse garbage before asking the CA worker
    # Held to commit: a concurrent twin waits here, then finds the row, so no second
    # DMS certificate is signed for nothing.
    await store.lock_name(ctx.conn, cmd.name)
    if await store.get_dms(ctx.conn, cmd.name) is not None:
        raise DMSExists(cmd.name)
    for name in cmd.authorized_cas:
        await _allowable_ca(ctx, name)
    if cmd.profile is not None:
        await ctx.deps.cas.check_profile(cmd.profile)
    issued = await ctx.deps.cas.sign(
        ca=INTERNAL_CA,
        csr_pem=cmd.csr_pem,
        validity_days=ctx.deps.settings.dms_certificate_validity_days,
    )
    view = await store.insert_dms(
        ctx.conn,
        NewDMS(
            name=cmd.name,
            authorized_cas=list(cmd.authorized_cas),
            certificate_serial=issued.serial,
            certificate=x509.load_pem_x509_certificate(issued.certificate_pem.encode()),
            created_at=ctx.now,
            allow_replace=cmd.allow_replace,
            reenroll_window_days=cmd.reenroll_window_days,
            revoke_on_reenroll=cmd.revoke_on_reenroll,
            profile=cmd.profile,
            require_pop=cmd.require_pop,
        ),
    )
    return Outcome(view, [message(ctx, f"dms/{view.name}", DMSCreated.of(view))])


async def update_authorized_cas(cmd: UpdateAuthorizedCAs, ctx: DmsContext) -> Outcome:
    for name in cmd.add:  # before the row lock: these may wait on the CA worker
        await _allowable_ca(ctx, name)
    store = ctx.deps.store
    current = await store.get_dms(ctx.conn, cmd.name, lock=True)
    if current is None:
        raise DMSNotFound(cmd.name)
    if current.status is DMSStatus.REVOKED:
        raise DMSRevoked(cmd.name)
    removed = set(cmd.remove)
    cas = [name for name in current.authorized_cas if name not in removed]
    cas += [name for name in cmd.add if name not in cas]
    if cas == current.authorized_cas:
        return Outcome(current)
    updated = await store.set_authorized_cas(ctx.conn, cmd.name, cas)
    return Outcome(updated, [_update(ctx, current, updated)])


async def update_dms_policy(cmd: UpdateDMSPolicy, ctx: DmsContext) -> Outcome:
    """Change what a DMS's devices may do: replace, when to renew, revoke on renewal,
    under which issuance profile."""
    if cmd.profile is not None:  # before the row lock: this asks the CA worker
        await ctx.deps.cas.check_profile(cmd.profile)
    store = ctx.deps.store
    current = await store.get_dms(ctx.conn, cmd.name, lock=True)
    if current is None:
        raise DMSNotFound(cmd.name)
    if current.status is DMSStatus.REVOKED:
        raise DMSRevoked(cmd.name)
    updated = await store.set_policy(
        ctx.conn,
        cmd.name,
        allow_replace=current.allow_replace
        if cmd.allow_replace is None
        else cmd.allow_replace,
        reenroll_window_days=current.reenroll_window_days
        if cmd.reenroll_window_days is None
        else cmd.reenroll_window_days,
        revoke_on_reenroll=current.revoke_on_reenroll
        if cmd.revoke_on_reenroll is None
        else cmd.revoke_on_reenroll,
        profile=cmd.profile or current.profile,
        require_pop=current.require_pop if cmd.require_pop is None else cmd.require_pop,
    )
    if updated == current:
        return Outcome(current)
    return Outcome(updated, [_update(ctx, current, updated)])


async def revoke_dms(cmd: RevokeDMS, ctx: DmsContext) -> Outcome:
    store = ctx.deps.store
    current = await store.get_dms(ctx.conn, cmd.name, lock=True)
    if current is None:
        raise DMSNotFound(cmd.name)
    if current.status is DMSStatus.REVOKED:
        raise AlreadyRevoked(cmd.name)
    updated = await store.revoke_dms(ctx.conn, cmd.name, reason=cmd.reason, now=ctx.now)
    # Its certificate is revoked at the CA as well, in this same transaction, so CRL and
    # OCSP relying parties stop trusting it too (RFC 5280 §3.3); so is the one a
    # renewal replaced while it still authenticates.
    serials = [current.certificate_serial]
    if current.previous_certificate_serial and (
        current.previous_valid_until and current.previous_valid_until > ctx.now
    ):
        serials.append(current.previous_certificate_serial)
    revocations = [
        message(
            ctx,
            f"certificate/{serial}",
            RevokeCertificate(serial=serial, reason=cmd.reason),
        )
        for serial in serials
    ]
    await write_commands(ctx.conn, SCHEMA, revocations)
    return Outcome(updated, [_update(ctx, current, updated)])


async def renew_dms(cmd: RenewDMS, ctx: DmsContext) -> Outcome:
    """A new DMS certificate from its CSR; the old one authenticates the DMS for the
    overlap (at most until it expires), so its factories can switch over."""
    csr(cmd.csr_pem)  # refuse garbage before asking the CA worker
    store = ctx.deps.store
    current = await store.get_dms(ctx.conn, cmd.name, lock=True)
    if current is None:
        raise DMSNotFound(cmd.name)
    if current.status is DMSStatus.REVOKED:
        raise DMSRevoked(cmd.name)
    issued = await ctx.deps.cas.sign(
        ca=INTERNAL_CA,
        csr_pem=cmd.csr_pem,
        validity_days=ctx.deps.settings.dms_certificate_validity_days,
    )
    old = x509.load_pem_x509_certificate(current.certificate_pem.encode())
    updated = await store.renew_certificate(
        ctx.conn,
        cmd.name,
        serial=issued.serial,
        certificate=x509.load_pem_x509_certificate(issued.certificate_pem.encode()),
        previous_valid_until=min(
            ctx.now + timedelta(days=cmd.overlap_days), old.not_valid_after_utc
        ),
    )
    return Outcome(updated, [_update(ctx, current, updated)])


async def transfer_device(cmd: TransferDevice, ctx: DmsContext) -> Outcome:
    """An admin gives a device to another DMS, which alone enrolls it from now on."""
    store = ctx.deps.store
    target = await store.get_dms(ctx.conn, cmd.dms)
    if target is None:
        raise DMSNotFound(cmd.dms)
    if target.status is DMSStatus.REVOKED:
        raise DMSRevoked(cmd.dms)
    previous = await store.get_owner(ctx.conn, cmd.device_id, lock=True)
    if previous is not None and previous.dms == cmd.dms:
        return Outcome(previous)
    updated = await store.set_owner(ctx.conn, cmd.device_id, cmd.dms, ctx.now)
    event = message(
        ctx,
        f"device/{cmd.device_id}",
        DeviceOwnershipUpdate(previous=previous, updated=updated),
    )
    return Outcome(updated, [event])


async def get_dms(query: GetDMS, ctx: DmsContext) -> Outcome:
    dms = await ctx.deps.store.get_dms(ctx.conn, query.name)
    if dms is None:
        raise DMSNotFound(query.name)
    return Outcome(dms)


async def list_dmss(query: ListDMSs, ctx: DmsContext) -> Outcome:
    items = await ctx.deps.store.list_dmss(
        ctx.conn, status=query.status, limit=query.limit, after=query.after
    )
    return Outcome(DMSs(items=items))


# --- events of other workers ---------------------------------------------------------


async def announce_enrollment(certificate: CertificateView, ctx: DmsContext) -> Outcome:
    """``certificate.create`` of an enrollment becomes ``dms.enroll`` or ``dms.reenroll``."""
    if certificate.dms is None or certificate.device_id is None:
        return Outcome()
    model = DMSEnrolled if certificate.replaces is None else DMSReenrolled
    data = model(
        dms=certificate.dms,
        device_id=certificate.device_id,
        slot=certificate.slot or DEFAULT_SLOT,
        serial=certificate.serial,
        ca=certificate.ca,
        not_before=certificate.not_before,
        not_after=certificate.not_after,
    )
    # Published before the certificate.create is acked, not through the outbox: a
    # redelivery announces again, under the same id (one event per certificate).
    event_id = str(uuid.uuid5(_ANNOUNCEMENTS, f"{model.TYPE}/{certificate.serial}"))
    return Outcome(events=[message(ctx, f"dms/{certificate.dms}", data, id_=event_id)])


async def announce_enrollments(
    batch: Batch[CertificateCreated, DmsContext],
) -> list[Outcome]:
    """``certificate.create`` events that arrived together: their announcements are
    published in one batch."""
    return [await announce_enrollment(created, ctx) for created, ctx in batch.items]


async def revoke_dms_of_certificate(
    update: CertificateStatusUpdate, ctx: DmsContext
) -> Outcome:
    """A revoked DMS certificate revokes its DMS, even when an admin revoked it directly."""
    certificate = update.updated
    if (
        certificate.status is not CertificateStatus.REVOKED
        or certificate.ca != INTERNAL_CA
    ):
        return Outcome()
    store = ctx.deps.store
    # A certificate a renewal replaced stops authenticating its DMS; nothing more.
    await store.end_overlap(ctx.conn, certificate.serial, ctx.now)
    current = await store.get_dms_by_serial(ctx.conn, certificate.serial, lock=True)
    if current is None or current.status is DMSStatus.REVOKED:
        return Outcome()
    updated = await store.revoke_dms(
        ctx.conn,
        current.name,
        reason=certificate.revocation_reason or RevocationReason.UNSPECIFIED,
        now=certificate.revoked_at or ctx.now,
    )
    return Outcome(events=[_update(ctx, current, updated)])


async def record_registration(
    update: DeviceOwnershipUpdate, ctx: DmsContext
) -> Outcome:
    """``device.ownership.update`` without a previous owner: the device worker
    registered a device for a DMS, which owns it unless a DMS enrolled it first. (With
    a previous owner it is this worker's own transfer, already applied.)"""
    if update.previous is None:
        owner = update.updated
        await ctx.deps.store.record_registration(
            ctx.conn, owner.device_id, owner.dms, owner.since
        )
    return Outcome()


async def record_decommission(device: DeviceView, ctx: DmsContext) -> Outcome:
    """Keep the projection of decommissioned devices, which never enroll again."""
    if device.status is DeviceStatus.DECOMMISSIONED:
        await ctx.deps.store.record_decommissioned(
            ctx.conn, device.id, device.decommissioned_at or ctx.now
        )
    return Outcome()


HANDLERS = routes(
    Route(CreateDMS, create_dms),
    Route(UpdateAuthorizedCAs, update_authorized_cas),
    Route(RevokeDMS, revoke_dms),
    Route(RenewDMS, renew_dms),
    Route(TransferDevice, transfer_device),
    Route(UpdateDMSPolicy, update_dms_policy),
    Route(GetDMS, get_dms, mode=Mode.READ),
    Route(ListDMSs, list_dmss, mode=Mode.READ),
    # Authorized and forwarded (the CA worker answers the gateway): nothing written.
    Route(EnrollmentRequest, handle_batch=authorize_requests, mode=Mode.READ),
    Route(AuthorizeEnrollment, authorize_only, mode=Mode.READ),
)

EVENT_HANDLERS = routes(
    # dms.enroll / dms.reenroll, ids derived from the certificate's serial.
    Route(
        CertificateCreated,
        handle_batch=announce_enrollments,
        mode=Mode.READ,
        events=Events.DIRECT,
    ),
    Route(CertificateStatusUpdate, revoke_dms_of_certificate),
    Route(DeviceDecommissioned, record_decommission),
    Route(DeviceOwnershipUpdate, record_registration),
)
