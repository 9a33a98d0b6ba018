"""Commands, queries, results and events of the DMS side, and the enrollment pipeline.

A DMS is a local registration authority: it holds a certificate issued by
``LAMASSU-DMS-MANAGER`` and a list of CAs it may enroll devices with. Event types follow
the original system: ``dms.create``, ``dms.update``, ``dms.enroll``, ``dms.reenroll``.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Annotated, ClassVar

from pydantic import (
    AwareDatetime,
    Field,
    field_validator,
    model_validator,
)

from contracts.ca import RevocationReason
from contracts.message import Message, Model, Update
from contracts.pki import NAME_PATTERN as _NAME

__all__ = [
    "AuthorizeEnrollment",
    "CreateDMS",
    "DMSCreated",
    "DMSEnrolled",
    "DMSReenrolled",
    "DMSStatus",
    "DMSUpdate",
    "DMSView",
    "DMSs",
    "DeviceOwnership",
    "DeviceOwnershipUpdate",
    "EnrollmentAuthorization",
    "EnrollmentKind",
    "EnrollmentRequest",
    "GetDMS",
    "ListDMSs",
    "RenewDMS",
    "RevokeDMS",
    "TransferDevice",
    "UpdateAuthorizedCAs",
    "UpdateDMSPolicy",
]


_SERIAL = r"^[0-9a-f]{2,40}$"
_SHA256_HEX = r"^[0-9a-f]{64}$"
_PEM_MAX = 65536

_CAName = Annotated[str, Field(pattern=_NAME)]
_WINDOW = Field(default=0, ge=0, le=36500)
_Pem = Annotated[str, Field(min_length=1, max_length=_PEM_MAX)]


class DMSStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"


class EnrollmentKind(enum.StrEnum):
    """The EST operation a request came from (RFC 7030 §4.2.1, §4.2.2, §4.4)."""

    ENROLL = "enroll"
    REENROLL = "reenroll"
    SERVERKEYGEN = "serverkeygen"


# --- commands and queries (routed on lamassu.commands) -----------------------------


class CreateDMS(Message):
    """Register a DMS; LAMASSU-DMS-MANAGER signs its CSR.

    When the operator has no key yet, the ``lamassu`` CLI generates one locally and
    sends only the CSR, so a DMS private key never travels over the bus.
    """

    TYPE: ClassVar[str] = "dms.create"
    name: str = Field(pattern=_NAME)
    authorized_cas: list[_CAName] = Field(min_length=1)
    csr_pem: _Pem
    # simpleenroll may put a new certificate in a slot that holds a live one.
    allow_replace: bool = False
    # Days before expiry from which a device may re-enroll; 0: any time.
    reenroll_window_days: int = _WINDOW
    # A renewal (or replacement) revokes the certificate it supersedes.
    revoke_on_reenroll: bool = True
    # The issuance profile of its devices' certificates; None: each CA's own.
    profile: str | None = Field(default=None, pattern=_NAME)
    # Enrollments must be linked to their TLS connection (RFC 7030 §3.5).
    require_pop: bool = False

    @field_validator("authorized_cas")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if twice := sorted(name for name, count in Counter(names).items() if count > 1):
            raise ValueError(f"authorized_cas lists {', '.join(twice)} more than once")
        return names


class UpdateAuthorizedCAs(Message):
    """Add CAs to and remove CAs from a DMS's allow-list, in one step."""

    TYPE: ClassVar[str] = "dms.update-authorized-cas"
    name: str = Field(min_length=1, max_length=64)
    add: list[_CAName] = Field(default_factory=list)
    remove: list[_CAName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_change(self) -> UpdateAuthorizedCAs:
        if not self.add and not self.remove:
            raise ValueError("nothing to change: add and remove are both empty")
        if both := sorted(set(self.add) & set(self.remove)):
            raise ValueError(f"{', '.join(both)} is both added and removed")
        return self


class UpdateDMSPolicy(Message):
    """Change a DMS's enrollment policy; fields left out keep their value."""

    TYPE: ClassVar[str] = "dms.update-policy"
    name: str = Field(min_length=1, max_length=64)
    allow_replace: bool | None = None
    reenroll_window_days: int | None = Field(default=None, ge=0, le=36500)
    revoke_on_reenroll: bool | None = None
    profile: str | None = Field(default=None, pattern=_NAME)
    require_pop: bool | None = None

    @model_validator(mode="after")
    def _one_change(self) -> UpdateDMSPolicy:
        if (
            self.allow_replace,
            self.reenroll_window_days,
            self.revoke_on_reenroll,
            self.profile,
            self.require_pop,
        ) == (None, None, None, None, None):
            raise ValueError("nothing to change: no policy field is given")
        return self


class RenewDMS(Message):
    """Issue a DMS a new certificate (LAMASSU-DMS-MANAGER signs its CSR); the one it
    replaces keeps authenticating it for ``overlap_days`` (at most until it expires)."""

    TYPE: ClassVar[str] = "dms.renew"
    name: str = Field(min_length=1, max_length=64)
    csr_pem: _Pem
    overlap_days: int = Field(default=7, ge=0, le=365)


class RevokeDMS(Message):
    """Revoke a DMS: it authorizes no more enrollments; device certificates stay."""

    TYPE: ClassVar[str] = "dms.revoke"
    name: str = Field(min_length=1, max_length=64)
    reason: RevocationReason = RevocationReason.UNSPECIFIED


class GetDMS(Message):
    TYPE: ClassVar[str] = "dms.get"
    name: str = Field(min_length=1, max_length=64)


class ListDMSs(Message):
    TYPE: ClassVar[str] = "dms.list"
    status: DMSStatus | None = None
    limit: int = Field(default=100, gt=0, le=1000)
    after: str | None = Field(default=None, description="Name to page after.")


class TransferDevice(Message):
    """Give a device to another DMS (an admin act): only its owner enrolls it."""

    TYPE: ClassVar[str] = "dms.transfer-device"
    device_id: str = Field(pattern=_NAME)
    dms: str = Field(pattern=_NAME)


class EnrollmentRequest(Message):
    """An EST request as the gateway received it, for the DMS worker to authorize.

    ``request_id`` is the SHA-256 of what the request means (operation, label, client
    certificate, the CSR's public key, subject and requested extensions; not its
    signature), so a client retrying after a 202 (RFC 7030 §4.2.3), even with a
    re-signed CSR, finds the result of its first attempt. For serverkeygen the gateway generates the key and sends a
    CSR for it, so the private key never crosses the bus.
    """

    TYPE: ClassVar[str] = "enrollment.request"
    kind: EnrollmentKind
    label: _CAName
    csr_pem: _Pem
    client_certificate_chain_pem: list[_Pem] = Field(
        default_factory=list,
        description="The TLS client chain, leaf first (RFC 8446 §4.4.2); empty: none.",
    )
    request_id: str = Field(pattern=_SHA256_HEX)
    # The CSR's challengePassword was the TLS 1.2 tls-unique of the request's own
    # connection (RFC 7030 §3.5), checked by the gateway.
    pop_linked: bool = False


class AuthorizeEnrollment(EnrollmentRequest):
    """Ask only whether an EST request would be authorized, and sign nothing: the
    gateway asks before it spends a key generation on serverkeygen (RFC 7030 §4.4)."""

    TYPE: ClassVar[str] = "enrollment.authorize"


# --- results and event payloads ------------------------------------------------------


class DMSView(Model):
    """A DMS as replies and events show it (``dms.create`` data)."""

    name: str
    status: DMSStatus
    authorized_cas: list[str]
    certificate_serial: str
    certificate_pem: str
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None
    revocation_reason: RevocationReason | None = None
    allow_replace: bool = False
    reenroll_window_days: int = 0
    revoke_on_reenroll: bool = True
    # The certificate a renewal replaced, and until when it still authenticates.
    previous_certificate_serial: str | None = None
    previous_valid_until: AwareDatetime | None = None
    profile: str | None = None
    require_pop: bool = False


class DMSs(Model):
    items: list[DMSView]


class DMSCreated(DMSView, Message):
    """``dms.create``: a DMS was created (its data is the DMS's view)."""

    TYPE: ClassVar[str] = "dms.create"


class DMSUpdate(Update[DMSView]):
    """``dms.update``: a DMS changed (its CAs, its policy, its certificate, its status)."""

    TYPE: ClassVar[str] = "dms.update"


class EnrollmentAuthorization(Model):
    """The answer to ``enrollment.authorize``: who the request enrolls, for which DMS."""

    device_id: str
    slot: str
    dms: str | None


class DeviceOwnership(Model):
    """Which DMS a device belongs to: the one that registered or first enrolled it."""

    device_id: str
    dms: str
    since: AwareDatetime


class DeviceOwnershipUpdate(Message):
    """``device.ownership.update`` data: a device was transferred to another DMS."""

    TYPE: ClassVar[str] = "device.ownership.update"
    previous: DeviceOwnership | None
    updated: DeviceOwnership


class DMSEnrolled(Message):
    """``dms.enroll`` data: the certificate a DMS had issued to a device slot."""

    TYPE: ClassVar[str] = "dms.enroll"
    dms: str
    device_id: str
    slot: str
    serial: str = Field(pattern=_SERIAL)
    ca: str
    not_before: AwareDatetime
    not_after: AwareDatetime


class DMSReenrolled(DMSEnrolled):
    """``dms.reenroll`` data: a device renewed its certificate (RFC 7030 §4.2.2)."""

    TYPE: ClassVar[str] = "dms.reenroll"
