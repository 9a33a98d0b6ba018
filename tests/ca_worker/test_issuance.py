"""Pure issuance: CA and leaf certificates built without I/O, with an injected now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca_worker.issuance import (
    Issuer,
    build_ca_certificate,
    build_leaf_certificate,
    issuable_csr,
    leaf_key_usage,
    new_serial,
    verbatim_conflicts,
)
from contracts.pki import CSRRejected, serial_hex
from tests.pki import csr_pem, make_csr, tampered_csr_pem

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _root(name: str = "root", validity: timedelta = timedelta(days=3650)) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_ca_certificate(
        name=name,
        public_key=key.public_key(),
        issuer=None,
        self_signer=key,
        serial=new_serial(),
        now=NOW,
        validity=validity,
    )
    return Issuer(cert, key)


def test_root_is_self_signed_ca() -> None:
    """A root CA certificate verifies under its own key and is marked CA, critically."""
    root = _root()
    root.certificate.verify_directly_issued_by(root.certificate)
    bc = root.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (True, True) == (bc.critical, bc.value.ca)


def test_subordinate_never_outlives_parent() -> None:
    """A subordinate asked to live longer than its parent is capped at the parent's end."""
    root = _root(validity=timedelta(days=10))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sub = build_ca_certificate(
        name="sub",
        public_key=key.public_key(),
        issuer=root,
        self_signer=key,
        serial=new_serial(),
        now=NOW,
        validity=timedelta(days=3650),
    )
    sub.verify_directly_issued_by(root.certificate)
    assert root.certificate.not_valid_after_utc == sub.not_valid_after_utc


def test_leaf_takes_subject_and_san_but_not_ski_from_csr() -> None:
    """Only the SAN of a CSR is honoured; SKI comes from the key (RFC 5280 §4.2.1.2)."""
    root = _root()
    bogus_ski = x509.SubjectKeyIdentifier(b"\x01" * 20)
    _, csr = make_csr(
        "device-1", dns_names=("device-1.example",), extra_extensions=(bogus_ski,)
    )
    leaf = build_leaf_certificate(
        csr=issuable_csr(csr_pem(csr).encode()),
        issuer=root,
        serial=new_serial(),
        now=NOW,
        validity=timedelta(days=365),
    )
    leaf.verify_directly_issued_by(root.certificate)
    assert csr.subject == leaf.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ["device-1.example"] == san.get_values_for_type(x509.DNSName)
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert x509.SubjectKeyIdentifier.from_public_key(csr.public_key()) == ski
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [ExtendedKeyUsageOID.CLIENT_AUTH] == list(eku)


def test_leaf_validity_capped_by_issuer() -> None:
    """A leaf never outlives the CA that signed it."""
    root = _root(validity=timedelta(days=30))
    _, csr = make_csr("device-2")
    leaf = build_leaf_certificate(
        csr=csr, issuer=root, serial=new_serial(), now=NOW, validity=timedelta(days=365)
    )
    assert root.certificate.not_valid_after_utc == leaf.not_valid_after_utc


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"garbage", "not a PKCS#10 request"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "not a PKCS#10 request",
        ),
        (tampered_csr_pem("device-3").encode(), "signature does not verify"),
    ],
    ids=["garbage", "empty-pem", "bad-signature"],
)
def test_bad_csr_is_rejected_with_reason(body: bytes, reason: str) -> None:
    """Garbage and forged CSRs are refused with a one-line reason."""
    with pytest.raises(CSRRejected, match=reason):
        issuable_csr(body)


def _outside_policy(case: str) -> bytes:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if case == "rsa-1024":
        # The weak key is what is under test.
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-4")])
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no CN")])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("rsa-1024", "RSA keys shorter than 2048 bits are refused"),
        ("no-common-name", "the CSR subject has no common name"),
    ],
)
def test_well_formed_csr_outside_the_ca_rules_is_rejected(
    case: str, reason: str
) -> None:
    """A proven CSR is still refused for a short RSA key or a subject without a CN."""
    with pytest.raises(CSRRejected, match=reason):
        issuable_csr(_outside_policy(case))


def test_serials_are_128_bit_positive_and_even_hex() -> None:
    """Serials fit RFC 5280's 20 octets and print as even-length lower-case hex."""
    serials = {new_serial() for _ in range(200)}
    assert 200 == len(serials)
    assert all(0 < s < 2**128 for s in serials)
    assert all(len(serial_hex(s)) % 2 == 0 for s in serials)
    assert "0a" == serial_hex(10)


CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("extensions", "conflicts"),
    [
        ((), []),
        ((x509.BasicConstraints(ca=False, path_length=None),), []),
        ((leaf_key_usage(EC_KEY.public_key()),), []),
        ((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),), []),
        ((CA_USAGE,), ["keyUsage"]),
        ((x509.BasicConstraints(ca=True, path_length=None),), ["basicConstraints"]),
        (
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),),
            ["extendedKeyUsage"],
        ),
        ((x509.SubjectKeyIdentifier(b"\x01" * 20),), ["subjectKeyIdentifier"]),
        (
            (
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
                ),
            ),
            ["1.3.6.1.4.1.99999.1"],
        ),
    ],
    ids=[
        "none",
        "not-a-ca",
        "profile-key-usage",
        "client-auth",
        "ca-key-usage",
        "is-a-ca",
        "server-auth",
        "own-ski",
        "unknown",
    ],
)
def test_verbatim_conflicts_name_what_the_profile_would_not_grant(
    extensions: tuple[x509.ExtensionType, ...], conflicts: list[str]
) -> None:
    """Only extensions beyond SAN and the profile's own usages are conflicts."""
    _, csr = make_csr(
        "dev", key=EC_KEY, dns_names=("dev.example",), extra_extensions=extensions
    )
    assert conflicts == verbatim_conflicts(csr)
