"""One function per DMS message type, plus the routing tables ``HANDLERS`` (commands and
queries) and ``EVENT_HANDLERS`` (events of the CA and device workers) at the bottom.

A handler takes a validated contract and a ``DmsContext`` and returns an ``Outcome``; an
authorized enrollment is forwarded to the CA worker, which answers the EST gateway.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
from cryptography import x509
from pydantic import BaseModel

from contracts.ca import (
    INTERNAL_CA,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    IssueCertificate,
    RevocationReason,
    RevokeCertificate,
)
from contracts.devices import (
    DEVICE_CREATE,
    DEVICE_DECOMMISSIONED,
    DeviceStatus,
    DeviceStatusUpdate,
    DeviceView,
)
from contracts.dms import (
    DMS_CREATE,
    CreateDMS,
    DeviceOwnershipUpdate,
    DMSEnrolled,
    DMSReenrolled,
    DMSs,
    DMSStatus,
    DMSUpdate,
    DMSView,
    EnrollmentKind,
    EnrollmentRequest,
    GetDMS,
    ListDMSs,
    RevokeDMS,
    TransferDevice,
    UpdateAuthorizedCAs,
)
from contracts.envelope import CloudEvent, new_message
from contracts.errors import ErrorCode
from dms_worker.authorization import (
    DEFAULT_SLOT,
    CSRRejected,
    Decision,
    DeviceIdentity,
    DMSRecord,
    authorize_enrollment,
    authorize_owner,
    authorize_reenrollment,
    certificate_serial,
    device_identity,
    load_csr,
)
from dms_worker.ca_client import CAClient, KnownCA
from dms_worker.errors import (
    AlreadyRevoked,
    BadClientCertificate,
    BadCSR,
    DMSExists,
    DMSNotFound,
    DMSRevoked,
    EnrollmentForbidden,
    InternalCARefused,
    NoClientCertificate,
)
from dms_worker.settings import Settings
from dms_worker.store import EnrollmentFacts, NewDMS, Store
from runtime.dispatch import Outcome, Route
from runtime.errors import Failure
from runtime.outbox import write_commands

__all__ = [
    "EVENT_HANDLERS",
    "HANDLERS",
    "INTERNAL_CA",
    "RETIRED_EVENT_BINDINGS",
    "DmsContext",
    "DmsDeps",
]

SOURCE = "service/dms"
# Names the ids of dms.enroll / dms.reenroll (RFC 9562 §5.5): one per certificate.
_ANNOUNCEMENTS = uuid.UUID("5b0c3a52-3f3e-4d55-9b1e-0d7a4c2f9e61")
SCHEMA = "dms"


@dataclass(frozen=True, slots=True)
class DmsDeps:
    """What every DMS handler may use, built once in ``__main__``'s setup."""

    store: Store
    cas: CAClient  # the bus to the CA worker, with its cache of CA certificates
    dms_manager_ca: x509.Certificate
    settings: Settings


@dataclass(frozen=True, slots=True)
class DmsContext:
    """Per message: the connection (in a transaction when the route writes), the clock
    reading, the causing request."""

    conn: asyncpg.Connection
    now: datetime
    correlation_id: str | None
    deps: DmsDeps


def _message(
    ctx: DmsContext,
    type_: str,
    subject: str,
    data: BaseModel,
    *,
    id_: str | None = None,
) -> CloudEvent:
    return new_message(
        type_=type_,
        source=SOURCE,
        subject=subject,
        data=data,
        now=ctx.now,
        correlation_id=ctx.correlation_id,
        id_=id_,
    )


def _update(ctx: DmsContext, previous: DMSView, updated: DMSView) -> CloudEvent:
    return _message(
        ctx,
        DMSUpdate.TYPE,
        f"dms/{updated.name}",
        DMSUpdate(previous=previous, updated=updated),
    )


def _csr(pem: str, *, check_signature: bool = True) -> x509.CertificateSigningRequest:
    try:
        return load_csr(pem.encode(), check_signature=check_signature)
    except CSRRejected as exc:
        raise BadCSR(str(exc)) from None


async def _allowable_ca(ctx: DmsContext, name: str) -> KnownCA:
    """A CA a DMS may have in its allow-list: it exists and is not internal."""
    ca = await ctx.deps.cas.get(name)
    if ca.internal:
        raise InternalCARefused(name)
    return ca


# --- commands and queries ------------------------------------------------------------


async def create_dms(cmd: CreateDMS, ctx: DmsContext) -> Outcome:
    store = ctx.deps.store
    _csr(cmd.csr_pem)  # refuse garbage before asking the CA worker
    # Held to commit: a concurrent twin waits here, then finds the row, so no second
    # DMS certificate is signed for nothing.
    await store.lock_name(ctx.conn, cmd.name)
    if await store.get_dms(ctx.conn, cmd.name) is not None:
        raise DMSExists(cmd.name)
    for name in cmd.authorized_cas:
        await _allowable_ca(ctx, name)
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
        ),
    )
    return Outcome(view, [_message(ctx, DMS_CREATE, f"dms/{view.name}", view)])


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


async def revoke_dms(cmd: RevokeDMS, ctx: DmsContext) -> Outcome:
    store = ctx.deps.store
    current = await store.get_dms(ctx.conn, cmd.name, lock=True)
    if current is None:
        raise DMSNotFound(cmd.name)
    if current.status is DMSStatus.REVOKED:
        raise AlreadyRevoked(cmd.name)
    updated = await store.revoke_dms(ctx.conn, cmd.name, reason=cmd.reason, now=ctx.now)
    # Its certificate is revoked at the CA as well, in this same transaction, so CRL and
    # OCSP relying parties stop trusting it too (RFC 5280 §3.3).
    serial = current.certificate_serial
    revoke = _message(
        ctx,
        RevokeCertificate.TYPE,
        f"certificate/{serial}",
        RevokeCertificate(serial=serial, reason=cmd.reason),
    )
    await write_commands(ctx.conn, SCHEMA, [revoke])
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
    event = _message(
        ctx,
        DeviceOwnershipUpdate.TYPE,
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


# --- the enrollment pipeline -------------------------------------------------------

_REFUSALS: Mapping[ErrorCode | None, type[Failure]] = {
    ErrorCode.UNAUTHORIZED: NoClientCertificate,
    ErrorCode.FORBIDDEN: EnrollmentForbidden,
}


def _enforce(decision: Decision) -> None:
    if not decision.allowed:
        raise _REFUSALS.get(decision.code, EnrollmentForbidden)(decision.reason)


def _chain(pems: Sequence[str]) -> list[x509.Certificate]:
    try:
        return [x509.load_pem_x509_certificate(pem.encode()) for pem in pems]
    except ValueError:
        raise BadClientCertificate(
            "the client certificate chain is not PEM X.509"
        ) from None


def _authorize_enrollment(
    request: EnrollmentRequest,
    chain: list[x509.Certificate],
    dms: DMSRecord | None,
    ctx: DmsContext,
) -> str:
    """RFC 7030 §3.3.2: the DMS authenticates with its certificate; returns its name."""
    _enforce(
        authorize_enrollment(
            chain,
            dms_manager_ca=ctx.deps.dms_manager_ca,
            dms=dms,
            label=request.label,
            # A revoked DMS certificate marks its DMS revoked, which refuses it.
            revoked_serials=frozenset(),
            now=ctx.now,
        )
    )
    assert dms is not None  # noqa: S101 - authorization found the DMS holding the leaf
    return dms.name


@dataclass(frozen=True, slots=True)
class _Presented:
    """An EST request as read: its CSR, the device it names, the TLS client chain."""

    csr: x509.CertificateSigningRequest
    identity: DeviceIdentity
    chain: list[x509.Certificate]

    @property
    def dms_serial(self) -> str | None:
        """The serial to find a DMS by (the leaf of the chain), when one is given."""
        return certificate_serial(self.chain[0]) if self.chain else None


def _presented(request: EnrollmentRequest) -> _Presented:
    # The proof of possession is the CA worker's to check, and it does before it signs
    # (as the gateway did before asking): a third ECDSA verification here would be
    # about a tenth of this worker's CPU per enrollment.
    csr = _csr(request.csr_pem, check_signature=False)
    try:
        identity = device_identity(csr)
    except CSRRejected as exc:
        raise BadCSR(str(exc)) from None
    return _Presented(csr, identity, _chain(request.client_certificate_chain_pem))


async def authorize_request(request: EnrollmentRequest, ctx: DmsContext) -> Outcome:
    """Authorize an EST request; forward it to the CA worker, which replies to the gateway."""
    return (await authorize_requests([(request, ctx)]))[0]


async def authorize_requests(
    items: Sequence[tuple[EnrollmentRequest, DmsContext]],
) -> list[Outcome]:
    """EST requests that arrived together: what they need from the database is read
    with one statement; a refusal of any sends each through ``authorize_request``."""
    ctx = items[0][1]
    presented = [_presented(request) for request, _ in items]
    facts = await ctx.deps.store.enrollment_facts(
        ctx.conn,
        [
            (
                None if request.kind is EnrollmentKind.REENROLL else p.dms_serial,
                p.identity.device_id,
            )
            for (request, _), p in zip(items, presented, strict=True)
        ],
    )
    issues = [
        await _authorized(request, p, fact, item_ctx)
        for (request, item_ctx), p, fact in zip(items, presented, facts, strict=True)
    ]
    await _enforce_owners(issues, facts, ctx)
    return [
        Outcome(
            forward=_message(
                item_ctx, IssueCertificate.TYPE, f"device/{issue.device_id}", issue
            )
        )
        for issue, (_, item_ctx) in zip(issues, items, strict=True)
    ]


async def _enforce_owners(
    issues: Sequence[IssueCertificate],
    facts: Sequence[EnrollmentFacts],
    ctx: DmsContext,
) -> None:
    """A device belongs to the DMS that registered or first enrolled it: unowned
    devices go to the DMS enrolling them (one statement), and a DMS enrolling a device
    of another is refused. Renewals authenticate as the device and need no owner."""
    owners = {
        issue.device_id: fact.owner
        for issue, fact in zip(issues, facts, strict=True)
        if issue.dms is not None
    }
    claims: dict[str, str] = {}
    for issue in issues:
        if issue.dms is not None and owners[issue.device_id] is None:
            claims.setdefault(issue.device_id, issue.dms)
    if claims:
        owners |= await ctx.deps.store.claim_devices(ctx.conn, claims, ctx.now)
    for issue in issues:
        if issue.dms is not None:
            owner = owners[issue.device_id] or issue.dms
            _enforce(authorize_owner(issue.device_id, dms=issue.dms, owner=owner))


async def _authorized(
    request: EnrollmentRequest,
    presented: _Presented,
    facts: EnrollmentFacts,
    ctx: DmsContext,
) -> IssueCertificate:
    """The decision on one request, given what the database holds: the enrollment
    for the CA worker to sign, or the refusal (a ``Failure``) that names why."""
    identity, chain = presented.identity, presented.chain
    # RFC 7030 §3.2.2: the label names the CA; an unknown one is not found.
    label = await ctx.deps.cas.get(request.label)
    dms: str | None = None
    replaces: str | None = None
    allow_replace = False
    if request.kind is EnrollmentKind.REENROLL:
        # RFC 7030 §4.2.2: the device authenticates with the certificate it renews.
        leaf = chain[0] if chain else None
        _enforce(
            authorize_reenrollment(
                leaf,
                csr=presented.csr,
                issuing_ca=label.certificate,
                device_decommissioned=facts.decommissioned,
                revoked_serials=frozenset(),  # the CA worker checks it is not revoked
                now=ctx.now,
            )
        )
        assert leaf is not None  # noqa: S101 - authorization refuses None
        replaces = certificate_serial(leaf)
    else:
        dms = _authorize_enrollment(request, chain, facts.dms, ctx)
        allow_replace = facts.dms is not None and facts.dms.allow_replace
        if facts.decommissioned:
            raise EnrollmentForbidden(
                f"device {identity.device_id!r} is decommissioned"
            )
    if label.internal:
        raise EnrollmentForbidden(
            f"CA {label.name!r} is internal: devices do not enroll with it"
        )
    return IssueCertificate(
        ca=label.name,
        csr_pem=request.csr_pem,
        request_id=request.request_id,
        device_id=identity.device_id,
        slot=identity.slot,
        dms=dms,
        replaces=replaces,
        allow_replace=allow_replace,
    )


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
    return Outcome(
        events=[_message(ctx, model.TYPE, f"dms/{certificate.dms}", data, id_=event_id)]
    )


async def announce_enrollments(
    items: Sequence[tuple[CertificateView, DmsContext]],
) -> list[Outcome]:
    """``certificate.create`` events that arrived together: their announcements are
    published in one batch."""
    return [await announce_enrollment(certificate, ctx) for certificate, ctx in items]


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


async def record_registration(device: DeviceView, ctx: DmsContext) -> Outcome:
    """``device.create``: a device registered for a DMS belongs to it."""
    if device.dms is not None:
        await ctx.deps.store.record_registration(
            ctx.conn, device.id, device.dms, device.created_at
        )
    return Outcome()


async def record_decommission(device: DeviceView, ctx: DmsContext) -> Outcome:
    """Keep the projection of decommissioned devices, which never enroll again."""
    if device.status is DeviceStatus.DECOMMISSIONED:
        await ctx.deps.store.record_decommissioned(
            ctx.conn, device.id, device.decommissioned_at or ctx.now
        )
    return Outcome()


async def record_decommission_update(
    update: DeviceStatusUpdate, ctx: DmsContext
) -> Outcome:
    """A ``device.status.update`` queued before the queue's binding moved to
    ``device.decommissioned`` (see ``RETIRED_EVENT_BINDINGS``)."""
    return await record_decommission(update.updated, ctx)


HANDLERS: Mapping[str, Route] = {
    CreateDMS.TYPE: Route(CreateDMS, create_dms),
    UpdateAuthorizedCAs.TYPE: Route(UpdateAuthorizedCAs, update_authorized_cas),
    RevokeDMS.TYPE: Route(RevokeDMS, revoke_dms),
    TransferDevice.TYPE: Route(TransferDevice, transfer_device),
    GetDMS.TYPE: Route(GetDMS, get_dms, writes=False),
    ListDMSs.TYPE: Route(ListDMSs, list_dmss, writes=False),
    EnrollmentRequest.TYPE: Route(
        EnrollmentRequest, authorize_request, writes=False, many=authorize_requests
    ),
}

EVENT_HANDLERS: Mapping[str, Route] = {
    "certificate.create": Route(
        CertificateView,
        announce_enrollment,
        writes=False,
        many=announce_enrollments,
    ),
    CertificateStatusUpdate.TYPE: Route(
        CertificateStatusUpdate, revoke_dms_of_certificate
    ),
    DEVICE_DECOMMISSIONED: Route(DeviceView, record_decommission),
    DEVICE_CREATE: Route(DeviceView, record_registration),
    DeviceStatusUpdate.TYPE: Route(DeviceStatusUpdate, record_decommission_update),
}

# Bound by earlier versions, unbound at start: every enrollment's device status change
# went to this queue, which now needs only ``device.decommissioned``.
RETIRED_EVENT_BINDINGS: Sequence[tuple[Literal["events"], str]] = (
    ("events", DeviceStatusUpdate.TYPE),
)
