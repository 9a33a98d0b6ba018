"""Handlers of certificates: sign a CSR, issue for authorized enrollments (in
batches), revoke one or a device's, get and list."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from cryptography import x509

from ca_worker.authorities import Authority
from ca_worker.context import (
    USABLE,
    CaContext,
    initial_status,
    mirror_revocations,
    new_event,
    signing_ca,
    status_events,
)
from ca_worker.errors import (
    AlreadyRevoked,
    BadCSR,
    CAKeyMissing,
    CANotFound,
    CertificateNotFound,
    PresentedCertificateRefused,
    ProfileViolated,
)
from ca_worker.issuance import csr_fingerprint, issuable_csr
from ca_worker.profile_handlers import (
    profiles_named,
)
from ca_worker.profiles import LeafUsage, ProfileRefused, leaf_usage
from ca_worker.renewals import check_slots, fill_slots, live_answers, superseded
from ca_worker.slots import SlotHolder
from ca_worker.store import NewCertificate
from contracts.ca import (
    CAView,
    CertificateCreated,
    Certificates,
    CertificateView,
    GetCertificate,
    IssueCertificate,
    ListCertificates,
    RevocationReason,
    RevokeCertificate,
    RevokeDeviceCertificates,
    SignCertificate,
)
from contracts.envelope import CloudEvent
from contracts.pki import CSRRejected
from contracts.profiles import ProfileSpec
from engines import KeyNotFound
from runtime.routes import Batch, Outcome

__all__ = [
    "get_certificate",
    "issue_certificates",
    "list_certificates",
    "revoke_certificate",
    "revoke_device_certificates",
    "sign_certificate",
]


async def _sign_leaf(
    authority: Authority,
    ca: CAView,
    csr: x509.CertificateSigningRequest,
    now: datetime,
    usage: LeafUsage,
) -> x509.Certificate:
    """Sign in the event loop when the key is in this process (about 0.2 ms, less than
    a thread hop costs); in a thread when the engine waits on a token or a server."""
    validity = usage.validity
    try:
        if authority.in_process:
            return authority.sign_leaf(ca, csr, now=now, validity=validity, usage=usage)
        return await asyncio.to_thread(
            authority.sign_leaf, ca, csr, now=now, validity=validity, usage=usage
        )
    except KeyNotFound:
        raise CAKeyMissing(ca.name, ca.engine) from None


def _leaf_usage(
    profile: ProfileSpec,
    csr: x509.CertificateSigningRequest,
    ca: CAView,
    now: datetime,
    *,
    validity_days: int,
    cap: bool,
) -> LeafUsage:
    """The profile's rules for this CSR (ca_worker.profiles), or its refusal."""
    try:
        return leaf_usage(profile, csr, ca, now, validity_days=validity_days, cap=cap)
    except ProfileRefused as exc:
        raise ProfileViolated(str(exc)) from None


async def sign_certificate(cmd: SignCertificate, ctx: CaContext) -> Outcome:
    csr = _csr(cmd.csr_pem)
    ca, authority = await signing_ca(ctx, cmd.ca)
    name = cmd.profile or ca.profile
    profile = (await profiles_named(ctx, [name]))[name]
    usage = _leaf_usage(
        profile, csr, ca, ctx.now, validity_days=cmd.validity_days, cap=cmd.cap_validity
    )
    certificate = await _sign_leaf(authority, ca, csr, ctx.now, usage)
    view = await ctx.deps.store.insert_certificate(
        ctx.conn,
        NewCertificate(
            ca.name,
            csr_fingerprint(csr),
            certificate,
            status=initial_status(ca, certificate, ctx.now),
        ),
    )
    if view is None:
        raise RuntimeError("a certificate without a request id conflicted on insert")
    return Outcome(
        view,
        [new_event(ctx, f"certificate/{view.serial}", CertificateCreated.of(view))],
    )


async def issue_certificates(
    batch: Batch[IssueCertificate, CaContext],
) -> list[Outcome]:
    """Sign for a batch of authorized enrollments with a statement each to find the
    requests answered before, to read the presented certificates of renewals, to read
    each issuing CA and to store what is signed. A refusal of any of them (a bad CSR,
    an unusable CA, a renewal that may not be) comes before anything is signed; a
    retried request gets the certificate its first one produced."""
    ctx, items = batch.ctx, batch.items
    store = ctx.deps.store
    answered = await live_answers(
        ctx,
        await store.certificates_by_request(
            ctx.conn, [cmd.request_id for cmd, _ in items]
        ),
    )
    todo: dict[str, tuple[IssueCertificate, CaContext]] = {}
    for cmd, item_ctx in items:
        if cmd.request_id not in answered:
            todo.setdefault(cmd.request_id, (cmd, item_ctx))
    renewed = [cmd.replaces for cmd, _ in todo.values() if cmd.replaces is not None]
    presented = await store.get_certificates(ctx.conn, renewed) if renewed else {}
    signing = {
        name: await signing_ca(ctx, name) for name in {c.ca for c, _ in todo.values()}
    }
    profiles = await profiles_named(
        ctx, {cmd.profile or signing[cmd.ca][0].profile for cmd, _ in todo.values()}
    )
    checked = [
        (cmd, item_ctx, _csr(cmd.csr_pem), _enrolling_dms(cmd, presented, item_ctx.now))
        for cmd, item_ctx in todo.values()
    ]
    # Devices cannot ask for a validity over EST: the profile's (or the CA's) caps it.
    usages = [
        _leaf_usage(
            profiles[cmd.profile or signing[cmd.ca][0].profile],
            csr,
            signing[cmd.ca][0],
            item_ctx.now,
            validity_days=cmd.validity_days,
            cap=True,
        )
        for cmd, item_ctx, csr, _ in checked
    ]
    holders = await check_slots(ctx, [cmd for cmd, _ in todo.values()])
    news = []
    for (cmd, item_ctx, csr, dms), usage in zip(checked, usages, strict=True):
        ca, authority = signing[cmd.ca]
        certificate = await _sign_leaf(authority, ca, csr, item_ctx.now, usage)
        news.append(
            NewCertificate(
                ca.name,
                csr_fingerprint(csr),
                certificate,
                device_id=cmd.device_id,
                slot=cmd.slot,
                dms=dms,
                replaces=cmd.replaces,
                request_id=cmd.request_id,
                status=initial_status(ca, certificate, item_ctx.now),
            )
        )
    stored = await store.insert_certificates(ctx.conn, news)
    await fill_slots(ctx, [cmd for cmd, _, _, _ in checked], stored)
    events: dict[str, list[CloudEvent]] = {}
    for (cmd, item_ctx, _, _), view in zip(checked, stored, strict=True):
        if view is not None:
            answered[cmd.request_id] = view
            events[cmd.request_id] = [
                new_event(
                    item_ctx,
                    f"certificate/{view.serial}",
                    CertificateCreated.of(view),
                )
            ]
    superseded = await _revoke_superseded(
        ctx, [cmd for cmd, _, _, _ in checked], stored, holders
    )
    for request_id, event in superseded:
        events[request_id].append(event)
    if len(answered) < len(todo):
        # A concurrent twin of an enrollment committed first: answer with its certificate.
        answered |= await store.certificates_by_request(
            ctx.conn, [r for r in todo if r not in answered]
        )
    # Each new certificate's event goes with the first message that asked for it.
    return [
        Outcome(answered[cmd.request_id], events.pop(cmd.request_id, []))
        for cmd, _ in items
    ]


async def _revoke_superseded(
    ctx: CaContext,
    commands: Sequence[IssueCertificate],
    stored: Sequence[CertificateView | None],
    holders: Mapping[tuple[str, str], SlotHolder],
) -> list[tuple[str, CloudEvent]]:
    """Revoke (reason superseded, RFC 5280 §5.3.1) the live certificates that new
    ones replaced in their slots when the DMS asks for it, in this transaction; the
    status events, each with the request that caused it (after its create event)."""
    targets = superseded(commands, stored, holders, ctx.now)
    if not targets:
        return []
    changes = await ctx.deps.store.revoke_certificates(
        ctx.conn,
        serials=list(targets),
        reason=RevocationReason.SUPERSEDED,
        now=ctx.now,
    )
    revoked: dict[str, list[str]] = defaultdict(list)
    for change in changes:
        revoked[change.updated.ca].append(change.updated.serial)
    await mirror_revocations(ctx, revoked)
    return [
        (targets[change.updated.serial], event)
        for change, event in zip(changes, status_events(ctx, changes), strict=True)
    ]


async def revoke_device_certificates(
    cmd: RevokeDeviceCertificates, ctx: CaContext
) -> Outcome:
    """Decommissioning: every certificate ever issued to the device that is not
    revoked yet, not only those its slots hold now."""
    changes = await ctx.deps.store.revoke_certificates(
        ctx.conn, device_ids=[cmd.device_id], reason=cmd.reason, now=ctx.now
    )
    revoked: dict[str, list[str]] = defaultdict(list)
    for change in changes:
        revoked[change.updated.ca].append(change.updated.serial)
    await mirror_revocations(ctx, revoked)
    result = Certificates(items=[change.updated for change in changes])
    return Outcome(result, status_events(ctx, changes))


def _csr(pem: str) -> x509.CertificateSigningRequest:
    try:
        return issuable_csr(pem.encode())
    except CSRRejected as exc:
        raise BadCSR(str(exc)) from None


def _enrolling_dms(
    cmd: IssueCertificate, presented: Mapping[str, CertificateView], now: datetime
) -> str | None:
    """The DMS the certificate is issued for; a renewal's presented certificate must
    be renewable, and the renewal stays with the DMS that enrolled it."""
    if cmd.replaces is None:
        return cmd.dms
    renewed = presented.get(cmd.replaces)
    # RFC 7030 §4.2.2: renewal is for a certificate that is still valid. A revoked one
    # (also what decommissioning leaves) or one from another CA is refused.
    if renewed is None or renewed.ca != cmd.ca:
        raise PresentedCertificateRefused(
            f"the presented certificate was not issued by CA {cmd.ca!r}"
        )
    if renewed.status not in USABLE or renewed.not_after <= now:
        raise PresentedCertificateRefused(
            f"the presented certificate {cmd.replaces} is {renewed.status.value.lower()}"
        )
    return cmd.dms or renewed.dms


async def get_certificate(query: GetCertificate, ctx: CaContext) -> Outcome:
    certificate = await ctx.deps.store.get_certificate(ctx.conn, query.serial)
    if certificate is None:
        raise CertificateNotFound(query.serial)
    return Outcome(certificate)


async def list_certificates(query: ListCertificates, ctx: CaContext) -> Outcome:
    if query.ca is not None and await ctx.deps.store.get_ca(ctx.conn, query.ca) is None:
        raise CANotFound(query.ca)
    items = await ctx.deps.store.list_certificates(
        ctx.conn, ca=query.ca, status=query.status, limit=query.limit, after=query.after
    )
    return Outcome(Certificates(items=items))


async def revoke_certificate(cmd: RevokeCertificate, ctx: CaContext) -> Outcome:
    store = ctx.deps.store
    current = await store.get_certificate(ctx.conn, cmd.serial)
    if current is None:
        raise CertificateNotFound(cmd.serial)
    changes = await store.revoke_certificates(
        ctx.conn, serials=[cmd.serial], reason=cmd.reason, now=ctx.now
    )
    if not changes:
        raise AlreadyRevoked(f"certificate {cmd.serial}")
    await mirror_revocations(ctx, {current.ca: [cmd.serial]})
    return Outcome(changes[0].updated, status_events(ctx, changes))
