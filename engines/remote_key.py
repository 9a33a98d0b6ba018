"""Key objects whose ``sign()`` runs in an HSM or in Vault, for cryptography's builders.

cryptography's ``CertificateBuilder.sign()`` (and the CSR, CRL and OCSP builders) checks
the key with ``isinstance`` against its key ABCs and then calls the key's own Python
``sign(data, ...)`` method, once, with the to-be-signed bytes. Checked with cryptography
50.0.2: a Python subclass of ``ec.EllipticCurvePrivateKey`` / ``rsa.RSAPrivateKey`` is
accepted, and is called as ``sign(tbs, ECDSA(SHA256()))`` or
``sign(tbs, PKCS1v15(), SHA256())``. So a backend only has to sign a digest: the data is
hashed here, on the host, and the backend gets the digest (``Prehashed`` data is passed
through). Private key material never exists in this process: the serialisation methods
raise ``TypeError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import (
    AsymmetricPadding,
    PKCS1v15,
)
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

# typing.override is 3.12+; typing_extensions comes with pydantic. It also tells ruff
# (ARG002) that unused parameters are fixed by the ABC.
from cryptography.utils import Buffer
from typing_extensions import override

if TYPE_CHECKING:
    # Only for the signature: NoDigestInfo is newer than the oldest cryptography
    # pyproject allows, and it is rejected at run time anyway.
    from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo

__all__ = ["DigestSigner", "RemoteEcPrivateKey", "RemoteRsaPrivateKey"]

# The SHA-2 digests every backend here supports (PKCS#11 via DigestInfo, Vault Transit's
# sha2-*). SHA-1 is not offered: CAs must not sign with it (CA/B Forum BR §7.1.3.2).
_SUPPORTED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


class DigestSigner(Protocol):
    """Signs a digest inside the backend.

    For ECDSA it returns the DER ``ECDSA-Sig-Value`` (RFC 3279 §2.2.3, RFC 5758 §3.2);
    for RSA the RSASSA-PKCS1-v1_5 signature (RFC 8017 §8.2).
    """

    def __call__(self, digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes: ...


def _digest(
    data: Buffer, algorithm: Prehashed | hashes.HashAlgorithm
) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, Prehashed):
        # cryptography offers no public accessor for the wrapped algorithm.
        inner: hashes.HashAlgorithm = algorithm._algorithm  # noqa: SLF001
        digest = bytes(data)
        if len(digest) != inner.digest_size:
            raise ValueError("prehashed data does not match the digest size")
    else:
        inner = algorithm
        hasher = hashes.Hash(inner)
        hasher.update(data)
        digest = hasher.finalize()
    if not isinstance(inner, _SUPPORTED_HASHES):
        raise UnsupportedAlgorithm(f"{inner.name} is not offered; use SHA-256/384/512")
    return digest, inner


def _not_extractable() -> TypeError:
    return TypeError("the private key never leaves its engine")


class RemoteEcPrivateKey(ec.EllipticCurvePrivateKey):
    """An EC key whose signing happens in a backend; ECDSA only, no ECDH."""

    def __init__(
        self, public_key: ec.EllipticCurvePublicKey, sign: DigestSigner
    ) -> None:
        self._public_key = public_key
        self._sign = sign

    def sign(
        self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("only ECDSA signatures are offered")
        digest, algorithm = _digest(data, signature_algorithm.algorithm)
        return self._sign(digest, algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    @override
    def exchange(
        self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey
    ) -> bytes:
        raise UnsupportedAlgorithm("engine keys are for signing only")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise _not_extractable()

    @override
    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _not_extractable()

    # The key is a handle to immutable backend state, so a copy is the same handle.
    def __copy__(self) -> RemoteEcPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> RemoteEcPrivateKey:
        return self


class RemoteRsaPrivateKey(rsa.RSAPrivateKey):
    """An RSA key whose signing happens in a backend; RSASSA-PKCS1-v1_5 only."""

    def __init__(self, public_key: rsa.RSAPublicKey, sign: DigestSigner) -> None:
        self._public_key = public_key
        self._sign = sign

    def sign(
        self,
        data: Buffer,
        padding: AsymmetricPadding,
        algorithm: Prehashed | hashes.HashAlgorithm | NoDigestInfo,
    ) -> bytes:
        # PSS (RFC 8017 §8.1) would need salt-length plumbing per backend; CA keys here
        # sign with PKCS#1 v1.5, which RFC 5280 relying parties accept universally.
        if not isinstance(padding, PKCS1v15):
            raise UnsupportedAlgorithm("only PKCS#1 v1.5 RSA signatures are offered")
        # NoDigestInfo (raw PKCS#1 v1.5 without the RFC 8017 §9.2 DigestInfo) is not
        # offered: Vault Transit cannot do it, and certificates never need it.
        if not isinstance(algorithm, Prehashed | hashes.HashAlgorithm):
            raise UnsupportedAlgorithm("a DigestInfo-less RSA signature is not offered")
        digest, hash_algorithm = _digest(data, algorithm)
        return self._sign(digest, hash_algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    @override
    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        raise UnsupportedAlgorithm("engine keys are for signing only")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise _not_extractable()

    @override
    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _not_extractable()

    def __copy__(self) -> RemoteRsaPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> RemoteRsaPrivateKey:
        return self
