"""What an EST client does with the gateway's responses (RFC 7030 §4.1.3, §4.4.2).

Written with cryptography and the standard library's MIME parser rather than with
``est_gateway.wire``, so the gateway's rendering is checked by another reader.
"""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7


class ServerKeygen(NamedTuple):
    """A parsed serverkeygen response (RFC 7030 §4.4.2)."""

    private_key: PrivateKeyTypes
    certificates: list[x509.Certificate]


def decode_certs_only(body: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only response, base64 (any line layout) or PEM."""
    if b"-----BEGIN" in body:
        return pkcs7.load_pem_pkcs7_certificates(body)
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


def decode_serverkeygen(content_type: str, body: bytes) -> ServerKeygen:
    """The key and certificates of a serverkeygen response; raises ValueError."""
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body,
        policy=email.policy.default,
    )
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise ValueError(f"expected multipart/mixed, got {content_type!r}")
    keys: list[PrivateKeyTypes] = []
    certificates: list[x509.Certificate] = []
    for part in message.iter_parts():
        der = part.get_payload(decode=True)
        if not isinstance(der, bytes):
            raise TypeError("a serverkeygen part holds no content")
        if part.get_content_type() == "application/pkcs8":
            keys.append(serialization.load_der_private_key(der, password=None))
        elif part.get_content_type() == "application/pkcs7-mime":
            certificates.extend(pkcs7.load_der_pkcs7_certificates(der))
    if len(keys) != 1 or not certificates:
        raise ValueError("expected one application/pkcs8 part and a certs-only part")
    return ServerKeygen(keys[0], certificates)
