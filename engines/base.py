"""The one seam between the CA worker and key storage (after smallstep's KeyManager).

Engines are synchronous: cryptography's builders call ``sign`` synchronously, so async
code crosses into an engine once, with ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contracts.keys import KeyType

__all__ = [
    "Engine",
    "KeyDeleter",
    "KeyLister",
    "KeySpec",
    "KeyTypeReporter",
    "PrivateKey",
    "PublicKey",
    "key_id_of",
]

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What key to create; a request object so fields can be added without breaking callers."""

    key_type: KeyType


def key_id_of(public_key: PublicKey) -> str:
    """Key id = lower-case hex SHA-256 of the SubjectPublicKeyInfo DER (Lamassu's rule)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@runtime_checkable
class Engine(Protocol):
    """Creates keys and hands out signers; private key material never leaves it."""

    @property
    def name(self) -> str: ...

    def create_key(self, spec: KeySpec) -> str:
        """Create a key inside the engine and return its key id."""
        ...

    def signer(self, key_id: str) -> PrivateKey:
        """A key object that ``CertificateBuilder.sign()`` accepts."""
        ...

    def public_key(self, key_id: str) -> PublicKey: ...

    def close(self) -> None: ...


@runtime_checkable
class KeyDeleter(Protocol):
    """Optional capability: delete a key."""

    def delete_key(self, key_id: str) -> None: ...


@runtime_checkable
class KeyLister(Protocol):
    """Optional capability: list the key ids the engine holds."""

    def list_keys(self) -> list[str]: ...


@runtime_checkable
class KeyTypeReporter(Protocol):
    """Optional capability: the key types this backend can create (an HSM may lack some)."""

    def key_types(self) -> list[KeyType]: ...
