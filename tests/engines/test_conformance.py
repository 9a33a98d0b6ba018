"""One conformance suite for every engine (house rule 41).

``gopem`` runs on tmp_path, ``pkcs11`` on a SoftHSM2 token (marker ``softhsm``) and
``vault-transit`` on an OpenBao dev server with an AppRole login (marker ``vault``).
Every signature is made by cryptography's own builders and checked with the public key.
"""

from __future__ import annotations

import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from engines import (
    EngineConfig,
    EngineMisconfigured,
    GopemConfig,
    KeyDeleter,
    KeyLister,
    KeyNotFound,
    KeySpec,
    KeyType,
    Pkcs11Config,
    PrivateKey,
    PublicKey,
    VaultTransitConfig,
    key_id_of,
    open_engine,
)

# SoftHSM2 and OpenBao fixtures, shared with tests/ca_worker (see engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

NOW = datetime(2026, 1, 1, tzinfo=UTC)
Sha2 = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

# Each key type signs with a different digest, so every DigestInfo/hash path is used.
HASH_FOR: dict[KeyType, Sha2] = {
    KeyType.EC_P256: hashes.SHA256(),
    KeyType.EC_P384: hashes.SHA384(),
    KeyType.RSA_2048: hashes.SHA256(),
    KeyType.RSA_3072: hashes.SHA384(),
    KeyType.RSA_4096: hashes.SHA512(),
}


@dataclass(frozen=True)
class WrongSetting:
    """A config that must fail at open, naming ``setting`` and none of ``secrets``."""

    setting: str
    config: EngineConfig
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Backend:
    config: EngineConfig
    wrong: tuple[WrongSetting, ...]


def gopem_backend(tmp_path: Path) -> Backend:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return Backend(
        GopemConfig(data=tmp_path / "keys"),
        (WrongSetting("GOPEM_DATA", GopemConfig(data=blocker / "keys")),),
    )


def pkcs11_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    good: Pkcs11Config = request.getfixturevalue("softhsm_config")
    wrong_pin = secrets.token_hex(5)
    return Backend(
        good,
        (
            WrongSetting(
                "PKCS11_PIN",
                good.model_copy(update={"pin": SecretStr(wrong_pin)}),
                (wrong_pin, good.pin.get_secret_value()),
            ),
            WrongSetting(
                "PKCS11_LABEL", good.model_copy(update={"label": "no-such-token"})
            ),
            WrongSetting(
                "PKCS11_DRIVER", good.model_copy(update={"driver": tmp_path / "x.so"})
            ),
        ),
    )


def vault_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    good: VaultTransitConfig = request.getfixturevalue("transit_approle")
    assert good.secret_id is not None
    wrong_secret, wrong_token = str(uuid.uuid4()), secrets.token_hex(16)
    return Backend(
        good,
        (
            WrongSetting(
                "VAULT_SECRET_ID",
                good.model_copy(update={"secret_id": SecretStr(wrong_secret)}),
                (wrong_secret, good.secret_id.get_secret_value()),
            ),
            WrongSetting(
                "VAULT_TOKEN",
                VaultTransitConfig(address=good.address, token=SecretStr(wrong_token)),
                (wrong_token,),
            ),
            WrongSetting(
                "VAULT_CA", good.model_copy(update={"ca": tmp_path / "no.pem"})
            ),
        ),
    )


@pytest.fixture(
    params=[
        pytest.param("gopem"),
        pytest.param("pkcs11", marks=pytest.mark.softhsm),
        pytest.param("vault-transit", marks=pytest.mark.vault),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    match request.param:
        case "gopem":
            return gopem_backend(tmp_path)
        case "pkcs11":
            return pkcs11_backend(request, tmp_path)
        case _:
            return vault_backend(request, tmp_path)


def key_type_of(public_key: PublicKey) -> KeyType:
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyType(f"rsa-{public_key.key_size}")
    return KeyType(f"ec-p{public_key.curve.key_size}")


def self_signed_ca(key: PrivateKey, algorithm: Sha2) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Conformance CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm)
    )


def leaf_of(
    ca_key: PrivateKey, ca: x509.Certificate, algorithm: Sha2
) -> x509.Certificate:
    device_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.subject)
        .public_key(device_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, algorithm)
    )


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_key_signs_ca_and_leaf_before_and_after_reopen(
    backend: Backend, key_type: KeyType
) -> None:
    """A new key signs a CA and a leaf that verify, and still does from a new instance."""
    algorithm = HASH_FOR[key_type]
    engine = open_engine(backend.config)
    try:
        key_id = engine.create_key(KeySpec(key_type))
        public_key = engine.public_key(key_id)
        ca = self_signed_ca(engine.signer(key_id), algorithm)
        ca.verify_directly_issued_by(ca)
        leaf_of(engine.signer(key_id), ca, algorithm).verify_directly_issued_by(ca)
    finally:
        engine.close()
    assert key_id == key_id_of(public_key)
    assert key_type == key_type_of(public_key)

    reopened = open_engine(backend.config)
    try:
        assert key_id == key_id_of(reopened.public_key(key_id))
        leaf_of(reopened.signer(key_id), ca, algorithm).verify_directly_issued_by(ca)
    finally:
        reopened.close()


def test_deleted_key_is_gone(backend: Backend) -> None:
    """A deleted key leaves the key list and can no longer be found."""
    engine = open_engine(backend.config)
    try:
        assert isinstance(engine, KeyDeleter)
        assert isinstance(engine, KeyLister)
        key_id = engine.create_key(KeySpec(KeyType.EC_P256))
        assert key_id in engine.list_keys()
        engine.delete_key(key_id)
        assert key_id not in engine.list_keys()
        with pytest.raises(KeyNotFound):
            engine.signer(key_id)
        with pytest.raises(KeyNotFound):
            engine.delete_key(key_id)
    finally:
        engine.close()


@pytest.mark.parametrize(
    "key_id", [secrets.token_hex(32), "not-a-key-id"], ids=["unknown", "malformed"]
)
def test_unknown_key_id_is_key_not_found(backend: Backend, key_id: str) -> None:
    """An id naming no key raises KeyNotFound from every lookup."""
    engine = open_engine(backend.config)
    try:
        with pytest.raises(KeyNotFound):
            engine.signer(key_id)
        with pytest.raises(KeyNotFound):
            engine.public_key(key_id)
    finally:
        engine.close()


def test_wrong_settings_are_misconfigured(backend: Backend) -> None:
    """Each wrong setting fails at open with one line naming it and no secret."""
    for wrong in backend.wrong:
        with pytest.raises(EngineMisconfigured) as caught:
            open_engine(wrong.config).close()
        message = str(caught.value)
        assert message.startswith(f"{wrong.setting}:"), message
        assert "\n" not in message
        for secret in wrong.secrets:
            assert secret not in message


def test_signing_from_many_threads_at_once(backend: Backend) -> None:
    """Concurrent signatures with one key all verify (token access is serialised)."""
    engine = open_engine(backend.config)
    try:
        key_id = engine.create_key(KeySpec(KeyType.EC_P256))
        signer = engine.signer(key_id)
        assert isinstance(signer, ec.EllipticCurvePrivateKey)
        messages = [f"message {n}".encode() for n in range(24)]
        with ThreadPoolExecutor(max_workers=6) as pool:
            signatures = list(
                pool.map(lambda m: signer.sign(m, ec.ECDSA(hashes.SHA256())), messages)
            )
        public_key = engine.public_key(key_id)
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        for message, signature in zip(messages, signatures, strict=True):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    finally:
        engine.close()
