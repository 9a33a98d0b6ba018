"""Pure certificate building: CA certificates and leaves from CSRs. No I/O, ``now`` injected.

Profile choices, each per RFC 5280:
- serials are 128 random bits, positive and non-zero (§4.1.2.2: at most 20 octets);
- SKI is computed from the subject's key (§4.2.1.2 method 1) and AKI from the issuer's SKI
  (§4.2.1.1); neither is ever copied from a CSR;
- of a CSR's requested extensions only subjectAltName is honoured;
- a certificate never outlives its issuer (§6.1.3: the path would not validate after).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
)

from ca_worker.profiles import LeafUsage
from contracts.pki import CSRRejected, load_csr
from contracts.profiles import KeyUsage
from engines import PrivateKey, PublicKey

__all__ = [
    "LEAF_EXTENDED_KEY_USAGE",
    "Issuer",
    "authority_key_identifier",
    "build_ca_certificate",
    "build_leaf_certificate",
    "csr_fingerprint",
    "end_entity_builder",
    "issuable_csr",
    "leaf_key_usage",
    "new_serial",
    "signature_hash",
    "validation_extensions",
    "verbatim_conflicts",
]

# Devices authenticate as TLS clients (RFC 5280 §4.2.1.12).
LEAF_EXTENDED_KEY_USAGE = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


@dataclass(frozen=True, slots=True)
class Issuer:
    """What signing needs to know about the issuing CA."""

    certificate: x509.Certificate
    signer: PrivateKey


def new_serial() -> int:
    """128 random bits; zero is not a valid serial (RFC 5280 §4.1.2.2)."""
    while (serial := secrets.randbits(128)) == 0:
        pass
    return serial


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """The hash a signature by ``key`` uses: RFC 5480 §4 pairs P-384 with SHA-384,
    SHA-256 otherwise (certificates, CRLs and OCSP responses alike)."""
    if isinstance(
        key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey
    ) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def issuable_csr(pem_or_der: bytes) -> x509.CertificateSigningRequest:
    """A CSR loaded and proven (``contracts.pki.load_csr``) that this CA also signs:
    an EC or RSA key, RSA of at least 2048 bits, and a subject with a common name."""
    csr = load_csr(pem_or_der)
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CSRRejected(f"the CSR cannot be checked: {exc}") from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CSRRejected("the CSR key must be EC or RSA")
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < 2048:
        raise CSRRejected("RSA keys shorter than 2048 bits are refused")
    if not csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise CSRRejected("the CSR subject has no common name")
    return csr


def csr_fingerprint(csr: x509.CertificateSigningRequest) -> str:
    """SHA-256 of the CSR DER: lets a retried request find the certificate already issued."""
    return hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()


def build_ca_certificate(
    *,
    name: str,
    public_key: PublicKey,
    issuer: Issuer | None,
    self_signer: PrivateKey,
    serial: int,
    now: datetime,
    validity: timedelta,
    extensions: Sequence[x509.ExtensionType] = (),
    path_length: int | None = None,
) -> x509.Certificate:
    """A root CA (``issuer`` None, signed by ``self_signer``) or a subordinate CA;
    ``extensions`` are added as non-critical (``validation_extensions``)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lamassu PKI"),
        ]
    )
    not_after = now + validity
    if issuer is not None:
        not_after = min(not_after, issuer.certificate.not_valid_after_utc)
    signer = self_signer if issuer is None else issuer.signer
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        if issuer is None
        else authority_key_identifier(issuer.certificate)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(not_after)
        # RFC 5280 §4.2.1.9: basicConstraints is critical in CA certificates.
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, signature_hash(signer))


def end_entity_builder(
    *,
    csr: x509.CertificateSigningRequest,
    issuer: Issuer,
    serial: int,
    now: datetime,
    validity: timedelta,
) -> tuple[x509.CertificateBuilder, ec.EllipticCurvePublicKey | rsa.RSAPublicKey]:
    """What every end-entity certificate issued here starts from (a device's, a
    delegated OCSP responder's): the CSR's subject and key, not CA (RFC 5280
    §4.2.1.9), a validity within the issuer's, SKI and AKI; with the CSR's key."""
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CSRRejected("the CSR key must be EC or RSA")
    not_after = min(now + validity, issuer.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
        .add_extension(authority_key_identifier(issuer.certificate), critical=False)
    )
    return builder, public_key


def build_leaf_certificate(
    *,
    csr: x509.CertificateSigningRequest,
    issuer: Issuer,
    serial: int,
    now: datetime,
    validity: timedelta,
    extensions: Sequence[x509.ExtensionType] = (),
    usage: LeafUsage | None = None,
) -> x509.Certificate:
    """An end-entity certificate for a device: the CSR's subject and SAN, our extensions
    (key usages from ``usage``, the issuance profile; a client certificate without),
    plus ``extensions``, non-critical: ``validation_extensions``."""
    builder, public_key = end_entity_builder(
        csr=csr, issuer=issuer, serial=serial, now=now, validity=validity
    )
    builder = builder.add_extension(
        leaf_key_usage(public_key, usage), critical=True
    ).add_extension(
        LEAF_EXTENDED_KEY_USAGE
        if usage is None
        else usage.extended_key_usage_extension(),
        critical=False,
    )
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        builder = builder.add_extension(san.value, critical=san.critical)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer.signer, signature_hash(issuer.signer))


def leaf_key_usage(
    public_key: PublicKey, usage: LeafUsage | None = None
) -> x509.KeyUsage:
    """digitalSignature, plus keyEncipherment for RSA keys (RFC 5246 §7.4.7.1: RSA key
    transport needs it), plus what the profile adds."""
    extra = frozenset() if usage is None else usage.key_usage
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=KeyUsage.CONTENT_COMMITMENT in extra,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=KeyUsage.DATA_ENCIPHERMENT in extra,
        key_agreement=KeyUsage.KEY_AGREEMENT in extra,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def verbatim_conflicts(
    csr: x509.CertificateSigningRequest,
    extended_key_usage: x509.ExtendedKeyUsage | None = None,
) -> list[str]:
    """Requested extensions that a CA copying the CSR verbatim would put in the leaf
    although this profile would not: everything but subjectAltName, a non-CA
    basicConstraints, and keyUsage / extendedKeyUsage equal to the profile's own."""
    public_key = csr.public_key()
    allowed: list[x509.ExtensionType] = [extended_key_usage or LEAF_EXTENDED_KEY_USAGE]
    if isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        allowed.append(leaf_key_usage(public_key))
    conflicts = []
    for extension in csr.extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName) or value in allowed:
            continue
        if isinstance(value, x509.BasicConstraints) and not value.ca:
            continue
        name = extension.oid._name  # noqa: SLF001 - cryptography's only name accessor
        conflicts.append(extension.oid.dotted_string if name == "Unknown OID" else name)
    return conflicts


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The issuer's SKI as AKI (RFC 5280 §4.2.1.1, §5.2.1), its key's hash without one."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def validation_extensions(va_url: str, ca_name: str) -> list[x509.ExtensionType]:
    """Where relying parties check what ``ca_name`` issued: Authority Information Access
    (OCSP and caIssuers, RFC 5280 §4.2.2.1) and CRL Distribution Points (§4.2.1.13) at
    the validation authority ``va_url``; none when it is empty."""
    base = va_url.rstrip("/")
    if not base:
        return []
    return [
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(f"{base}/ocsp"),
                ),
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(f"{base}/ca/{ca_name}.crt"),
                ),
            ]
        ),
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[
                        x509.UniformResourceIdentifier(f"{base}/crl/{ca_name}.crl")
                    ],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
    ]
