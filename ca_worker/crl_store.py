"""SQL of the CA worker's CRLs: numbering, and the revoked certificates a CRL lists.

Inline, on asyncpg, each method taking the caller's connection (the caller owns the
transaction), as in ``store.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ca_worker.revocation import RevokedEntry
from contracts.ca import RevocationReason

__all__ = ["CRLNumbers", "CRLStore"]


@dataclass(frozen=True, slots=True)
class CRLNumbers:
    """The number a new CRL gets, and the full CRL a delta refers to."""

    number: int
    full_number: int
    full_this_update: datetime


class CRLStore:
    async def next_full(
        self, conn: asyncpg.Connection, ca: str, now: datetime
    ) -> tuple[CRLNumbers, datetime | None]:
        """Take the next number for a full CRL signed at ``now``; it becomes the base.
        Also the thisUpdate of the full CRL before it (None for the first)."""
        # Locked: concurrent crl.sign commands of one CA take numbers one by one.
        previous = await conn.fetchval(
            "SELECT full_this_update FROM ca.crls WHERE ca = $1 FOR UPDATE", ca
        )
        row = await conn.fetchrow(
            """INSERT INTO ca.crls AS c (ca, last_number, full_number, full_this_update)
               VALUES ($1, 1, 1, $2)
               ON CONFLICT (ca) DO UPDATE
               SET last_number = c.last_number + 1,
                   full_number = c.last_number + 1,
                   full_this_update = $2
               RETURNING last_number, full_number, full_this_update""",
            ca,
            now,
        )
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        numbers = CRLNumbers(
            int(row["last_number"]), int(row["full_number"]), row["full_this_update"]
        )
        return numbers, previous

    async def next_delta(self, conn: asyncpg.Connection, ca: str) -> CRLNumbers | None:
        """Take the next number for a delta CRL; None before the first full CRL."""
        row = await conn.fetchrow(
            """UPDATE ca.crls SET last_number = last_number + 1 WHERE ca = $1
               RETURNING last_number, full_number, full_this_update""",
            ca,
        )
        if row is None:
            return None
        return CRLNumbers(
            int(row["last_number"]), int(row["full_number"]), row["full_this_update"]
        )

    async def revoked(
        self,
        conn: asyncpg.Connection,
        ca: str,
        *,
        since: datetime | None = None,
        expired_before: datetime | None = None,
    ) -> list[RevokedEntry]:
        """What ``ca`` revoked (certificates and subordinate CAs): ``since`` a time,
        leaving out what was revoked and expired before ``expired_before`` (RFC 5280
        §5: an entry may go once a CRL issued after the certificate's expiry has
        listed it)."""
        rows = await conn.fetch(
            """SELECT serial, revoked_at, revocation_reason FROM ca.certificates
               WHERE ca = $1 AND status = 'REVOKED'
                 AND ($2::timestamptz IS NULL OR revoked_at >= $2)
                 AND ($3::timestamptz IS NULL OR not_after >= $3 OR revoked_at >= $3)
               UNION ALL
               SELECT serial, revoked_at, revocation_reason FROM ca.cas
               WHERE parent = $1 AND status = 'REVOKED'
                 AND ($2::timestamptz IS NULL OR revoked_at >= $2)
                 AND ($3::timestamptz IS NULL OR not_after >= $3 OR revoked_at >= $3)""",
            ca,
            since,
            expired_before,
        )
        return [
            RevokedEntry(
                int(row["serial"], 16),
                row["revoked_at"],
                None
                if row["revocation_reason"] is None
                else RevocationReason(row["revocation_reason"]),
            )
            for row in rows
        ]
