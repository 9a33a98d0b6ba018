"""Server-side key generation for serverkeygen (RFC 7030 §4.4): which key types a
client may ask for, and generating them off the event loop, a few at a time.

An RSA key takes the CPU for a while (RSA-4096: about a second here, RSA-8192 several),
so a key type outside the allowed set is refused before anything is done (400), and
generation runs in worker threads behind a semaphore: the gateway keeps answering other
requests while keys are made, and a flood of serverkeygen requests queues instead of
taking every core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contracts.keys import KeyType
from est_gateway.errors import BadRequest

__all__ = ["DEFAULT_KEY_TYPES", "GeneratedKey", "KeyGenerator", "key_type_of"]

GeneratedKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# P-256, P-384 and RSA 2048-4096 (issue 14): what devices use, and nothing that costs
# more than a few seconds of one core to generate.
DEFAULT_KEY_TYPES: frozenset[KeyType] = frozenset(KeyType)

_CURVES: dict[str, KeyType] = {
    ec.SECP256R1.name: KeyType.EC_P256,
    ec.SECP384R1.name: KeyType.EC_P384,
}


def key_type_of(
    csr: x509.CertificateSigningRequest,
    allowed: Collection[KeyType] = DEFAULT_KEY_TYPES,
) -> KeyType:
    """The key type the client's CSR names, when it is one the server makes."""
    public = csr.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        asked = f"RSA-{public.key_size}"
        found = {t.rsa_bits: t for t in allowed if t.is_rsa}.get(public.key_size)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        asked = f"EC {public.curve.name}"
        found = _CURVES.get(public.curve.name)
    else:
        asked, found = type(public).__name__.removeprefix("_"), None
    if found is None or found not in allowed:
        names = ", ".join(sorted(t.value for t in allowed))
        raise BadRequest(
            f"serverkeygen does not make {asked} keys; the CSR's key must be one of"
            f" {names}"
        )
    return found


def _generate(key_type: KeyType) -> GeneratedKey:
    if key_type.is_rsa:
        return rsa.generate_private_key(
            public_exponent=65537, key_size=key_type.rsa_bits
        )
    curve = ec.SECP256R1() if key_type is KeyType.EC_P256 else ec.SECP384R1()
    return ec.generate_private_key(curve)


def _csr_for(
    key: GeneratedKey, csr: x509.CertificateSigningRequest
) -> x509.CertificateSigningRequest:
    """RFC 7030 §4.4.1: the client's CSR names the subject; the server's key signs."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=san.critical)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(key, hashes.SHA256())


class KeyGenerator:
    """Makes keys in worker threads, at most ``concurrency`` at once."""

    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def generate(self, key_type: KeyType) -> GeneratedKey:
        async with self._slots:
            return await asyncio.to_thread(_generate, key_type)

    async def csr_for(
        self, key: GeneratedKey, csr: x509.CertificateSigningRequest
    ) -> x509.CertificateSigningRequest:
        """The CSR to have signed for ``key`` (an RSA signature: in a thread too)."""
        return await asyncio.to_thread(_csr_for, key, csr)
