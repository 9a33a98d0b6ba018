"""Pure building of CRLs and delegated OCSP responder certificates, and the AIA / CRL
Distribution Points issued certificates carry (RFC 5280 §4.2.1.13, §4.2.2.1, §5;
RFC 6960 §4.2.2.2). No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ca_worker.issuance import (
    Issuer,
    build_ca_certificate,
    build_leaf_certificate,
    validation_extensions,
)
from ca_worker.revocation import RevokedEntry, build_crl, build_responder_certificate
from contracts.ca import RevocationReason
from tests.pki import make_csr

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
VA = "http://va.example:8080"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = build_ca_certificate(
        name="root",
        public_key=key.public_key(),
        issuer=None,
        self_signer=key,
        serial=1,
        now=NOW,
        validity=timedelta(days=365),
    )
    return Issuer(certificate, key)


def test_validation_extensions_point_at_the_va() -> None:
    aia, cdp = validation_extensions(VA + "/", "root")
    assert isinstance(aia, x509.AuthorityInformationAccess)
    assert [
        (AuthorityInformationAccessOID.OCSP, f"{VA}/ocsp"),
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{VA}/ca/root.crt"),
    ] == [(d.access_method, d.access_location.value) for d in aia]
    assert isinstance(cdp, x509.CRLDistributionPoints)
    assert [f"{VA}/crl/root.crl"] == [n.value for n in cdp[0].full_name or []]
    assert [] == validation_extensions("", "root")


def test_leaves_and_subordinates_carry_them(issuer: Issuer) -> None:
    extensions = validation_extensions(VA, "root")
    _, csr = make_csr("device-1")
    leaf = build_leaf_certificate(
        csr=csr,
        issuer=issuer,
        serial=2,
        now=NOW,
        validity=timedelta(days=30),
        extensions=extensions,
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sub = build_ca_certificate(
        name="sub",
        public_key=key.public_key(),
        issuer=issuer,
        self_signer=key,
        serial=3,
        now=NOW,
        validity=timedelta(days=30),
        extensions=extensions,
    )
    for certificate in (leaf, sub):
        for kind in (x509.AuthorityInformationAccess, x509.CRLDistributionPoints):
            found = certificate.extensions.get_extension_for_class(kind)
            assert not found.critical  # RFC 5280 §4.2.1.13, §4.2.2.1
            assert found.value in extensions


def test_full_and_delta_crls(issuer: Issuer) -> None:
    entries = [
        RevokedEntry(10, NOW, RevocationReason.KEY_COMPROMISE),
        RevokedEntry(11, NOW, RevocationReason.UNSPECIFIED),
        RevokedEntry(12, NOW, None),
    ]
    full = build_crl(
        issuer=issuer,
        number=7,
        entries=entries,
        this_update=NOW,
        next_update=NOW + timedelta(days=7),
        delta_url=f"{VA}/crl/root-delta.crl",
    )
    assert full.is_signature_valid(issuer.certificate.public_key())  # type: ignore[arg-type]
    assert 7 == full.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    freshest = full.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert [f"{VA}/crl/root-delta.crl"] == [
        n.value for n in freshest[0].full_name or []
    ]
    aki = full.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuer.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    assert ski.digest == aki.key_identifier
    reasons = {
        r.serial_number: [
            e.value.reason for e in r.extensions if isinstance(e.value, x509.CRLReason)
        ]
        for r in full
    }
    assert {10: [x509.ReasonFlags.key_compromise], 11: [], 12: []} == reasons
    with pytest.raises(x509.ExtensionNotFound):
        full.extensions.get_extension_for_class(x509.DeltaCRLIndicator)

    delta = build_crl(
        issuer=issuer,
        number=8,
        entries=entries[:1],
        this_update=NOW,
        next_update=NOW + timedelta(days=1),
        delta_base=7,
    )
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical  # RFC 5280 §5.2.4
    assert 7 == indicator.value.crl_number
    with pytest.raises(x509.ExtensionNotFound):
        delta.extensions.get_extension_for_class(x509.FreshestCRL)


def test_responder_certificate_profile(issuer: Issuer) -> None:
    """RFC 6960 §4.2.2.2: id-kp-OCSPSigning, id-pkix-ocsp-nocheck, short-lived, never
    longer than its CA."""
    _, csr = make_csr("OCSP responder")
    certificate = build_responder_certificate(
        csr=csr, issuer=issuer, serial=5, now=NOW, validity=timedelta(days=7)
    )
    certificate.verify_directly_issued_by(issuer.certificate)
    extensions = certificate.extensions
    assert [ExtendedKeyUsageOID.OCSP_SIGNING] == list(
        extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert extensions.get_extension_for_class(x509.OCSPNoCheck)
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert timedelta(days=7) == certificate.not_valid_after_utc - NOW
    long = build_responder_certificate(
        csr=csr, issuer=issuer, serial=6, now=NOW, validity=timedelta(days=900)
    )
    assert issuer.certificate.not_valid_after_utc == long.not_valid_after_utc
