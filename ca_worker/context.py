"""What every CA handler works with: its dependencies and per-message context, the
events it emits, the CA that may sign now, and revocations told to the engines."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from cryptography import x509

from ca_worker.authorities import Authority
from ca_worker.errors import (
    CANotFound,
    CAUnusable,
)
from ca_worker.expiry import status_at
from ca_worker.profile_store import ProfileStore
from ca_worker.slot_store import SlotStore
from ca_worker.store import StatusChange, Store
from contracts.ca import (
    CAStatusUpdate,
    CAView,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
)
from contracts.envelope import CloudEvent, new_message
from contracts.message import Message
from contracts.names import Source
from runtime.routes import Context

__all__ = [
    "SOURCE",
    "USABLE",
    "CaContext",
    "CaDeps",
    "initial_status",
    "mirror_revocations",
    "new_event",
    "signing_ca",
    "status_events",
]

SOURCE = Source.CA


USABLE = {CertificateStatus.ACTIVE, CertificateStatus.ABOUT_TO_EXPIRE}


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


# Per message: the connection, the clock reading, the causing request, the deps.
CaContext = Context[CaDeps]


def new_event(ctx: CaContext, subject: str, data: Message) -> CloudEvent:
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
        events.append(new_event(ctx, subject, data))
    return events


async def signing_ca(ctx: CaContext, name: str) -> tuple[CAView, Authority]:
    """A CA that may sign now, with its engine's authority; refuses revoked or expired
    CAs, and CAs whose engine this worker has not opened."""
    ca = await ctx.deps.store.get_ca(ctx.conn, name)
    if ca is None:
        raise CANotFound(name)
    if ca.status not in USABLE or ca.not_after <= ctx.now:
        raise CAUnusable(f"CA {name!r} cannot sign: it is {ca.status.value.lower()}")
    authority = ctx.deps.authorities.get(ca.engine)
    if authority is None:
        raise CAUnusable(
            f"CA {name!r} is kept by engine {ca.engine!r}, which this CA worker has "
            "not configured (ENGINE/ENGINES)"
        )
    return ca, authority


async def mirror_revocations(ctx: CaContext, revoked: Mapping[str, list[str]]) -> None:
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


def initial_status(
    ca: CAView, certificate: x509.Certificate, now: datetime
) -> CertificateStatus:
    """A certificate issued inside its CA's warning period starts ABOUT_TO_EXPIRE."""
    return status_at(
        CertificateStatus.ACTIVE,
        certificate.not_valid_after_utc,
        now,
        ca.about_to_expire_days,
    )
