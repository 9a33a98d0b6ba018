"""Pure building of what the validation authority serves but cannot sign itself: CRLs
(RFC 5280 §5) and delegated OCSP responder certificates (RFC 6960 §4.2.2.2), both
signed with the CA's key object. No I/O, ``now`` injected.

CRL choices:
- full and delta CRLs of a CA share one CRL number sequence (RFC 5280 §5.2.3); a delta
  carries the number of its base in the critical Delta CRL Indicator (§5.2.4), and the
  full CRL names where the delta is in Freshest CRL (§5.2.6) when a VA URL is set;
- the reason code ``unspecified`` is left out of entries (§5.3.1: it SHOULD be absent);
- no Issuing Distribution Point: each CA has one complete CRL, whose scope is every
  certificate it issued (§5.2.5 makes the extension optional for that case).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca_worker.issuance import (
    Issuer,
    authority_key_identifier,
    end_entity_builder,
    signature_hash,
)
from contracts.ca import RevocationReason
from contracts.pki import REASON_FLAGS

__all__ = [
    "RevokedEntry",
    "build_crl",
    "build_responder_certificate",
    "freshest_crl",
]


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked certificate as a CRL lists it."""

    serial: int
    revoked_at: datetime
    reason: RevocationReason | None


def freshest_crl(delta_url: str) -> x509.FreshestCRL:
    """Where the delta CRL of a full CRL is (RFC 5280 §5.2.6)."""
    return x509.FreshestCRL(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(delta_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def _entry(entry: RevokedEntry) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial)
        .revocation_date(entry.revoked_at)
    )
    flag = None if entry.reason is None else REASON_FLAGS.get(entry.reason)
    if flag is not None:
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()


def build_crl(
    *,
    issuer: Issuer,
    number: int,
    entries: Sequence[RevokedEntry],
    this_update: datetime,
    next_update: datetime,
    delta_base: int | None = None,
    delta_url: str | None = None,
) -> x509.CertificateRevocationList:
    """A full CRL (``delta_base`` None) or a delta CRL against full CRL ``delta_base``."""
    extensions = [
        x509.Extension(
            x509.AuthorityKeyIdentifier.oid,
            False,
            authority_key_identifier(issuer.certificate),
        ),
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
    ]
    if delta_base is not None:
        extensions.append(
            x509.Extension(
                x509.DeltaCRLIndicator.oid, True, x509.DeltaCRLIndicator(delta_base)
            )
        )
    elif delta_url:
        extensions.append(
            x509.Extension(x509.FreshestCRL.oid, False, freshest_crl(delta_url))
        )
    # The builder's constructor takes the whole list: adding entries one by one
    # copies the list each time, quadratic for a CRL of 100,000 entries.
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.certificate.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=[_entry(e) for e in entries],
    )
    return builder.sign(issuer.signer, signature_hash(issuer.signer))


def build_responder_certificate(
    *,
    csr: x509.CertificateSigningRequest,
    issuer: Issuer,
    serial: int,
    now: datetime,
    validity: timedelta,
) -> x509.Certificate:
    """A delegated OCSP responder certificate for the CSR's key (RFC 6960 §4.2.2.2):
    EKU id-kp-OCSPSigning, id-pkix-ocsp-nocheck (§4.2.2.2.1: relying parties need not
    check its revocation, so it is short-lived instead), digitalSignature only."""
    builder, _ = end_entity_builder(
        csr=csr, issuer=issuer, serial=serial, now=now, validity=validity
    )
    builder = (
        builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )
    return builder.sign(issuer.signer, signature_hash(issuer.signer))
