"""Handlers of CAs: create (root, subordinate, the internal CA), update, revoke (with
everything below it), get and list; and the start-up checks of the CAs' keys."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta

import asyncpg
import structlog

from ca_worker.authorities import Authority, CASpec, Parent
from ca_worker.context import (
    USABLE,
    CaContext,
    CaDeps,
    mirror_revocations,
    new_event,
    signing_ca,
    status_events,
)
from ca_worker.errors import (
    AlreadyRevoked,
    CAExists,
    CAKeyMissing,
    CANotFound,
    EngineNotConfigured,
    InternalCAProtected,
)
from ca_worker.path_length import path_length_below
from ca_worker.profile_handlers import (
    profiles_named,
)
from ca_worker.store import NewCA
from contracts.ca import (
    INTERNAL_CA,
    CACreated,
    CAs,
    CAUpdate,
    CertificateStatus,
    CreateCA,
    GetCA,
    ListCAs,
    RevokeCA,
    UpdateCA,
)
from contracts.envelope import CloudEvent
from engines import KeyNotFound, KeyType
from runtime.outbox import write_events
from runtime.routes import Outcome

__all__ = [
    "create_ca",
    "ensure_internal_ca",
    "get_ca",
    "list_cas",
    "report_missing_keys",
    "revoke_ca",
    "update_ca",
]

log = structlog.get_logger("ca_worker")


def _authority_for_new_ca(ctx: CaContext, engine: str | None) -> Authority:
    name = engine or ctx.deps.default_engine
    authority = ctx.deps.authorities.get(name)
    if authority is None:
        raise EngineNotConfigured(name, list(ctx.deps.authorities))
    return authority


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
    parent_ca = None if parent is None else Parent(*await signing_ca(ctx, parent))
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
    return Outcome(view, [new_event(ctx, f"ca/{name}", CACreated.of(view))])


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
    event = new_event(
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
    await mirror_revocations(ctx, revoked)
    updated = next(c.updated for c in ca_changes if c.updated.name == cmd.name)
    return Outcome(updated, events)


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
        if ca.status not in USABLE or authority is None:
            continue
        if not await asyncio.to_thread(authority.has_key, ca):
            log.error("ca_key_missing", ca=ca.name, engine=ca.engine, key_id=ca.key_id)
            missing.append(ca.name)
    return missing
