"""Pure PKI rules shared by every service (no I/O): one definition of each small rule.

The home for rules more than one service needs, so that no worker keeps a copy of its
own (a copy drifts): the name and slot charset, the internal CA's name, how a CSR is
loaded and whom it names, how a serial is printed, and how contract values map onto
X.509. Only ``cryptography`` is imported here, never an I/O library.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

__all__ = [
    "DEFAULT_SLOT",
    "INTERNAL_CA",
    "NAME_PATTERN",
    "REASON_FLAGS",
    "CSRRejected",
    "DeviceIdentity",
    "RevocationReason",
    "device_identity",
    "load_csr",
    "serial_hex",
]

# The names of CAs, DMSs, devices, slots, profiles and connectors: they land in URLs
# (EST labels) and certificate CNs. A CSR's CN is ``[slot:]device-id`` (DESIGN §3), so
# neither part may hold a colon; 64 characters is the CN upper bound of RFC 5280
# Appendix A (ub-common-name).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)

# The slot a device's certificate fills when its CSR names none (DESIGN §3).
DEFAULT_SLOT = "default"

# The internal CA that issues every DMS certificate (the seeds' name, kept exactly).
INTERNAL_CA = "LAMASSU-DMS-MANAGER"


class RevocationReason(enum.StrEnum):
    """CRLReason names of RFC 5280 §5.3.1 (value 7 is unused there)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    CERTIFICATE_HOLD = "certificateHold"
    REMOVE_FROM_CRL = "removeFromCRL"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
    AA_COMPROMISE = "aACompromise"


# RFC 5280 §5.3.1 reason codes, as CRL entries and OCSP responses carry them.
# ``unspecified`` (0) is written as no reason code at all (§5.3.1: SHOULD be absent).
REASON_FLAGS: Mapping[RevocationReason, x509.ReasonFlags] = {
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.REMOVE_FROM_CRL: x509.ReasonFlags.remove_from_crl,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    RevocationReason.AA_COMPROMISE: x509.ReasonFlags.aa_compromise,
}


class CSRRejected(ValueError):  # noqa: N818 - a domain outcome, mapped to 'invalid'
    """The CSR is not PKCS#10, its signature does not verify, or it names no identity.

    ``str()`` is one line naming the check that failed; each service maps it to its
    own refusal (``invalid`` on the bus, 400 at the EST gateway).
    """


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who a CSR is for: the CN ``[slot:]device-id`` (DESIGN §3)."""

    device_id: str
    slot: str


def serial_hex(serial: int) -> str:
    """Lower-case hex with an even number of digits: how schema ``ca`` stores a serial
    and the original system prints it."""
    text = format(serial, "x")
    return text if len(text) % 2 == 0 else "0" + text


def load_csr(
    pem_or_der: bytes, *, check_signature: bool = True
) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER PKCS#10 request and check its proof of possession.

    RFC 7030 §4.2.1 carries a PKCS#10 request (RFC 2986 §4.2: the requester signs it
    with the key it asks a certificate for). ``check_signature=False`` leaves that
    check to whoever signs the certificate. Its extensions are parsed here, since
    cryptography parses them lazily: a malformed one fails now, not mid-issuance.
    """
    try:
        if pem_or_der.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(pem_or_der)
        else:
            csr = x509.load_der_x509_csr(pem_or_der)
    except ValueError as exc:
        raise CSRRejected("the CSR is not a PKCS#10 request") from exc
    try:
        valid = csr.is_signature_valid if check_signature else True
        _ = csr.extensions
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CSRRejected(f"the CSR cannot be checked: {exc}") from exc
    if not valid:
        raise CSRRejected("the CSR signature does not verify")
    return csr


def device_identity(csr: x509.CertificateSigningRequest) -> DeviceIdentity:
    """The device and slot a CSR names in its CN, ``[slot:]device-id`` (DESIGN §3).

    The device id is what follows the last colon, so a slot can never smuggle one in;
    both parts follow ``NAME_PATTERN``, as contracts.devices requires of them.
    """
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise CSRRejected("the CSR subject must hold exactly one common name")
    common_name = str(names[0].value)
    slot, colon, device_id = common_name.rpartition(":")
    if not colon:
        slot = DEFAULT_SLOT
    if not (_NAME.fullmatch(device_id) and _NAME.fullmatch(slot)):
        raise CSRRejected(
            f"the CSR common name {common_name!r} is not [slot:]device-id"
            " (letters, digits, '.', '_', '-'; at most 64 each)"
        )
    return DeviceIdentity(device_id, slot)
