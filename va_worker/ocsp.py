"""Pure OCSP (RFC 6960, RFC 5019 profile): decoding requests, status rules, signing
responses and their HTTP caching headers. No I/O, ``now`` injected.

- A certificate is ``revoked`` once the CA revoked it, ``good`` otherwise (ACTIVE,
  ABOUT_TO_EXPIRE and EXPIRED alike: RFC 6960 §2.2 "good" says only "not revoked"),
  and ``unknown`` when this responder has never heard of its serial.
- Statuses only move forward (``rank``): a redelivered or reordered event never turns
  a revoked certificate back to good.
- Responses answer with the CertID the request used (SHA-1, the RFC 5019 §2.1.1 one,
  or another hash), are signed by the CA's delegated responder (RFC 6960 §4.2.2.2)
  identified by key hash, and carry it in ``certs`` so the chain can be checked.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

from contracts.ca import CertificateStatus, RevocationReason
from contracts.pki import REASON_FLAGS
from engines import PrivateKey

__all__ = [
    "CERT_ID_HASHES",
    "CertState",
    "IssuerKey",
    "Request",
    "ResponderKey",
    "Signed",
    "cache_headers",
    "decode_get",
    "failure",
    "issuer_keys",
    "parse_request",
    "rank",
    "sign",
]

_RANK = {
    CertificateStatus.ACTIVE: 0,
    CertificateStatus.ABOUT_TO_EXPIRE: 1,
    CertificateStatus.EXPIRED: 2,
    CertificateStatus.REVOKED: 3,
}


# CertID hash algorithms a request may use (RFC 6960 §4.1.1; RFC 5019 §2.1.1 uses SHA-1).
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


CERT_ID_HASHES = tuple(_HASHES)


_NONCE_MAX = 32


def rank(status: CertificateStatus) -> int:
    """How far along its life a status is; a lower rank never replaces a higher one."""
    return _RANK[status]


@dataclass(frozen=True, slots=True)
class CertState:
    """What OCSP says of one certificate."""

    status: CertificateStatus
    revoked_at: datetime | None = None
    reason: RevocationReason | None = None

    @property
    def revoked(self) -> bool:
        return self.status is CertificateStatus.REVOKED


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """How a request names an issuer: hash algorithm, name hash and key hash."""

    algorithm: str
    name_hash: bytes
    key_hash: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded single-certificate OCSP request."""

    issuer: IssuerKey
    serial: int
    nonce: bytes | None


@dataclass(frozen=True, slots=True)
class ResponderKey:
    """A CA's delegated responder: its certificate and the key in the VA's engine."""

    certificate: x509.Certificate
    key: PrivateKey


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed response and what its caching headers need."""

    der: bytes
    this_update: datetime
    next_update: datetime
    nonce: bool = False

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.der).hexdigest()[:32]}"'


def issuer_keys(ca: x509.Certificate) -> list[IssuerKey]:
    """Every CertID issuer part that names ``ca`` (RFC 6960 §4.1.1: the hash of the DER
    of its subject, and of the BIT STRING of its public key), one per hash."""
    public_key = ca.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key_bits = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    elif isinstance(public_key, rsa.RSAPublicKey):
        key_bits = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
    else:  # pragma: no cover - CAs here are EC or RSA
        return []
    name = ca.subject.public_bytes()
    found = []
    for label, algorithm in _HASHES.items():
        name_hash = hashes.Hash(algorithm())
        name_hash.update(name)
        key_hash = hashes.Hash(algorithm())
        key_hash.update(key_bits)
        found.append(IssuerKey(label, name_hash.finalize(), key_hash.finalize()))
    return found


def decode_get(tail: str) -> bytes:
    """The DER of a GET request's path part (RFC 6960 §A.1): base64, URL-safe or
    standard, with or without padding, percent-encoded or not. Raises ValueError."""
    text = unquote(tail).strip().replace("-", "+").replace("_", "/")
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or a character beyond ASCII
        raise ValueError("not base64") from exc


def parse_request(der: bytes) -> Request:
    """Decode an OCSP request; ValueError when it is not one this responder answers
    (RFC 5019 §2.1.1: one certificate per request)."""
    try:
        request = ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm.name
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        serial = request.serial_number
        nonce = None
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                nonce = extension.value.nonce
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ValueError(str(exc) or "not an OCSP request") from exc
    if algorithm not in _HASHES:
        raise ValueError(f"unsupported CertID hash {algorithm}")
    if nonce is not None and not 1 <= len(nonce) <= _NONCE_MAX:
        # RFC 8954 §2.1: a longer nonce may be answered without one (the response is
        # then the pre-signed one): nobody makes the responder sign and echo kilobytes.
        nonce = None
    return Request(IssuerKey(algorithm, name_hash, key_hash), serial, nonce)


def sign(
    *,
    request: Request,
    state: CertState | None,
    responder: ResponderKey,
    now: datetime,
    validity: timedelta,
    nonce: bool,
) -> Signed:
    """A successful response for ``request``: good, revoked, or unknown (``state`` None).

    ``nonce`` echoes the request's nonce (RFC 8954 §2.1), for a response signed now.
    """
    if state is None:
        status = ocsp.OCSPCertStatus.UNKNOWN
    elif state.revoked:
        status = ocsp.OCSPCertStatus.REVOKED
    else:
        status = ocsp.OCSPCertStatus.GOOD
    revoked = status is ocsp.OCSPCertStatus.REVOKED and state is not None
    reason = None
    if revoked and state is not None and state.reason is not None:
        # RFC 5280 §5.3.1: unspecified SHOULD be absent.
        reason = REASON_FLAGS.get(state.reason)
    this_update = now.replace(microsecond=0)
    # Never valid longer than the responder certificate that vouches for it.
    next_update = min(this_update + validity, responder.certificate.not_valid_after_utc)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=request.issuer.name_hash,
            issuer_key_hash=request.issuer.key_hash,
            serial_number=request.serial,
            algorithm=_HASHES[request.issuer.algorithm](),
            cert_status=status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=state.revoked_at if revoked and state else None,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        .certificates([responder.certificate])
    )
    if nonce and request.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(request.nonce), critical=False)
    response = builder.sign(responder.key, hashes.SHA256())
    return Signed(
        response.public_bytes(serialization.Encoding.DER),
        this_update,
        next_update,
        nonce=nonce and request.nonce is not None,
    )


def failure(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error response (RFC 6960 §4.2.1): malformedRequest, unauthorized,
    tryLater, internalError."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def cache_headers(signed: Signed, now: datetime) -> dict[str, str]:
    """RFC 5019 §6.2: cacheable until nextUpdate; a nonce response is not cacheable."""
    if signed.nonce:
        return {"Cache-Control": "no-store"}
    max_age = max(0, int((signed.next_update - now).total_seconds()))
    return {
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "Last-Modified": format_datetime(signed.this_update, usegmt=True),
        "Expires": format_datetime(signed.next_update, usegmt=True),
        "ETag": signed.etag,
    }
