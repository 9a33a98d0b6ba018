"""One function per VA message type, plus the routing tables at the bottom.

Event handlers write the projection in the dispatcher's transaction and update the hot
copy (``Served``) at once: statuses only move forward, so an update seen before its
commit, or again on a redelivery, says nothing that will not stay true.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import timedelta

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import (
    CACreated,
    CAStatusUpdate,
    CAView,
    CertificateCreated,
    CertificateStatusUpdate,
    CertificateView,
)
from contracts.va import CRLCreated, CRLView, GetCRL
from engines import Engine, EngineError
from runtime.errors import Invalid
from runtime.routes import Context, Mode, Outcome, Route, routes
from va_worker.errors import CRLNotFound
from va_worker.ocsp import CertState, ResponderKey
from va_worker.served import CRL, Served
from va_worker.store import CRLRow, Store

__all__ = [
    "COMMAND_HANDLERS",
    "EVENT_HANDLERS",
    "VaContext",
    "VaDeps",
    "crl_of",
    "responder_key",
]

log = structlog.get_logger("va_worker")


@dataclass(frozen=True, slots=True)
class VaDeps:
    """What every VA handler may use, built once in ``__main__``."""

    store: Store
    served: Served
    engine: Engine
    crl_debounce: timedelta


# Per message: the connection, the clock reading, the causing request, the deps.
VaContext = Context[VaDeps]


def _certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise Invalid(f"certificate_pem: not a PEM certificate ({exc})") from None


def responder_key(engine: Engine, key_id: str, der: bytes) -> ResponderKey:
    """A responder's certificate with its key object from the VA's engine."""
    return ResponderKey(x509.load_der_x509_certificate(der), engine.signer(key_id))


def crl_of(row: CRLRow) -> CRL:
    return CRL(row.number, row.der, row.this_update, row.next_update, row.entries)


async def _ca(view: CAView, ctx: VaContext) -> None:
    certificate = _certificate(view.certificate_pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    await ctx.deps.store.upsert_ca(ctx.conn, view.name, der, view.status, ctx.now)
    ctx.deps.served.add_ca(view.name, certificate)


async def ca_created(view: CAView, ctx: VaContext) -> Outcome:
    """A new CA: answer for it, and have its first CRL signed (due now)."""
    await _ca(view, ctx)
    return Outcome()


async def ca_status_updated(update: CAStatusUpdate, ctx: VaContext) -> Outcome:
    """A CA changed status; a revoked subordinate goes on its parent's next delta."""
    updated = update.updated
    await _ca(updated, ctx)
    if updated.parent is not None and updated.revoked_at is not None:
        await ctx.deps.store.hasten_delta(
            ctx.conn,
            updated.parent,
            updated.revoked_at,
            ctx.now + ctx.deps.crl_debounce,
        )
    return Outcome()


async def _certificate_status(
    view: CertificateView, ctx: VaContext, *, created: bool
) -> None:
    state = CertState(view.status, view.revoked_at, view.revocation_reason)
    deps = ctx.deps
    recorded = await deps.store.upsert_certificate(
        ctx.conn, view.ca, view.serial, state
    )
    if recorded is None:
        return  # already as far along: a redelivery or an older event
    if created or recorded.revoked:
        # ABOUT_TO_EXPIRE and EXPIRED answer good as ACTIVE does: nothing to sign
        # again for a sweep's thousands of them.
        deps.served.update(view.ca, int(view.serial, 16), recorded, ctx.now)
    if recorded.revoked and recorded.revoked_at is not None:
        await deps.store.hasten_delta(
            ctx.conn, view.ca, recorded.revoked_at, ctx.now + deps.crl_debounce
        )


async def certificate_created(view: CertificateView, ctx: VaContext) -> Outcome:
    """A new certificate; if it is the responder certificate asked for, install it."""
    await _certificate_status(view, ctx, created=True)
    certificate = _certificate(view.certificate_pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    key_id = await ctx.deps.store.responder_issued(
        ctx.conn, view.ca, view.csr_fingerprint, der, view.not_after
    )
    if key_id is not None:
        try:
            responder = responder_key(ctx.deps.engine, key_id, der)
        except EngineError as exc:
            raise Invalid(f"responder key {key_id} is not in VA_KEYS: {exc}") from None
        ctx.deps.served.set_responder(view.ca, responder)
        log.info(
            "ocsp_responder_installed",
            ca=view.ca,
            serial=view.serial,
            not_after=view.not_after.isoformat(),
        )
    return Outcome()


async def certificate_status_updated(
    update: CertificateStatusUpdate, ctx: VaContext
) -> Outcome:
    await _certificate_status(update.updated, ctx, created=False)
    return Outcome()


async def crl_created(view: CRLView, ctx: VaContext) -> Outcome:
    """A CRL the CA worker signed: serve it unless a newer one is served, and plan the
    next one for when a quarter of its validity is left."""
    try:
        der = base64.b64decode(view.crl_der_b64, validate=True)
        x509.load_der_x509_crl(der)
    except (binascii.Error, ValueError) as exc:
        raise Invalid(f"crl_der_b64: not a DER CRL ({exc})") from None
    row = CRLRow(
        view.ca,
        view.delta_base is not None,
        int(view.number),
        view.this_update,
        view.next_update,
        view.entries,
        der,
    )
    if not await ctx.deps.store.store_crl(ctx.conn, row):
        return Outcome()
    ctx.deps.served.set_crl(view.ca, delta=row.delta, crl=crl_of(row))
    refresh = view.next_update - (view.next_update - view.this_update) / 4
    await ctx.deps.store.schedule_crls(
        ctx.conn,
        view.ca,
        signed_at=view.this_update,
        full=None if row.delta else refresh,
        delta=refresh,
    )
    log.info("crl_stored", ca=view.ca, number=view.number, delta=row.delta)
    return Outcome()


async def get_crl(query: GetCRL, ctx: VaContext) -> Outcome:
    crl = ctx.deps.served.crl(query.ca, delta=query.delta)
    if crl is None:
        raise CRLNotFound(query.ca, delta=query.delta)
    parsed = x509.load_der_x509_crl(crl.der)
    base = None
    if query.delta:
        indicator = parsed.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        base = str(indicator.value.crl_number)
    return Outcome(
        CRLView(
            ca=query.ca,
            number=str(crl.number),
            delta_base=base,
            this_update=crl.this_update,
            next_update=crl.next_update,
            entries=crl.entries,
            crl_der_b64=base64.b64encode(crl.der).decode(),
        )
    )


EVENT_HANDLERS = routes(
    Route(CACreated, ca_created),
    Route(CAStatusUpdate, ca_status_updated),
    Route(CertificateCreated, certificate_created),
    Route(CertificateStatusUpdate, certificate_status_updated),
    Route(CRLCreated, crl_created),
)

COMMAND_HANDLERS = routes(Route(GetCRL, get_crl, mode=Mode.READ))
