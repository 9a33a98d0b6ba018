"""SQL of schema ``va``: inline, on asyncpg, each method taking the caller's connection
so the caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.ca import CertificateStatus, RevocationReason
from va_worker.ocsp import CertState

__all__ = ["SCHEMA", "CRLRow", "Due", "ResponderRow", "Store"]

SCHEMA = "va"

# ocsp.rank in SQL: a status never moves back (REVOKED and EXPIRED are final).
_RANK = """CASE {0} WHEN 'ACTIVE' THEN 0 WHEN 'ABOUT_TO_EXPIRE' THEN 1
    WHEN 'EXPIRED' THEN 2 WHEN 'REVOKED' THEN 3 END"""
_LIVE = "('ACTIVE', 'ABOUT_TO_EXPIRE')"


@dataclass(frozen=True, slots=True)
class CRLRow:
    ca: str
    delta: bool
    number: int
    this_update: datetime
    next_update: datetime
    entries: int
    der: bytes


@dataclass(frozen=True, slots=True)
class ResponderRow:
    ca: str
    key_id: str
    certificate_der: bytes


@dataclass(frozen=True, slots=True)
class Due:
    """A CA whose CRLs are due: ``full`` a full CRL, else a delta."""

    ca: str
    full: bool


def _state(row: asyncpg.Record) -> CertState:
    reason = row["revocation_reason"]
    return CertState(
        CertificateStatus(row["status"]),
        row["revoked_at"],
        None if reason is None else RevocationReason(reason),
    )


class Store:
    # --- CAs ---------------------------------------------------------------------------

    async def upsert_ca(
        self,
        conn: asyncpg.Connection,
        name: str,
        certificate_der: bytes,
        status: CertificateStatus,
        now: datetime,
    ) -> CertificateStatus:
        """Record a CA (its first CRL due now); a status only moves forward. Returns
        the status kept."""
        kept: str = await conn.fetchval(
            f"""INSERT INTO va.cas AS c (name, certificate_der, status, full_crl_due)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (name) DO UPDATE SET status = CASE
                    WHEN {_RANK.format("EXCLUDED.status")} > {_RANK.format("c.status")}
                    THEN EXCLUDED.status ELSE c.status END
                RETURNING status""",
            name,
            certificate_der,
            status.value,
            now,
        )
        return CertificateStatus(kept)

    async def cas(self, conn: asyncpg.Connection) -> list[tuple[str, bytes]]:
        rows = await conn.fetch("SELECT name, certificate_der FROM va.cas")
        return [(row["name"], row["certificate_der"]) for row in rows]

    # --- certificates --------------------------------------------------------------------

    async def upsert_certificate(
        self, conn: asyncpg.Connection, ca: str, serial: str, state: CertState
    ) -> CertState | None:
        """Record a certificate's status unless it is already as far along; the state
        now recorded when it changed, None when it did not."""
        row = await conn.fetchrow(
            f"""INSERT INTO va.certificates AS c
                    (ca, serial, status, revoked_at, revocation_reason)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (ca, serial) DO UPDATE
                SET status = EXCLUDED.status, revoked_at = EXCLUDED.revoked_at,
                    revocation_reason = EXCLUDED.revocation_reason
                WHERE {_RANK.format("EXCLUDED.status")} > {_RANK.format("c.status")}
                RETURNING status, revoked_at, revocation_reason""",
            ca,
            serial,
            state.status.value,
            state.revoked_at,
            None if state.reason is None else state.reason.value,
        )
        return None if row is None else _state(row)

    async def certificate(
        self, conn: asyncpg.Connection | asyncpg.Pool, ca: str, serial: str
    ) -> CertState | None:
        row = await conn.fetchrow(
            """SELECT status, revoked_at, revocation_reason FROM va.certificates
               WHERE ca = $1 AND serial = $2""",
            ca,
            serial,
        )
        return None if row is None else _state(row)

    # --- CRLs ----------------------------------------------------------------------------

    async def store_crl(self, conn: asyncpg.Connection, crl: CRLRow) -> bool:
        """Keep a CRL unless a higher-numbered one is stored; True when kept."""
        kept = await conn.fetchval(
            """INSERT INTO va.crls AS c
                   (ca, delta, number, this_update, next_update, entries, der)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (ca, delta) DO UPDATE
               SET number = EXCLUDED.number, this_update = EXCLUDED.this_update,
                   next_update = EXCLUDED.next_update, entries = EXCLUDED.entries,
                   der = EXCLUDED.der
               WHERE c.number < EXCLUDED.number
               RETURNING true""",
            crl.ca,
            crl.delta,
            crl.number,
            crl.this_update,
            crl.next_update,
            crl.entries,
            crl.der,
        )
        return bool(kept)

    async def crls(self, conn: asyncpg.Connection) -> list[CRLRow]:
        rows = await conn.fetch(
            """SELECT ca, delta, number, this_update, next_update, entries, der
               FROM va.crls"""
        )
        return [CRLRow(**{**dict(row), "number": int(row["number"])}) for row in rows]

    async def crl(
        self, conn: asyncpg.Connection, ca: str, *, delta: bool
    ) -> CRLRow | None:
        row = await conn.fetchrow(
            """SELECT ca, delta, number, this_update, next_update, entries, der
               FROM va.crls WHERE ca = $1 AND delta = $2""",
            ca,
            delta,
        )
        return (
            None
            if row is None
            else CRLRow(**{**dict(row), "number": int(row["number"])})
        )

    async def schedule_crls(
        self,
        conn: asyncpg.Connection,
        ca: str,
        *,
        signed_at: datetime,
        full: datetime | None,
        delta: datetime,
    ) -> None:
        """Set when the next CRLs are due after CRLs signed at ``signed_at``: a
        revocation seen since then keeps its (earlier) delta time."""
        await conn.execute(
            """UPDATE va.cas SET full_crl_due = COALESCE($2, full_crl_due),
                   delta_crl_due = CASE
                       WHEN last_revocation_at >= $4::timestamptz - interval '5 minutes'
                       THEN LEAST(delta_crl_due, $3) ELSE $3 END
               WHERE name = $1""",
            ca,
            full,
            delta,
            signed_at,
        )

    async def hasten_delta(
        self, conn: asyncpg.Connection, ca: str, revoked_at: datetime, due: datetime
    ) -> None:
        """A revocation: the next delta CRL is due by ``due`` at the latest (debounce:
        revocations coming after it do not push it further)."""
        await conn.execute(
            """UPDATE va.cas SET delta_crl_due = LEAST(delta_crl_due, $3),
                   last_revocation_at = GREATEST(last_revocation_at, $2)
               WHERE name = $1""",
            ca,
            revoked_at,
            due,
        )

    async def claim_due_crls(
        self, conn: asyncpg.Connection, now: datetime, retry: datetime
    ) -> list[Due]:
        """The live CAs whose CRLs are due, pushed to ``retry`` (the crl.create of the
        signed CRLs sets the real next time); replicas skip each other's rows."""
        rows = await conn.fetch(
            f"""WITH due AS (
                    SELECT name, COALESCE(full_crl_due <= $1, false) AS full
                    FROM va.cas
                    WHERE status IN {_LIVE}
                      AND (full_crl_due <= $1 OR delta_crl_due <= $1)
                    FOR UPDATE SKIP LOCKED)
                UPDATE va.cas AS c SET
                    full_crl_due = CASE WHEN due.full THEN $2
                                   ELSE c.full_crl_due END,
                    delta_crl_due = CASE WHEN due.full OR c.delta_crl_due <= $1
                                    THEN $2 ELSE c.delta_crl_due END
                FROM due WHERE c.name = due.name
                RETURNING c.name, due.full""",
            now,
            retry,
        )
        return [Due(row["name"], row["full"]) for row in rows]

    # --- responders ----------------------------------------------------------------------

    async def responders(self, conn: asyncpg.Connection) -> list[ResponderRow]:
        rows = await conn.fetch(
            """SELECT ca, key_id, certificate_der FROM va.responders
               WHERE certificate_der IS NOT NULL"""
        )
        return [ResponderRow(r["ca"], r["key_id"], r["certificate_der"]) for r in rows]

    async def cas_needing_responder(
        self, conn: asyncpg.Connection, renew_by: datetime, asked_before: datetime
    ) -> list[str]:
        """Live CAs whose responder certificate is missing or ends before ``renew_by``,
        and for which no request was made since ``asked_before``."""
        rows = await conn.fetch(
            f"""SELECT c.name FROM va.cas c
                LEFT JOIN va.responders r ON r.ca = c.name
                WHERE c.status IN {_LIVE}
                  AND (r.not_after IS NULL OR r.not_after < $1)
                  AND (r.requested_at IS NULL OR r.requested_at < $2)
                ORDER BY c.name""",
            renew_by,
            asked_before,
        )
        return [row["name"] for row in rows]

    async def responder_requested(
        self,
        conn: asyncpg.Connection,
        ca: str,
        key_id: str,
        csr_fingerprint: str,
        now: datetime,
    ) -> str | None:
        """Record the request for a CA's next responder certificate; the key id of
        the request it replaces, if one was pending."""
        previous: str | None = await conn.fetchval(
            "SELECT pending_key_id FROM va.responders WHERE ca = $1 FOR UPDATE", ca
        )
        await conn.execute(
            """INSERT INTO va.responders AS r
                   (ca, pending_key_id, pending_csr_fingerprint, requested_at)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (ca) DO UPDATE
               SET pending_key_id = $2, pending_csr_fingerprint = $3,
                   requested_at = $4""",
            ca,
            key_id,
            csr_fingerprint,
            now,
        )
        return previous

    async def responder_issued(
        self,
        conn: asyncpg.Connection,
        ca: str,
        csr_fingerprint: str,
        certificate_der: bytes,
        not_after: datetime,
    ) -> str | None:
        """Install the responder certificate issued for the pending request; its key
        id, or None when this certificate answers no pending request."""
        key_id: str | None = await conn.fetchval(
            """UPDATE va.responders
               SET key_id = pending_key_id, certificate_der = $3, not_after = $4,
                   pending_key_id = NULL, pending_csr_fingerprint = NULL
               WHERE ca = $1 AND pending_csr_fingerprint = $2
               RETURNING key_id""",
            ca,
            csr_fingerprint,
            certificate_der,
            not_after,
        )
        return key_id
