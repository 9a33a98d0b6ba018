"""Which connections are a trusted TLS-terminating proxy's (issue 14): its own TLS
client certificate says so, by SHA-256 fingerprint (EST_TRUSTED_PROXY_CERTS) or by the
CA that issued it (EST_TRUSTED_PROXY_CA), and, when EST_TRUSTED_PROXIES is set, its
address too. A source address alone identifies nobody: any local process has it, and
a DMS's certificate is public, so a header alone would let it enroll as that DMS.

What the proxy must do (README): verify the device's or DMS's certificate chain itself
against the gateway's client-trust.pem, drop any such header a client sent, and put the
verified certificate in its own header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from est_gateway.trust import TrustStore

__all__ = ["fingerprint", "is_trusted_proxy"]


def fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as configured (hex, any case, colons allowed), normalized."""
    normalized = text.replace(":", "").strip().lower()
    if len(normalized) != 64 or any(c not in "0123456789abcdef" for c in normalized):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return normalized


def is_trusted_proxy(
    peer: x509.Certificate | None,
    remote: str | None,
    *,
    fingerprints: Collection[str],
    proxy_ca: str | None,
    addresses: Collection[str],
    trust: TrustStore,
) -> bool:
    """Whether this connection is a trusted proxy's, whose client-certificate header
    names the client (RFC 7030 §3.3.2 authenticates that client, not the proxy)."""
    if peer is None or not (fingerprints or proxy_ca):
        return False
    if addresses and not _address_in(remote, addresses):
        return False
    if peer.fingerprint(hashes.SHA256()).hex() in fingerprints:
        return True
    known = trust.get(proxy_ca) if proxy_ca else None
    return known is not None and _issued_by(peer, known.certificate)


def _address_in(remote: str | None, addresses: Collection[str]) -> bool:
    try:
        return remote is not None and str(ipaddress.ip_address(remote)) in addresses
    except ValueError:
        return False


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    if certificate.issuer != ca.subject:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
