"""VaultPkiAuthority against an OpenBao dev server: CAs as PKI mounts, keys kept inside."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engines import (
    KeyExists,
    KeyNotFound,
    KeyType,
    VaultConnection,
    VaultPkiAuthority,
    VaultPkiConfig,
    open_vault_pki,
)

# SoftHSM2 and OpenBao fixtures, shared with tests/ca_worker (see engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

pytestmark = pytest.mark.vault


@pytest.fixture
def prefix() -> str:
    return f"pki-{secrets.token_hex(3)}-"


@pytest.fixture
def authority(vault_root: VaultConnection, prefix: str) -> Iterator[VaultPkiAuthority]:
    config = VaultPkiConfig(
        address=vault_root.address, token=vault_root.token, ca_path=prefix
    )
    authority = open_vault_pki(config)
    yield authority
    authority.close()


def device_csr_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_leaf_signed_verbatim_verifies_up_to_the_root(
    authority: VaultPkiAuthority,
) -> None:
    """Root, intermediate and a verbatim-signed leaf form a chain that verifies."""
    root = load(authority.create_root("root", KeyType.EC_P384, timedelta(days=30)))
    issuing = load(
        authority.create_intermediate(
            "issuing", "root", KeyType.RSA_2048, timedelta(days=10)
        )
    )
    leaf = load(
        authority.sign_verbatim(
            "issuing", device_csr_pem("device-7"), timedelta(hours=1)
        )
    )
    root.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(root)
    leaf.verify_directly_issued_by(issuing)
    assert [x509.NameAttribute(NameOID.COMMON_NAME, "device-7")] == list(leaf.subject)
    assert issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_revoked_serial_is_on_the_crl(
    authority: VaultPkiAuthority, vault_root: VaultConnection, prefix: str
) -> None:
    """A certificate revoked by serial appears on its CA's CRL."""
    authority.create_root("crl-root", KeyType.EC_P256, timedelta(days=2))
    leaf = load(
        authority.sign_verbatim(
            "crl-root", device_csr_pem("device-8"), timedelta(hours=1)
        )
    )
    authority.revoke("crl-root", format(leaf.serial_number, "x"))
    assert vault_root.token is not None
    token = vault_root.token.get_secret_value()
    client = hvac.Client(url=vault_root.address, token=token)
    try:
        crl_pem = client.secrets.pki.read_crl(mount_point=f"{prefix}crl-root")
    finally:
        client.adapter.close()
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None


def test_ca_name_taken_is_key_exists(authority: VaultPkiAuthority) -> None:
    """Creating a CA whose mount exists already raises KeyExists."""
    authority.create_root("twice", KeyType.EC_P256, timedelta(days=1))
    with pytest.raises(KeyExists):
        authority.create_root("twice", KeyType.EC_P256, timedelta(days=1))


def test_unknown_ca_is_key_not_found(authority: VaultPkiAuthority) -> None:
    """Signing or revoking with a CA that has no mount raises KeyNotFound."""
    with pytest.raises(KeyNotFound):
        authority.sign_verbatim("absent", device_csr_pem("d"), timedelta(hours=1))
    with pytest.raises(KeyNotFound):
        authority.revoke("absent", "0a1b")
