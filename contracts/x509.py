"""Pure PKI rules shared by every service (no I/O): how contract values map onto X.509.

The home for small rules that more than one worker needs, so that no worker keeps a
copy of its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509

from contracts.ca import RevocationReason

__all__ = ["REASON_FLAGS"]

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
