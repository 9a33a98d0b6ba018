"""The enrollment pipeline's handlers: authorize each EST request (RFC 7030 §3.3.2,
§4.2.1, §4.2.2) and the device's ownership, and forward what may be signed to the CA
worker, which answers the gateway. Pure rules are in ``authorization``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from contracts.ca import IssueCertificate
from contracts.dms import (
    AuthorizeEnrollment,
    EnrollmentAuthorization,
    EnrollmentKind,
    EnrollmentRequest,
)
from contracts.errors import ErrorCode
from contracts.pki import CSRRejected, DeviceIdentity, device_identity
from dms_worker.authorization import (
    Decision,
    DMSRecord,
    RenewalPolicy,
    authorize_enrollment,
    authorize_owner,
    authorize_pop,
    authorize_reenrollment,
    authorize_renewal_window,
    certificate_serial,
)
from dms_worker.context import DmsContext, csr, message
from dms_worker.errors import (
    BadClientCertificate,
    BadCSR,
    EnrollmentForbidden,
    NoClientCertificate,
)
from dms_worker.store import EnrollmentFacts
from runtime.errors import Failure
from runtime.routes import Batch, Outcome

__all__ = ["authorize_only", "authorize_requests"]

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
    if dms is None:  # refused above already; fail closed should that rule change
        raise EnrollmentForbidden("no DMS holds the client certificate")
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
    parsed = csr(request.csr_pem, check_signature=False)
    try:
        identity = device_identity(parsed)
    except CSRRejected as exc:
        raise BadCSR(str(exc)) from None
    return _Presented(parsed, identity, _chain(request.client_certificate_chain_pem))


async def authorize_requests(
    batch: Batch[EnrollmentRequest, DmsContext],
) -> list[Outcome]:
    """Authorize EST requests that arrived together, reading what they need with one
    statement, and forward each to the CA worker, which replies to the gateway. A
    refusal of any has the dispatcher send each again alone, for its own answer."""
    issues = await _decide(batch.items)
    return [
        Outcome(forward=message(item_ctx, f"device/{issue.device_id}", issue))
        for issue, (_, item_ctx) in zip(issues, batch.items, strict=True)
    ]


async def authorize_only(request: AuthorizeEnrollment, ctx: DmsContext) -> Outcome:
    """``enrollment.authorize``: the same decision, answered instead of forwarded."""
    (issue,) = await _decide([(request, ctx)])
    return Outcome(
        EnrollmentAuthorization(
            device_id=issue.device_id, slot=issue.slot, dms=issue.dms
        )
    )


async def _decide(
    items: Sequence[tuple[EnrollmentRequest, DmsContext]],
) -> list[IssueCertificate]:
    """What each request may have signed, or the refusal (a ``Failure``) of any."""
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
        ctx.now,
    )
    issues = [
        await _authorized(request, p, fact, item_ctx)
        for (request, item_ctx), p, fact in zip(items, presented, facts, strict=True)
    ]
    await _enforce_owners(issues, facts, ctx)
    return issues


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
    renewal = RenewalPolicy()
    profile: str | None = None
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
        if leaf is None:  # refused above already; fail closed should that rule change
            raise NoClientCertificate("no client certificate was presented")
        # The owner's policy; a device with none on record renews any time.
        renewal = facts.owner_policy or renewal
        _enforce(
            authorize_renewal_window(
                leaf, policy=renewal, dms=facts.owner or "", now=ctx.now
            )
        )
        replaces = certificate_serial(leaf)
        profile = facts.owner_profile
        _enforce(
            authorize_pop(
                required=facts.owner_requires_pop,
                linked=request.pop_linked,
                dms=facts.owner or "",
            )
        )
    else:
        dms = _authorize_enrollment(request, chain, facts.dms, ctx)
        if facts.dms is not None:
            allow_replace, renewal = facts.dms.allow_replace, facts.dms.renewal
            profile = facts.dms.profile
            _enforce(
                authorize_pop(
                    required=facts.dms.require_pop,
                    linked=request.pop_linked,
                    dms=facts.dms.name,
                )
            )
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
        revoke_replaced=renewal.revoke_on_reenroll,
        profile=profile,
    )
