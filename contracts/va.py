"""Commands, queries and events of the validation authority (OCSP and CRLs).

The VA never holds CA keys: CRLs are signed by the CA worker on ``crl.sign``, and the
VA's delegated OCSP responder certificates (RFC 6960 §4.2.2.2) are issued by it on
``ocsp.responder.issue``. The VA learns the results from ``crl.create`` and
``certificate.create`` events.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from pydantic import AwareDatetime, Field

from contracts.message import Message, Model
from contracts.pki import NAME_PATTERN as _NAME

__all__ = [
    "CRLCreated",
    "CRLScope",
    "CRLView",
    "GetCRL",
    "IssueResponderCertificate",
    "SignCRL",
]


class CRLScope(enum.StrEnum):
    """A full CRL (with the delta that goes with it), or only a new delta CRL."""

    FULL = "full"
    DELTA = "delta"


class SignCRL(Message):
    """Sign a CA's CRLs now (RFC 5280 §5), from the CA worker's own records.

    ``full`` signs a full CRL and a delta CRL based on it, so the pair served is always
    consistent; ``delta`` signs a delta CRL against the latest full one.
    """

    TYPE: ClassVar[str] = "crl.sign"
    ca: str = Field(min_length=1, max_length=64)
    scope: CRLScope = CRLScope.FULL
    validity_hours: int = Field(default=168, gt=0, le=24 * 366)
    delta_validity_hours: int = Field(default=24, gt=0, le=24 * 366)


class IssueResponderCertificate(Message):
    """Issue a delegated OCSP responder certificate for the VA's key (RFC 6960
    §4.2.2.2): id-kp-OCSPSigning and id-pkix-ocsp-nocheck, short-lived."""

    TYPE: ClassVar[str] = "ocsp.responder.issue"
    ca: str = Field(pattern=_NAME)
    csr_pem: str = Field(min_length=1, max_length=65536)
    validity_hours: int = Field(default=168, gt=0, le=24 * 90)


class GetCRL(Message):
    """The CRL the VA serves for a CA (``lamassu crl show``)."""

    TYPE: ClassVar[str] = "crl.get"
    ca: str = Field(min_length=1, max_length=64)
    delta: bool = False


class CRLView(Model):
    """A signed CRL (``crl.create`` data; the reply of ``crl.sign`` and ``crl.get``).

    ``delta_base`` is the Delta CRL Indicator (RFC 5280 §5.2.4), None for a full CRL.
    Numbers are decimal strings: a CRL number may be 20 octets (§5.2.3).
    """

    ca: str
    number: str
    delta_base: str | None = None
    this_update: AwareDatetime
    next_update: AwareDatetime
    entries: int = Field(ge=0)
    crl_der_b64: str


class CRLCreated(CRLView, Message):
    """``crl.create``: a CA's CRL was signed (its data is the CRL's view)."""

    TYPE: ClassVar[str] = "crl.create"
