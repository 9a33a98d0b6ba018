"""Commands, queries, results and events of the CA side.

Type strings follow the original system where an equivalent exists (``ca.create``,
``certificate.create``, ``certificate.status.update``, ``ca.status.update``).
"""

from __future__ import annotations

import enum
from typing import ClassVar

from pydantic import AwareDatetime, Field

from contracts.keys import KeyType
from contracts.message import Message, Model, Update
from contracts.pki import DEFAULT_SLOT, INTERNAL_CA, RevocationReason
from contracts.pki import NAME_PATTERN as _NAME

__all__ = [
    "INTERNAL_CA",
    "CACreated",
    "CAStatusUpdate",
    "CAUpdate",
    "CAView",
    "CAs",
    "CertificateCreated",
    "CertificateStatus",
    "CertificateStatusUpdate",
    "CertificateView",
    "Certificates",
    "CreateCA",
    "GetCA",
    "GetCertificate",
    "IssueCertificate",
    "ListCAs",
    "ListCertificates",
    "RevocationReason",
    "RevokeCA",
    "RevokeCertificate",
    "RevokeDeviceCertificates",
    "SignCertificate",
    "UpdateCA",
]

_SERIAL = r"^[0-9a-f]{2,40}$"

# Days before not_after at which a certificate turns ABOUT_TO_EXPIRE; per CA, unlike the
# original's fixed 30. 0 turns the warning off (the certificate goes straight to EXPIRED).
_ABOUT_TO_EXPIRE = Field(default=30, ge=0, le=3650)


class CertificateStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    ABOUT_TO_EXPIRE = "ABOUT_TO_EXPIRE"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"


# --- commands and queries (routed on lamassu.commands) -----------------------------


class CreateCA(Message):
    """Create a root CA, or a subordinate CA when ``parent`` names an existing CA."""

    TYPE: ClassVar[str] = "ca.create"
    name: str = Field(pattern=_NAME)
    parent: str | None = Field(default=None, pattern=_NAME)
    key_type: KeyType = KeyType.EC_P256
    validity_days: int = Field(default=3650, gt=0, le=36500)
    # The crypto engine that keeps the CA's key: one the CA worker has configured
    # (ENGINE/ENGINES); None means its default, ENGINE.
    engine: str | None = None
    about_to_expire_days: int = _ABOUT_TO_EXPIRE
    # The issuance profile of its leaves (contracts.profiles); None: 'client'.
    profile: str | None = Field(default=None, pattern=_NAME)
    # RFC 5280 §4.2.1.9 pathLenConstraint: how many CAs may follow it; None: no limit.
    path_length: int | None = Field(default=None, ge=0, le=10)


class UpdateCA(Message):
    """Change what may change of a CA: for now its about-to-expire threshold.

    Statuses only move forward (ACTIVE, ABOUT_TO_EXPIRE, EXPIRED), so a shorter
    threshold leaves already-warned certificates as they are; a longer one takes
    effect at the next sweep.
    """

    TYPE: ClassVar[str] = "ca.update"
    name: str = Field(min_length=1, max_length=64)
    about_to_expire_days: int = Field(ge=0, le=3650)
    # Needed to turn off the internal CA's warning (it would expire unnoticed).
    force: bool = False


class GetCA(Message):
    TYPE: ClassVar[str] = "ca.get"
    name: str = Field(min_length=1, max_length=64)


class ListCAs(Message):
    TYPE: ClassVar[str] = "ca.list"


class RevokeCA(Message):
    """Revoke a CA and, with it, everything it issued (RFC 5280 §6: the chain breaks)."""

    TYPE: ClassVar[str] = "ca.revoke"
    name: str = Field(min_length=1, max_length=64)
    reason: RevocationReason = RevocationReason.UNSPECIFIED
    # Needed for LAMASSU-DMS-MANAGER: revoking it revokes every DMS.
    force: bool = False


class SignCertificate(Message):
    """Sign a PKCS#10 CSR (RFC 2986) with the named CA."""

    TYPE: ClassVar[str] = "certificate.sign"
    ca: str = Field(min_length=1, max_length=64)
    csr_pem: str = Field(min_length=1, max_length=65536)
    validity_days: int = Field(default=365, gt=0, le=36500)
    # The issuance profile; None: the CA's.
    profile: str | None = Field(default=None, pattern=_NAME)
    # A validity beyond the profile's or the CA's is refused unless this is set; then
    # it is cut to the longest allowed, and the reply's not_after says what was issued.
    cap_validity: bool = False


class IssueCertificate(Message):
    """Sign for an enrollment the DMS worker has authorized (the EST pipeline's hop).

    ``request_id`` makes it idempotent: a retried request gets the certificate the first
    one produced. For re-enrollment, ``replaces`` is the serial the device presented;
    it must still be valid here (not revoked), which also refuses decommissioned devices.
    """

    TYPE: ClassVar[str] = "certificate.issue"
    ca: str = Field(min_length=1, max_length=64)
    csr_pem: str = Field(min_length=1, max_length=65536)
    request_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    device_id: str = Field(min_length=1, max_length=64)
    slot: str = Field(default=DEFAULT_SLOT, min_length=1, max_length=64)
    dms: str | None = None
    replaces: str | None = Field(default=None, pattern=_SERIAL)
    validity_days: int = Field(default=365, gt=0, le=36500)
    # simpleenroll into a slot that holds a live certificate (the DMS's policy).
    allow_replace: bool = False
    # Revoke the certificate this one supersedes in its slot (reason superseded), in
    # the transaction that stores this one (the DMS's revoke-on-reenroll).
    revoke_replaced: bool = False
    # The DMS's issuance profile, overriding the CA's; None: the CA's.
    profile: str | None = None


class GetCertificate(Message):
    TYPE: ClassVar[str] = "certificate.get"
    serial: str = Field(pattern=_SERIAL)


class ListCertificates(Message):
    TYPE: ClassVar[str] = "certificate.list"
    ca: str | None = None
    status: CertificateStatus | None = None
    limit: int = Field(default=100, gt=0, le=1000)
    after: str | None = Field(default=None, description="Serial to page after.")


class RevokeCertificate(Message):
    TYPE: ClassVar[str] = "certificate.revoke"
    serial: str = Field(pattern=_SERIAL)
    reason: RevocationReason = RevocationReason.UNSPECIFIED


class RevokeDeviceCertificates(Message):
    """Revoke every live certificate ever issued to a device (its decommissioning)."""

    TYPE: ClassVar[str] = "certificate.revoke-device"
    device_id: str = Field(min_length=1, max_length=64)
    reason: RevocationReason = RevocationReason.CESSATION_OF_OPERATION


# --- results and event payloads ------------------------------------------------------


class CAView(Model):
    """A CA as replies and events show it (``ca.create`` data)."""

    name: str
    parent: str | None
    internal: bool
    key_type: KeyType
    key_id: str
    engine: str
    serial: str
    subject: str
    status: CertificateStatus
    not_before: AwareDatetime
    not_after: AwareDatetime
    revoked_at: AwareDatetime | None = None
    revocation_reason: RevocationReason | None = None
    certificate_pem: str
    about_to_expire_days: int = 30
    profile: str | None = None


class CertificateView(Model):
    """An issued certificate (``certificate.create`` data)."""

    serial: str
    ca: str
    subject: str
    issuer: str
    status: CertificateStatus
    not_before: AwareDatetime
    not_after: AwareDatetime
    revoked_at: AwareDatetime | None = None
    revocation_reason: RevocationReason | None = None
    csr_fingerprint: str
    certificate_pem: str
    # Set for certificates issued through enrollment: whose identity this is.
    device_id: str | None = None
    slot: str | None = None
    dms: str | None = None
    replaces: str | None = None


class CAs(Model):
    items: list[CAView]


class Certificates(Model):
    items: list[CertificateView]


# --- events (published on lamassu.events) -------------------------------------------


class CACreated(CAView, Message):
    """``ca.create``: a CA was created (its data is the CA's view)."""

    TYPE: ClassVar[str] = "ca.create"


class CertificateCreated(CertificateView, Message):
    """``certificate.create``: a certificate was issued (its data is its view)."""

    TYPE: ClassVar[str] = "certificate.create"


class CertificateStatusUpdate(Update[CertificateView]):
    """``certificate.status.update``: a certificate's status moved."""

    TYPE: ClassVar[str] = "certificate.status.update"


class CAStatusUpdate(Update[CAView]):
    """``ca.status.update``: a CA's status moved."""

    TYPE: ClassVar[str] = "ca.status.update"


class CAUpdate(Update[CAView]):
    """``ca.update``: a CA's settings changed (not its status)."""

    TYPE: ClassVar[str] = "ca.update"
