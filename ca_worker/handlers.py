"""One function per CA message type, plus the routing table ``HANDLERS`` at the bottom.

A handler takes a validated contract and a ``CaContext`` (connection in an open
transaction, ``now``, dependencies) and returns an ``Outcome``: the reply's result and the
events, which the dispatcher writes to the outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import structlog
from cryptography import x509

from ca_worker.authorities import Authority, CASpec, Parent
from ca_worker.errors import (
    AlreadyRevoked,
    BadCSR,
    CAExists,
    CAKeyMissing,
    CANotFound,
    CAUnusable,
    CertificateNotFound,
    EngineNotConfigured,
    InternalCAProtected,
    PresentedCertificateRefused,
    ProfileViolated,
)
from ca_worker.expiry import status_at
from ca_worker.issuance import csr_fingerprint, issuable_csr
from ca_worker.path_length import path_length_below
from ca_worker.profile_handlers import (
    create_profile,
    get_profile,
    list_profiles,
    profiles_named,
)
from ca_worker.profile_store import ProfileStore
from ca_worker.profiles import LeafUsage, ProfileRefused, leaf_usage
from ca_worker.renewals import check_slots, fill_slots, live_answers, superseded
from ca_worker.slot_store import SlotStore
from ca_worker.slots import SlotHolder
from ca_worker.store import NewCA, NewCertificate, StatusChange, Store
from contracts.ca import (
    INTERNAL_CA,
    CACreated,
    CAs,
    CAStatusUpdate,
    CAUpdate,
    CAView,
    CertificateCreated,
    Certificates,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    CreateCA,
    GetCA,
    GetCertificate,
    IssueCertificate,
    ListCAs,
    ListCertificates,
    RevocationReason,
    RevokeCA,
    RevokeCertificate,
    RevokeDeviceCertificates,
    SignCertificate,
    UpdateCA,
)
from contracts.envelope import CloudEvent, new_message
from contracts.message import Message
from contracts.names import Source
from contracts.pki import CSRRejected
from contracts.profiles import CreateProfile, GetProfile, ListProfiles, ProfileSpec
from engines import KeyNotFound, KeyType
from runtime.outbox import write_events
from runtime.routes import Batch, Mode, Outcome, Route, routes

__all__ = [
    "HANDLERS",
    "INTERNAL_CA",
    "SOURCE",
    "CaContext",
    "CaDeps",
    "ensure_internal_ca",
    "report_missing_keys",
    "status_events",
]

SOURCE = Source.CA

_USABLE = {CertificateStatus.ACTIVE, CertificateStatus.ABOUT_TO_EXPIRE}

log = structlog.get_logger("ca_worker")


@dataclass(frozen=True, slots=True)
class CaDeps:
    """What every CA handler may use, built once in ``__main__``.

    ``authorities`` holds one strategy per configured engine, keyed by engine name;
    ``default_engine`` (ENGINE) keeps CAs created without ``CreateCA.engine``.
    """

    store: Store
    authorities: Mapping[str, Authority]
    default_engine: str
    sweep_shards: int = 16
    slots: SlotStore = field(default_factory=SlotStore)
    profiles: ProfileStore = field(default_factory=ProfileStore)


@dataclass(frozen=True, slots=True)
class CaContext:
    """Per message: the transaction's connection, the clock reading, the causing request."""

    conn: asyncpg.Connection
    now: datetime
    correlation_id: str | None
    deps: CaDeps


def _event(ctx: CaContext, subject: str, data: Message) -> CloudEvent:
    return new_message(
        source=SOURCE,
        subject=subject,
        data=data,
        now=ctx.now,
        correlation_id=ctx.correlation_id,
    )


def status_events(
    ctx: CaContext,
    changes: Sequence[StatusChange[CAView]] | Sequence[StatusChange[CertificateView]],
) -> list[CloudEvent]:
    """``ca.status.update`` / ``certificate.status.update`` for each change."""
    events = []
    for change in changes:
        previous, updated = change.previous, change.updated
        if isinstance(previous, CAView) and isinstance(updated, CAView):
            data: Message = CAStatusUpdate(previous=previous, updated=updated)
            subject = f"ca/{updated.name}"
        elif isinstance(previous, CertificateView) and isinstance(
            updated, CertificateView
        ):
            data = CertificateStatusUpdate(previous=previous, updated=updated)
            subject = f"certificate/{updated.serial}"
        else:  # pragma: no cover - StatusChange is only built for the two views
            raise TypeError(type(updated))
        events.append(_event(ctx, subject, data))
    return events


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


async def _signing_ca(ctx: CaContext, name: str) -> tuple[CAView, Authority]:
    """A CA that may sign now, with its engine's authority; refuses revoked or expired
    CAs, and CAs whose engine this worker has not opened."""
    ca = await ctx.deps.store.get_ca(ctx.conn, name)
    if ca is None:
        raise CANotFound(name)
    if ca.status not in _USABLE or ca.not_after <= ctx.now:
        raise CAUnusable(f"CA {name!r} cannot sign: it is {ca.status.value.lower()}")
    authority = ctx.deps.authorities.get(ca.engine)
    if authority is None:
        raise CAUnusable(
            f"CA {name!r} is kept by engine {ca.engine!r}, which this CA worker has "
            "not configured (ENGINE/ENGINES)"
        )
    return ca, authority


def _authority_for_new_ca(ctx: CaContext, engine: str | None) -> Authority:
    name = engine or ctx.deps.default_engine
    authority = ctx.deps.authorities.get(name)
    if authority is None:
        raise EngineNotConfigured(name, list(ctx.deps.authorities))
    return authority


async def _mirror_revocations(ctx: CaContext, revoked: Mapping[str, list[str]]) -> None:
    """Tell each issuing CA's engine the serials it revoked (the rows are updated).

    In the handler's transaction: if the engine fails, nothing is committed and the
    retried message tells it again (revoking twice is harmless).
    """
    for name, serials in revoked.items():
        ca = await ctx.deps.store.get_ca(ctx.conn, name)
        authority = None if ca is None else ctx.deps.authorities.get(ca.engine)
        if ca is None or authority is None:
            log.warning("revocation_not_mirrored", ca=name, reason="engine not open")
            continue
        await asyncio.to_thread(authority.revoke, ca, serials)


def _initial_status(
    ca: CAView, certificate: x509.Certificate, now: datetime
) -> CertificateStatus:
    """A certificate issued inside its CA's warning period starts ABOUT_TO_EXPIRE."""
    return status_at(
        CertificateStatus.ACTIVE,
        certificate.not_valid_after_utc,
        now,
        ca.about_to_expire_days,
    )


async def _create(
    ctx: CaContext,
    *,
    name: str,
    parent: str | None,
    key_type: KeyType,
    validity: timedelta,
    internal: bool,
    engine: str | None = None,
    about_to_expire_days: int = 30,
    profile: str | None = None,
    path_length: int | None = None,
) -> Outcome:
    store = ctx.deps.store
    if await store.get_ca(ctx.conn, name) is not None:
        raise CAExists(name)
    authority = _authority_for_new_ca(ctx, engine)
    parent_ca = None if parent is None else Parent(*await _signing_ca(ctx, parent))
    if profile is not None:
        await profiles_named(ctx, [profile])  # refuse an unknown one before any key
    if parent_ca is not None:
        path_length = path_length_below(parent_ca.ca, path_length)
    spec = CASpec(name, key_type, ctx.now, validity, path_length)
    try:
        created = await asyncio.to_thread(authority.create_ca, spec, parent_ca)
    except KeyNotFound:
        if parent_ca is None:
            raise
        raise CAKeyMissing(parent_ca.ca.name, parent_ca.ca.engine) from None
    new = NewCA(
        name,
        parent,
        internal,
        key_type,
        created.key_id,
        authority.engine,
        created.certificate,
        about_to_expire_days,
        profile,
    )
    try:
        async with ctx.conn.transaction():  # a savepoint: a lost race leaves no key
            view = await store.insert_ca(ctx.conn, new)
    except asyncpg.UniqueViolationError:
        await asyncio.to_thread(authority.discard_ca, name, created.key_id)
        raise CAExists(name) from None
    return Outcome(view, [_event(ctx, f"ca/{name}", CACreated.of(view))])


async def create_ca(cmd: CreateCA, ctx: CaContext) -> Outcome:
    return await _create(
        ctx,
        name=cmd.name,
        parent=cmd.parent,
        key_type=cmd.key_type,
        validity=timedelta(days=cmd.validity_days),
        internal=False,
        engine=cmd.engine,
        about_to_expire_days=cmd.about_to_expire_days,
        profile=cmd.profile,
        path_length=cmd.path_length,
    )


async def update_ca(cmd: UpdateCA, ctx: CaContext) -> Outcome:
    """Change a CA's about-to-expire threshold; the next sweep applies it."""
    store = ctx.deps.store
    previous = await store.get_ca(ctx.conn, cmd.name, lock=True)
    if previous is None:
        raise CANotFound(cmd.name)
    if previous.internal and cmd.about_to_expire_days == 0 and not cmd.force:
        raise InternalCAProtected(
            f"CA {cmd.name!r} issues every DMS certificate: without its warning it"
            " would expire unnoticed and every DMS with it; pass force (--force)"
        )
    updated = await store.update_ca(ctx.conn, cmd.name, cmd.about_to_expire_days)
    if updated is None:
        raise RuntimeError(f"CA {cmd.name!r} vanished while its row was locked")
    if updated == previous:
        return Outcome(updated)
    event = _event(
        ctx,
        f"ca/{cmd.name}",
        CAUpdate(previous=previous, updated=updated),
    )
    return Outcome(updated, [event])


async def get_ca(query: GetCA, ctx: CaContext) -> Outcome:
    ca = await ctx.deps.store.get_ca(ctx.conn, query.name)
    if ca is None:
        raise CANotFound(query.name)
    return Outcome(ca)


async def list_cas(_query: ListCAs, ctx: CaContext) -> Outcome:
    return Outcome(CAs(items=await ctx.deps.store.list_cas(ctx.conn)))


async def revoke_ca(cmd: RevokeCA, ctx: CaContext) -> Outcome:
    store = ctx.deps.store
    ca = await store.get_ca(ctx.conn, cmd.name, lock=True)
    if ca is None:
        raise CANotFound(cmd.name)
    if ca.status is CertificateStatus.REVOKED:
        raise AlreadyRevoked(f"CA {cmd.name!r}")
    if ca.internal and not cmd.force:
        raise InternalCAProtected(
            f"CA {cmd.name!r} issues every DMS certificate: revoking it revokes every"
            " DMS, and no DMS can be created until it is replaced; pass force"
            " (--force) to revoke it anyway"
        )
    ca_changes = await store.revoke_ca_tree(ctx.conn, cmd.name, cmd.reason, ctx.now)
    cert_changes = await store.revoke_certificates(
        ctx.conn,
        cas=[c.updated.name for c in ca_changes],
        reason=cmd.reason,
        now=ctx.now,
    )
    events = status_events(ctx, ca_changes) + status_events(ctx, cert_changes)
    revoked: dict[str, list[str]] = defaultdict(list)
    for cert_change in cert_changes:
        revoked[cert_change.updated.ca].append(cert_change.updated.serial)
    for ca_change in ca_changes:
        if ca_change.updated.parent is not None:
            revoked[ca_change.updated.parent].append(ca_change.updated.serial)
    await _mirror_revocations(ctx, revoked)
    updated = next(c.updated for c in ca_changes if c.updated.name == cmd.name)
    return Outcome(updated, events)


async def sign_certificate(cmd: SignCertificate, ctx: CaContext) -> Outcome:
    csr = _csr(cmd.csr_pem)
    ca, authority = await _signing_ca(ctx, cmd.ca)
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
            status=_initial_status(ca, certificate, ctx.now),
        ),
    )
    if view is None:
        raise RuntimeError("a certificate without a request id conflicted on insert")
    return Outcome(
        view,
        [_event(ctx, f"certificate/{view.serial}", CertificateCreated.of(view))],
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
        name: await _signing_ca(ctx, name) for name in {c.ca for c, _ in todo.values()}
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
                status=_initial_status(ca, certificate, item_ctx.now),
            )
        )
    stored = await store.insert_certificates(ctx.conn, news)
    await fill_slots(ctx, [cmd for cmd, _, _, _ in checked], stored)
    events: dict[str, list[CloudEvent]] = {}
    for (cmd, item_ctx, _, _), view in zip(checked, stored, strict=True):
        if view is not None:
            answered[cmd.request_id] = view
            events[cmd.request_id] = [
                _event(
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
    await _mirror_revocations(ctx, revoked)
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
    await _mirror_revocations(ctx, revoked)
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
    if renewed.status not in _USABLE or renewed.not_after <= now:
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
    await _mirror_revocations(ctx, {current.ca: [cmd.serial]})
    return Outcome(changes[0].updated, status_events(ctx, changes))


async def ensure_internal_ca(
    conn: asyncpg.Connection, deps: CaDeps, now: datetime
) -> CloudEvent | None:
    """Create ``LAMASSU-DMS-MANAGER`` once, even with replicas racing; returns its event."""
    async with conn.transaction():
        # Serialises replicas starting together; the loser then finds the row.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ca:internal-ca'))")
        if await deps.store.get_ca(conn, INTERNAL_CA) is not None:
            return None
        ctx = CaContext(conn, now, None, deps)
        outcome = await _create(
            ctx,
            name=INTERNAL_CA,
            parent=None,
            key_type=KeyType.EC_P256,
            validity=timedelta(days=3650),
            internal=True,
        )
        await write_events(conn, "ca", outcome.events)
        return outcome.events[0]


async def report_missing_keys(conn: asyncpg.Connection, deps: CaDeps) -> list[str]:
    """Log each CA that may sign but whose key its engine does not hold (at start).

    Such a CA is not retried around: its signing requests are refused at once with
    ``CAKeyMissing``. Returns the names, for tests.
    """
    missing = []
    for ca in await deps.store.list_cas(conn):
        authority = deps.authorities.get(ca.engine)
        if ca.status not in _USABLE or authority is None:
            continue
        if not await asyncio.to_thread(authority.has_key, ca):
            log.error("ca_key_missing", ca=ca.name, engine=ca.engine, key_id=ca.key_id)
            missing.append(ca.name)
    return missing


HANDLERS = routes(
    Route(CreateCA, create_ca),
    Route(UpdateCA, update_ca),
    Route(RevokeCA, revoke_ca),
    Route(SignCertificate, sign_certificate),
    Route(RevokeCertificate, revoke_certificate),
    Route(RevokeDeviceCertificates, revoke_device_certificates),
    Route(IssueCertificate, handle_batch=issue_certificates),
    Route(CreateProfile, create_profile),
    Route(GetProfile, get_profile, mode=Mode.READ),
    Route(ListProfiles, list_profiles, mode=Mode.READ),
    Route(GetCA, get_ca, mode=Mode.READ),
    Route(ListCAs, list_cas, mode=Mode.READ),
    Route(GetCertificate, get_certificate, mode=Mode.READ),
    Route(ListCertificates, list_certificates, mode=Mode.READ),
)
