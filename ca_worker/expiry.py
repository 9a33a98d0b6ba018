"""Pure expiry rules of certificates and CAs (DESIGN §4), and how serials map to shards.

``store.py`` applies the same rules in set-based SQL; a test checks both agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from contracts.ca import CertificateStatus

__all__ = ["shard_bounds", "shard_of", "status_at"]

_FINAL = frozenset({CertificateStatus.EXPIRED, CertificateStatus.REVOKED})


def status_at(
    current: CertificateStatus,
    not_after: datetime,
    as_of: datetime,
    about_to_expire_days: int,
) -> CertificateStatus:
    """The status at ``as_of``. It only moves forward: REVOKED and EXPIRED stay.

    RFC 5280 §4.1.2.5: notAfter is the last instant of validity, so a certificate
    expires once ``as_of`` passes it. ``about_to_expire_days`` is its CA's threshold;
    0 means no warning period.
    """
    if current in _FINAL:
        return current
    if as_of > not_after:
        return CertificateStatus.EXPIRED
    warning = timedelta(days=about_to_expire_days)
    if about_to_expire_days > 0 and not_after - as_of <= warning:
        return CertificateStatus.ABOUT_TO_EXPIRE
    return current


def shard_of(serial: str, shards: int) -> int:
    """The shard of a serial (lower-case hex): where its low 32 bits fall when the
    range 0 .. 2^32 is cut into ``shards`` equal parts.

    Serials carry at least 64 random bits (RFC 5280 §4.1.2.2 via CA/B BR 7.1), so the
    low bits already are a uniform hash. A range, unlike a modulo, is an index
    condition on the stored key: mirrored in SQL by the generated column
    ``shard_key`` (migration 0003), which ``store.expire_certificates`` reads in the
    ranges of ``shard_bounds``.
    """
    return (int(serial[-8:], 16) * shards) >> 32


def shard_bounds(shard: int, shards: int) -> tuple[int, int]:
    """The half-open range of the 32-bit shard key that ``shard`` of ``shards`` covers."""
    return -(-(shard << 32) // shards), -(-((shard + 1) << 32) // shards)
