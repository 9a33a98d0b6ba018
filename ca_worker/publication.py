"""What the CA worker signs for the validation authority: CRLs (``crl.sign``) and
delegated OCSP responder certificates (``ocsp.responder.issue``), plus their routing
table ``VA_HANDLERS``. The CA worker stays the only holder of CA keys.

CRL entries come from this worker's own records, not from the VA's projection: the
``ca`` schema is where a revocation is decided, so a CRL signed here lists every
revocation committed before it, whatever the VA has consumed yet; a command carrying
100,000 entries would also be a message of megabytes in the wrong direction.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_worker.authorities import SignerAuthority
from ca_worker.context import SOURCE, CaContext
from ca_worker.crl_store import CRLStore
from ca_worker.errors import BadCSR, CANotFound, CAUnusable
from ca_worker.issuance import csr_fingerprint, issuable_csr, new_serial
from ca_worker.revocation import RevokedEntry, build_crl, build_responder_certificate
from ca_worker.store import NewCertificate
from contracts.ca import CAView, CertificateCreated, CertificateStatus
from contracts.envelope import CloudEvent, new_message
from contracts.pki import CSRRejected
from contracts.va import (
    CRLCreated,
    CRLScope,
    CRLView,
    IssueResponderCertificate,
    SignCRL,
)
from runtime.routes import Mode, Outcome, Route, routes

__all__ = ["VA_HANDLERS", "issue_responder_certificate", "sign_crl"]


_USABLE = {CertificateStatus.ACTIVE, CertificateStatus.ABOUT_TO_EXPIRE}

# A revocation committed just after a full CRL read its entries may carry a time a
# little before that CRL's thisUpdate (its own clock reading): a delta lists what was
# revoked since that much before its base, which at worst repeats an entry of the base.
_DELTA_OVERLAP = timedelta(minutes=5)


async def _signer(ctx: CaContext, name: str) -> tuple[CAView, SignerAuthority]:
    """A CA that may sign now, kept by an engine whose key signs here."""
    ca = await ctx.deps.store.get_ca(ctx.conn, name)
    if ca is None:
        raise CANotFound(name)
    if ca.status not in _USABLE or ca.not_after <= ctx.now:
        raise CAUnusable(f"CA {name!r} cannot sign: it is {ca.status.value.lower()}")
    authority = ctx.deps.authorities.get(ca.engine)
    # The authorities may be wrapped (ca_worker/metrics.py times their signing).
    authority = getattr(authority, "inner", authority)
    if not isinstance(authority, SignerAuthority):
        raise CAUnusable(
            f"CA {name!r} is kept by engine {ca.engine!r}, which does not sign "
            "CRLs or responder certificates here (a Vault PKI mount publishes its own)"
        )
    return ca, authority


def _view(
    ca: str, crl: x509.CertificateRevocationList, entries: int, base: int | None
) -> CRLView:
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    next_update = crl.next_update_utc
    if next_update is None:
        raise RuntimeError(f"the CRL of {ca!r} has no nextUpdate; build_crl sets one")
    return CRLView(
        ca=ca,
        number=str(number),
        delta_base=None if base is None else str(base),
        this_update=crl.last_update_utc,
        next_update=next_update,
        entries=entries,
        crl_der_b64=base64.b64encode(
            crl.public_bytes(serialization.Encoding.DER)
        ).decode(),
    )


def _event(ctx: CaContext, view: CRLView) -> CloudEvent:
    return new_message(
        source=SOURCE,
        subject=f"crl/{view.ca}/{view.number}",
        data=CRLCreated.of(view),
        now=ctx.now,
        correlation_id=ctx.correlation_id,
    )


def _sign(
    authority: SignerAuthority,
    ca: CAView,
    *,
    number: int,
    entries: list[RevokedEntry],
    now: datetime,
    hours: int,
    base: int | None,
) -> CRLView:
    url = authority.va_url(ca.name).rstrip("/")
    crl = build_crl(
        issuer=authority.issuer(ca),
        number=number,
        entries=entries,
        this_update=now,
        next_update=now + timedelta(hours=hours),
        delta_base=base,
        delta_url=f"{url}/crl/{ca.name}-delta.crl" if url else None,
    )
    return _view(ca.name, crl, len(entries), base)


async def sign_crl(cmd: SignCRL, ctx: CaContext) -> Outcome:
    """Sign a full CRL and its (first) delta, or a new delta; publish ``crl.create``
    for each. Signing runs in a thread: 100,000 entries take about half a second."""
    ca, authority = await _signer(ctx, cmd.ca)
    store = CRLStore()
    numbers = None
    if cmd.scope is CRLScope.DELTA:
        numbers = await store.next_delta(ctx.conn, ca.name)
    views = []
    if numbers is None:  # a full CRL asked for, or no full CRL yet to be a base
        numbers, previous = await store.next_full(ctx.conn, ca.name, ctx.now)
        # Expired before the previous full CRL: that CRL, issued after their expiry,
        # listed them, so they may go (RFC 5280 §5); the CRL does not grow forever.
        entries = await store.revoked(ctx.conn, ca.name, expired_before=previous)
        views.append(
            await asyncio.to_thread(
                _sign,
                authority,
                ca,
                number=numbers.number,
                entries=entries,
                now=ctx.now,
                hours=cmd.validity_hours,
                base=None,
            )
        )
        numbers = await store.next_delta(ctx.conn, ca.name)
        if numbers is None:
            raise RuntimeError(f"no CRL numbers for {ca.name!r} after its full CRL")
    since = numbers.full_this_update - _DELTA_OVERLAP
    entries = await store.revoked(ctx.conn, ca.name, since=since)
    views.append(
        await asyncio.to_thread(
            _sign,
            authority,
            ca,
            number=numbers.number,
            entries=entries,
            now=ctx.now,
            hours=cmd.delta_validity_hours,
            base=numbers.full_number,
        )
    )
    return Outcome(views[0], [_event(ctx, view) for view in views])


async def issue_responder_certificate(
    cmd: IssueResponderCertificate, ctx: CaContext
) -> Outcome:
    """Issue the VA's responder certificate for a CA; stored and announced like any
    certificate (``certificate.create``), so it can be listed and revoked."""
    try:
        csr = issuable_csr(cmd.csr_pem.encode())
    except CSRRejected as exc:
        raise BadCSR(str(exc)) from None
    ca, authority = await _signer(ctx, cmd.ca)
    now, validity = ctx.now, timedelta(hours=cmd.validity_hours)

    def build() -> x509.Certificate:
        return build_responder_certificate(
            csr=csr,
            issuer=authority.issuer(ca),
            serial=new_serial(),
            now=now,
            validity=validity,
        )

    # In a thread when the key is in an HSM or Vault, as leaves are signed.
    certificate = build() if authority.in_process else await asyncio.to_thread(build)
    view = await ctx.deps.store.insert_certificate(
        ctx.conn, NewCertificate(ca.name, csr_fingerprint(csr), certificate)
    )
    if view is None:
        raise RuntimeError("a certificate without a request id conflicted on insert")
    event = new_message(
        source=SOURCE,
        subject=f"certificate/{view.serial}",
        data=CertificateCreated.of(view),
        now=ctx.now,
        correlation_id=ctx.correlation_id,
    )
    return Outcome(view, [event])


VA_HANDLERS = routes(
    Route(SignCRL, sign_crl, mode=Mode.ALONE),
    Route(IssueResponderCertificate, issue_responder_certificate),
)
