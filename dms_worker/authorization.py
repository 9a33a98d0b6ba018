"""Pure authorization of EST enrollments: may this TLS client have this CSR signed?

No I/O: the caller looks up the DMS, the revoked serials and the CAs, and passes ``now``.
Each refusal carries the error code and one line naming exactly which check failed.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from contracts.dms import DMSStatus
from contracts.errors import ErrorCode

__all__ = [
    "DMSRecord",
    "Decision",
    "RenewalPolicy",
    "authorize_enrollment",
    "authorize_owner",
    "authorize_pop",
    "authorize_reenrollment",
    "authorize_renewal_window",
    "certificate_serial",
]


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    """A DMS's renewal rules for its devices (issue 14)."""

    # Days before expiry from which re-enrollment is allowed; 0: any time.
    window_days: int = 0
    # A renewal revokes the certificate it supersedes (reason superseded).
    revoke_on_reenroll: bool = True


@dataclass(frozen=True, slots=True)
class DMSRecord:
    """What authorization needs to know about a DMS."""

    name: str
    status: DMSStatus
    authorized_cas: Collection[str]
    certificate_serial: str
    # The DMS certificate as the CA worker issued it, when the caller has it: a client
    # certificate equal to it byte for byte needs no signature check.
    certificate_der: bytes | None = None
    # simpleenroll may replace a live certificate in a device slot.
    allow_replace: bool = False
    renewal: RenewalPolicy = field(default_factory=RenewalPolicy)
    # The issuance profile of its devices (None: each CA's).
    profile: str | None = None
    # Enrollments must be linked to their TLS connection (RFC 7030 §3.5).
    require_pop: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed, or refused with a closed-set code and a one-line reason."""

    allowed: bool
    code: ErrorCode | None = None
    reason: str = "authorized"

    @classmethod
    def allow(cls) -> Decision:
        return cls(allowed=True)

    @classmethod
    def refuse(cls, code: ErrorCode, reason: str) -> Decision:
        return cls(allowed=False, code=code, reason=reason)


def _forbidden(reason: str) -> Decision:
    return Decision.refuse(ErrorCode.FORBIDDEN, reason)


def certificate_serial(certificate: x509.Certificate) -> str:
    """Lower-case hex with an even number of digits, as serials are stored."""
    text = format(certificate.serial_number, "x")
    return text if len(text) % 2 == 0 else "0" + text


def _common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()


def _credential_refusal(
    certificate: x509.Certificate,
    ca: x509.Certificate,
    revoked_serials: Container[str],
    now: datetime,
    *,
    allow_expired: bool = False,
    issued_as_is: bool = False,
) -> Decision | None:
    """Why ``certificate`` is no credential from ``ca`` at ``now``, or None if it is.

    RFC 5280 §6.1.3 (a): signature (1), validity (2, bounds included per §4.1.2.5),
    revocation (3) and issuer name (4). ``issued_as_is``: the caller knows these very
    bytes came from ``ca``, so the signature (an ECDSA or RSA verification) is not
    checked again.
    """
    ca_name = _common_name(ca.subject)
    if certificate.issuer != ca.subject:
        return _forbidden(
            f"the client certificate was issued by {certificate.issuer.rfc4514_string()},"
            f" not by {ca_name}"
        )
    try:
        if not issued_as_is:
            certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return _forbidden(
            f"the client certificate's signature does not verify with {ca_name}"
        )
    if now < (not_before := certificate.not_valid_before_utc):
        return _forbidden(
            f"the client certificate is not valid before {not_before.isoformat()}"
        )
    if now > (not_after := certificate.not_valid_after_utc) and not allow_expired:
        return _forbidden(f"the client certificate expired at {not_after.isoformat()}")
    if (serial := certificate_serial(certificate)) in revoked_serials:
        return _forbidden(f"the client certificate {serial} is revoked")
    return None


def _allow_list_refusal(
    dms: DMSRecord | None, serial: str, label: str
) -> Decision | None:
    if dms is None or dms.certificate_serial != serial:
        return _forbidden(f"no DMS holds the client certificate {serial}")
    if dms.status is not DMSStatus.ACTIVE:
        return _forbidden(f"DMS {dms.name!r} is {dms.status.value.lower()}")
    if label not in dms.authorized_cas:
        return _forbidden(f"CA {label!r} is not in the allow-list of DMS {dms.name!r}")
    return None


def authorize_enrollment(
    chain: Sequence[x509.Certificate],
    *,
    dms_manager_ca: x509.Certificate,
    dms: DMSRecord | None,
    label: str,
    revoked_serials: Container[str],
    now: datetime,
) -> Decision:
    """May the DMS presenting ``chain`` (leaf first) enroll a device with CA ``label``?

    ``dms`` is the record whose certificate serial is the leaf's, or None when no DMS
    holds it. Only the leaf is checked: DMS certificates are issued directly by
    ``LAMASSU-DMS-MANAGER``, so any further certificates in the chain are ignored.
    """
    if not chain:
        return Decision.refuse(
            ErrorCode.UNAUTHORIZED, "no client certificate was presented"
        )
    leaf = chain[0]
    # The certificate on record for the DMS (issued to it by the CA worker) verified
    # once; the one presented every enrollment is usually that very certificate.
    issued_as_is = (
        dms is not None
        and dms.certificate_der is not None
        and dms.certificate_der == leaf.public_bytes(serialization.Encoding.DER)
    )
    if refusal := _credential_refusal(
        leaf, dms_manager_ca, revoked_serials, now, issued_as_is=issued_as_is
    ):
        return refusal
    return _allow_list_refusal(dms, certificate_serial(leaf), label) or Decision.allow()


def authorize_owner(device_id: str, *, dms: str, owner: str) -> Decision:
    """May DMS ``dms`` enroll a device that belongs to ``owner``?

    A device belongs to the DMS that registered or first enrolled it; another DMS
    would take its slots over (issue 14), so only an admin transfer moves it.
    """
    if owner == dms:
        return Decision.allow()
    return _forbidden(
        f"device {device_id!r} belongs to DMS {owner!r}, not {dms!r}: a device is"
        " enrolled only by the DMS that registered or first enrolled it"
        " (an admin may transfer it: lamassu device transfer)"
    )


def authorize_pop(*, required: bool, linked: bool, dms: str) -> Decision:
    """RFC 7030 §3.5: a DMS that requires linking takes only linked requests."""
    if linked or not required:
        return Decision.allow()
    return _forbidden(
        f"DMS {dms!r} requires proof-of-possession linking (RFC 7030 §3.5): the CSR's"
        " challengePassword must be the base64 tls-unique of this TLS 1.2 connection"
        " (TLS 1.3 has no tls-unique: use TLS 1.2)"
    )


def authorize_renewal_window(
    presented: x509.Certificate, *, policy: RenewalPolicy, dms: str, now: datetime
) -> Decision:
    """Is ``now`` inside the owner's re-enrollment window of ``presented``?"""
    if policy.window_days == 0:
        return Decision.allow()
    opens = presented.not_valid_after_utc - timedelta(days=policy.window_days)
    if now >= opens:
        return Decision.allow()
    return _forbidden(
        f"re-enrollment opens {policy.window_days} days before expiry, at"
        f" {opens.isoformat()}: the policy of DMS {dms!r} (--reenroll-window)"
    )


def _subject_alternative_names(
    extensions: x509.Extensions,
) -> frozenset[x509.GeneralName]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(san.value)


def _renewal_refusal(
    csr: x509.CertificateSigningRequest, current: x509.Certificate
) -> Decision | None:
    # RFC 7030 §4.2.2: Subject and SubjectAltName MUST be identical to the certificate
    # being renewed. Subjects compare RDN by RDN with exact values (the string encoding
    # may differ); SAN entries compare as a set, their order carrying no meaning.
    if csr.subject != current.subject:
        return _forbidden(
            f"the CSR subject {csr.subject.rfc4514_string()} differs from the"
            f" client certificate's {current.subject.rfc4514_string()}"
        )
    if _subject_alternative_names(csr.extensions) != _subject_alternative_names(
        current.extensions
    ):
        return _forbidden(
            "the CSR subjectAltName differs from the client certificate's"
        )
    return None


def authorize_reenrollment(
    presented: x509.Certificate | None,
    *,
    csr: x509.CertificateSigningRequest,
    issuing_ca: x509.Certificate,
    device_decommissioned: bool,
    revoked_serials: Container[str],
    now: datetime,
    allow_expired: bool = False,
) -> Decision:
    """May the device presenting its current certificate have ``csr`` signed by the CA?

    An expired certificate is refused unless ``allow_expired``: renewal authenticates
    with it (RFC 7030 §3.3.2) and it no longer validates (RFC 5280 §6.1.3 (a)(2)), so a
    device that let it lapse enrolls afresh through its DMS. Not yet valid: refused.
    """
    if presented is None:
        return Decision.refuse(
            ErrorCode.UNAUTHORIZED, "no client certificate was presented"
        )
    if refusal := _credential_refusal(
        presented, issuing_ca, revoked_serials, now, allow_expired=allow_expired
    ):
        return refusal
    if refusal := _renewal_refusal(csr, presented):
        return refusal
    if device_decommissioned:
        # The CN is ``[slot:]device-id`` (DESIGN §3).
        device_id = _common_name(presented.subject).rpartition(":")[2]
        return _forbidden(f"device {device_id!r} is decommissioned")
    return Decision.allow()
