"""Standard Webhooks signatures (www.standardwebhooks.com, spec "Signature scheme"). Pure.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is
``v1,`` + base64(HMAC-SHA256(secret, content)); the secret is ``whsec_`` + base64 of
its bytes. ``webhook-id`` is the CloudEvent id, the same on every attempt, so that a
receiver can drop a repeat (delivery is at least once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

__all__ = ["InvalidSecret", "headers", "new_secret", "secret_key", "sign", "verify"]

_PREFIX = "whsec_"
# The spec's replay window: a receiver refuses timestamps further than this from now.
TOLERANCE_SECONDS = 300


class InvalidSecret(ValueError):  # noqa: N818 - names the outcome, as runtime.errors does
    """The secret is not ``whsec_`` and base64 of 24 to 64 bytes."""


def new_secret() -> str:
    return _PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; raises InvalidSecret."""
    if not secret.startswith(_PREFIX):
        raise InvalidSecret("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a webhook secret is 'whsec_' then base64") from None
    if not 24 <= len(key) <= 64:
        raise InvalidSecret("a webhook secret holds 24 to 64 bytes")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secret: str, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers sent with every attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, now: int) -> bool:
    """What a receiver does: any ``v1`` signature of the header matches, in time."""
    try:
        message_id = received["webhook-id"]
        timestamp = int(received["webhook-timestamp"])
        signatures = received["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)
