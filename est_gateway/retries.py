"""Which EST requests are retries of one another (RFC 7030 §4.2.3: after a 202 the
client sends the request again, and the server must recognize it).

A retry means the same thing, not the same bytes: clients re-sign the CSR when they
retry (libest does), and an ECDSA signature differs every time, as may a
challengePassword (a fresh tls-unique on a new connection, RFC 7030 §3.5). So the
request id is a hash of what the request asks for: operation, label, the client's
certificate, and the CSR's public key, subject and requested extensions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from est_gateway.errors import BadRequest

__all__ = ["request_id"]


def _field(digest: hashlib._Hash, value: bytes) -> None:
    """Length-prefixed, so that no two different requests hash the same fields."""
    digest.update(len(value).to_bytes(4, "big"))
    digest.update(value)


def request_id(
    operation: str,
    label: str,
    csr: x509.CertificateSigningRequest,
    chain: Sequence[x509.Certificate],
) -> str:
    """SHA-256 hex of the request's meaning; equal for a retry of it."""
    digest = hashlib.sha256()
    _field(digest, operation.encode())
    _field(digest, label.encode())
    _field(digest, chain[0].fingerprint(hashes.SHA256()) if chain else b"")
    _field(
        digest,
        csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    _field(digest, csr.subject.public_bytes())
    try:
        extensions = list(csr.extensions)
    except ValueError as exc:
        raise BadRequest(
            f"the CSR's requested extensions are malformed: {exc}"
        ) from None
    # In the CSR's order: a client retrying sends the same request again.
    for extension in extensions:
        _field(digest, extension.oid.dotted_string.encode())
        _field(digest, b"\x01" if extension.critical else b"\x00")
        _field(digest, extension.value.public_bytes())
    return digest.hexdigest()
