"""Remote key objects: what cryptography's builders may and may not ask of them (no I/O)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from engines import RemoteEcPrivateKey, RemoteRsaPrivateKey

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remote")])


def remote_ec() -> tuple[RemoteEcPrivateKey, list[tuple[bytes, str]]]:
    """A remote EC key backed by a software key, recording each digest it signs."""
    inner = ec.generate_private_key(ec.SECP256R1())
    seen: list[tuple[bytes, str]] = []

    def sign(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        seen.append((digest, algorithm.name))
        return inner.sign(digest, ec.ECDSA(Prehashed(algorithm)))

    return RemoteEcPrivateKey(inner.public_key(), sign), seen


def remote_rsa() -> RemoteRsaPrivateKey:
    inner = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sign(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        return inner.sign(digest, padding.PKCS1v15(), Prehashed(algorithm))

    return RemoteRsaPrivateKey(inner.public_key(), sign)


def test_builders_accept_remote_keys_and_hash_on_the_host() -> None:
    """Certificate, CSR and CRL builders sign through the backend with one digest each."""
    key, seen = remote_ec()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    certificate.verify_directly_issued_by(certificate)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(NAME)
        .sign(key, hashes.SHA256())
    )
    assert csr.is_signature_valid
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert crl.is_signature_valid(key.public_key())
    assert ["sha384", "sha256", "sha256"] == [name for _, name in seen]
    assert all(len(digest) in {32, 48} for digest, _ in seen)


def test_prehashed_digest_is_passed_through() -> None:
    """A Prehashed digest reaches the backend unchanged."""
    key, seen = remote_ec()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"payload")
    value = digest.finalize()
    signature = key.sign(value, ec.ECDSA(Prehashed(hashes.SHA256())))
    key.public_key().verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))
    assert [(value, "sha256")] == seen


def test_rsa_pkcs1v15_signature_verifies() -> None:
    """An RSA remote key signs PKCS#1 v1.5 signatures that verify."""
    key = remote_rsa()
    signature = key.sign(b"payload", padding.PKCS1v15(), hashes.SHA512())
    key.public_key().verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA512())


def test_unsupported_algorithms_are_refused() -> None:
    """SHA-1, RSA-PSS and key exchange are refused with UnsupportedAlgorithm."""
    ec_key, _ = remote_ec()
    rsa_key = remote_rsa()
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    with pytest.raises(UnsupportedAlgorithm):
        ec_key.sign(b"x", ec.ECDSA(hashes.SHA1()))  # noqa: S303 - asserting refusal
    with pytest.raises(UnsupportedAlgorithm):
        rsa_key.sign(b"x", pss, hashes.SHA256())
    with pytest.raises(UnsupportedAlgorithm):
        ec_key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP256R1()).public_key())


def test_private_material_is_never_available() -> None:
    """Serialising or reading the private numbers raises TypeError."""
    key, _ = remote_ec()
    with pytest.raises(TypeError):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(TypeError):
        key.private_numbers()
    with pytest.raises(TypeError):
        remote_rsa().private_numbers()


def test_copies_are_the_same_handle() -> None:
    """copy and deepcopy return the key itself: it is a handle to backend state."""
    key, _ = remote_ec()
    assert key is copy.copy(key)
    assert key is copy.deepcopy(key)
