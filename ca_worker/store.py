"""SQL of schema ``ca``: inline, on asyncpg, each method taking the caller's connection
so the caller owns the transaction. Rows come back as contract views."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_worker.expiry import shard_bounds
from contracts.ca import CAView, CertificateStatus, CertificateView, RevocationReason
from contracts.pem import certificate_pem
from contracts.pki import serial_hex
from contracts.sweeps import SweepTrigger, SweepView
from engines import KeyType

T = TypeVar("T", CAView, CertificateView)

__all__ = ["NewCA", "NewCertificate", "StatusChange", "Store"]


def _ca_view(row: asyncpg.Record | dict[str, Any]) -> CAView:
    return CAView(
        name=row["name"],
        parent=row["parent"],
        internal=row["internal"],
        key_type=KeyType(row["key_type"]),
        key_id=row["key_id"],
        engine=row["engine"],
        serial=row["serial"],
        subject=row["subject"],
        status=CertificateStatus(row["status"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
        certificate_pem=certificate_pem(row["certificate_der"]),
        about_to_expire_days=row["about_to_expire_days"],
        profile=row["profile"],
    )


def _certificate_view(row: asyncpg.Record | dict[str, Any]) -> CertificateView:
    # Built without validation: the row was validated on its way in, and a sweep
    # renders thousands of these per shard.
    reason = row["revocation_reason"]
    return CertificateView.model_construct(
        serial=row["serial"],
        ca=row["ca"],
        subject=row["subject"],
        issuer=row["issuer"],
        status=CertificateStatus(row["status"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        revocation_reason=None if reason is None else RevocationReason(reason),
        csr_fingerprint=row["csr_fingerprint"],
        certificate_pem=certificate_pem(row["certificate_der"]),
        device_id=row["device_id"],
        slot=row["slot"],
        dms=row["dms"],
        replaces=row["replaces"],
    )


@dataclass(frozen=True, slots=True)
class NewCA:
    name: str
    parent: str | None
    internal: bool
    key_type: KeyType
    key_id: str
    engine: str
    certificate: x509.Certificate
    about_to_expire_days: int = 30
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class NewCertificate:
    ca: str
    csr_fingerprint: str
    certificate: x509.Certificate
    device_id: str | None = None
    slot: str | None = None
    dms: str | None = None
    replaces: str | None = None
    request_id: str | None = None
    # ABOUT_TO_EXPIRE when issued inside its CA's warning period (expiry.status_at).
    status: CertificateStatus = CertificateStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class StatusChange(Generic[T]):
    previous: T
    updated: T


_CA_COLUMNS = """name, parent, internal, key_type, key_id, engine, serial, subject, status,
    not_before, not_after, revoked_at, revocation_reason, certificate_der, about_to_expire_days,
    profile"""
_CERT_COLUMNS = """serial, ca, subject, issuer, status, not_before, not_after, revoked_at,
    revocation_reason, csr_fingerprint, certificate_der, device_id, slot, dms, replaces"""


# expiry.status_at in SQL, for a row that is ACTIVE or ABOUT_TO_EXPIRE at $1 (as_of)
# and whose threshold column is about_to_expire_days.
_DUE = """(not_after < $1 OR (status = 'ACTIVE' AND about_to_expire_days > 0
    AND not_after - $1 <= make_interval(days => about_to_expire_days)))"""
_NEW_STATUS = "CASE WHEN not_after < $1 THEN 'EXPIRED' ELSE 'ABOUT_TO_EXPIRE' END"


def _qualified(columns: str) -> str:
    return ", ".join("c." + col.strip() for col in columns.split(","))


def _changes(
    rows: list[asyncpg.Record],
    view: Callable[[asyncpg.Record], T],
    *,
    revoked: bool,
) -> list[StatusChange[T]]:
    """Previous and updated views from ``RETURNING old_status, <columns>`` rows."""
    reset: dict[str, Any] = (
        {"revoked_at": None, "revocation_reason": None} if revoked else {}
    )
    changes = []
    for row in rows:
        updated = view(row)
        status = CertificateStatus(row["old_status"])
        changes.append(
            StatusChange(
                updated.model_copy(update={"status": status, **reset}), updated
            )
        )
    return changes


class Store:
    """Every query of the CA worker, named for its intent."""

    async def get_ca(
        self, conn: asyncpg.Connection, name: str, *, lock: bool = False
    ) -> CAView | None:
        row = await conn.fetchrow(
            f"SELECT {_CA_COLUMNS} FROM ca.cas WHERE name = $1"
            + (" FOR UPDATE" if lock else ""),
            name,
        )
        return None if row is None else _ca_view(row)

    async def list_cas(self, conn: asyncpg.Connection) -> list[CAView]:
        rows = await conn.fetch(
            f"SELECT {_CA_COLUMNS} FROM ca.cas ORDER BY created_at, name"
        )
        return [_ca_view(r) for r in rows]

    async def insert_ca(self, conn: asyncpg.Connection, new: NewCA) -> CAView:
        cert = new.certificate
        row = await conn.fetchrow(
            f"""INSERT INTO ca.cas (name, parent, internal, key_type, key_id, engine, serial,
                    subject, status, not_before, not_after, certificate_der,
                    about_to_expire_days, profile)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ACTIVE', $9, $10, $11, $12,
                    $13)
                RETURNING {_CA_COLUMNS}""",
            new.name,
            new.parent,
            new.internal,
            new.key_type.value,
            new.key_id,
            new.engine,
            serial_hex(cert.serial_number),
            cert.subject.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            cert.public_bytes(serialization.Encoding.DER),
            new.about_to_expire_days,
            new.profile,
        )
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        return _ca_view(row)

    async def insert_certificate(
        self, conn: asyncpg.Connection, new: NewCertificate
    ) -> CertificateView | None:
        """Store an issued certificate; None when its ``request_id`` is taken already
        (a concurrent twin of the same enrollment committed first)."""
        return (await self.insert_certificates(conn, [new]))[0]

    async def insert_certificates(
        self, conn: asyncpg.Connection, news: Sequence[NewCertificate]
    ) -> list[CertificateView | None]:
        """Store issued certificates with one statement; for each, its view, or None
        when its ``request_id`` is taken already."""
        views, ders = [], []
        for new in news:
            cert = new.certificate
            der = cert.public_bytes(serialization.Encoding.DER)
            ders.append(der)
            views.append(
                CertificateView(
                    serial=serial_hex(cert.serial_number),
                    ca=new.ca,
                    subject=cert.subject.rfc4514_string(),
                    issuer=cert.issuer.rfc4514_string(),
                    status=new.status,
                    not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                    revoked_at=None,
                    revocation_reason=None,
                    csr_fingerprint=new.csr_fingerprint,
                    certificate_pem=certificate_pem(der),
                    device_id=new.device_id,
                    slot=new.slot,
                    dms=new.dms,
                    replaces=new.replaces,
                )
            )
        # ON CONFLICT instead of catching a unique violation: no savepoint needed.
        inserted = {
            row["serial"]
            for row in await conn.fetch(
                """INSERT INTO ca.certificates (serial, ca, subject, issuer, status,
                        not_before, not_after, csr_fingerprint, certificate_der,
                        device_id, slot, dms, replaces, request_id)
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                        $5::text[], $6::timestamptz[], $7::timestamptz[], $8::text[],
                        $9::bytea[], $10::text[], $11::text[], $12::text[], $13::text[],
                        $14::text[])
                    ON CONFLICT (request_id) DO NOTHING
                    RETURNING serial""",
                [v.serial for v in views],
                [v.ca for v in views],
                [v.subject for v in views],
                [v.issuer for v in views],
                [v.status.value for v in views],
                [v.not_before for v in views],
                [v.not_after for v in views],
                [v.csr_fingerprint for v in views],
                ders,
                [v.device_id for v in views],
                [v.slot for v in views],
                [v.dms for v in views],
                [v.replaces for v in views],
                [new.request_id for new in news],
            )
        }
        return [view if view.serial in inserted else None for view in views]

    async def get_certificate(
        self, conn: asyncpg.Connection, serial: str
    ) -> CertificateView | None:
        row = await conn.fetchrow(
            f"SELECT {_CERT_COLUMNS} FROM ca.certificates WHERE serial = $1",
            serial,
        )
        return None if row is None else _certificate_view(row)

    async def certificates_by_request(
        self, conn: asyncpg.Connection, request_ids: Sequence[str]
    ) -> dict[str, CertificateView]:
        """The certificates issued for these enrollment requests, by request id."""
        rows = await conn.fetch(
            f"SELECT request_id, {_CERT_COLUMNS} FROM ca.certificates "
            "WHERE request_id = ANY($1::text[])",
            list(request_ids),
        )
        return {row["request_id"]: _certificate_view(row) for row in rows}

    async def release_requests(
        self, conn: asyncpg.Connection, request_ids: Sequence[str]
    ) -> None:
        """Forget which requests these certificates answered: the next such request
        is a new enrollment, not a retry."""
        await conn.execute(
            "UPDATE ca.certificates SET request_id = NULL"
            " WHERE request_id = ANY($1::text[])",
            list(request_ids),
        )

    async def get_certificates(
        self, conn: asyncpg.Connection, serials: Sequence[str]
    ) -> dict[str, CertificateView]:
        """The stored certificates among ``serials``, by serial."""
        rows = await conn.fetch(
            f"SELECT {_CERT_COLUMNS} FROM ca.certificates WHERE serial = ANY($1::text[])",
            list(serials),
        )
        return {row["serial"]: _certificate_view(row) for row in rows}

    async def list_certificates(
        self,
        conn: asyncpg.Connection,
        *,
        ca: str | None,
        status: CertificateStatus | None,
        limit: int,
        after: str | None,
    ) -> list[CertificateView]:
        rows = await conn.fetch(
            f"""SELECT {_CERT_COLUMNS} FROM ca.certificates
                WHERE ($1::text IS NULL OR ca = $1)
                  AND ($2::text IS NULL OR status = $2)
                  AND ($3::text IS NULL OR serial > $3)
                ORDER BY serial LIMIT $4""",
            ca,
            None if status is None else status.value,
            after,
            limit,
        )
        return [_certificate_view(r) for r in rows]

    async def revoke_certificates(
        self,
        conn: asyncpg.Connection,
        *,
        serials: list[str] | None = None,
        cas: list[str] | None = None,
        reason: RevocationReason,
        now: datetime,
        device_ids: list[str] | None = None,
    ) -> list[StatusChange[CertificateView]]:
        """Revoke the given serials, or everything the given CAs issued or the given
        devices were issued, that is not revoked yet."""
        rows = await conn.fetch(
            f"""WITH target AS (
                    SELECT serial, status AS old_status FROM ca.certificates
                    WHERE status <> 'REVOKED'
                      AND (serial = ANY($1::text[]) OR ca = ANY($2::text[])
                           OR device_id = ANY($5::text[]))
                    FOR UPDATE)
                UPDATE ca.certificates c
                SET status = 'REVOKED', revoked_at = $3, revocation_reason = $4
                FROM target WHERE c.serial = target.serial
                RETURNING target.old_status, {_qualified(_CERT_COLUMNS)}""",
            serials or [],
            cas or [],
            now,
            reason.value,
            device_ids or [],
        )
        return _changes(rows, _certificate_view, revoked=True)

    async def revoke_ca_tree(
        self,
        conn: asyncpg.Connection,
        name: str,
        reason: RevocationReason,
        now: datetime,
    ) -> list[StatusChange[CAView]]:
        """Revoke a CA and every CA below it (RFC 5280 §6.1: their paths break too)."""
        rows = await conn.fetch(
            f"""WITH RECURSIVE tree AS (
                    SELECT name FROM ca.cas WHERE name = $1
                    UNION SELECT c.name FROM ca.cas c JOIN tree ON c.parent = tree.name),
                target AS (
                    SELECT cas.name, cas.status AS old_status FROM ca.cas
                    JOIN tree USING (name) WHERE cas.status <> 'REVOKED' FOR UPDATE OF cas)
                UPDATE ca.cas c SET status = 'REVOKED', revoked_at = $2, revocation_reason = $3
                FROM target WHERE c.name = target.name
                RETURNING target.old_status, {_qualified(_CA_COLUMNS)}""",
            name,
            now,
            reason.value,
        )
        return _changes(rows, _ca_view, revoked=True)

    async def update_ca(
        self, conn: asyncpg.Connection, name: str, about_to_expire_days: int
    ) -> CAView | None:
        row = await conn.fetchrow(
            f"""UPDATE ca.cas SET about_to_expire_days = $2 WHERE name = $1
                RETURNING {_CA_COLUMNS}""",
            name,
            about_to_expire_days,
        )
        return None if row is None else _ca_view(row)

    # --- expiry sweeps (the rules of expiry.status_at, set-based) --------------------

    async def expire_cas(
        self, conn: asyncpg.Connection, as_of: datetime
    ) -> list[StatusChange[CAView]]:
        """Move every CA that is due at ``as_of`` to ABOUT_TO_EXPIRE or EXPIRED."""
        rows = await conn.fetch(
            f"""WITH due AS (
                    SELECT name, status AS old_status, {_NEW_STATUS} AS new_status
                    FROM ca.cas
                    WHERE status IN ('ACTIVE', 'ABOUT_TO_EXPIRE') AND {_DUE}
                    FOR UPDATE)
                UPDATE ca.cas c SET status = due.new_status
                FROM due WHERE c.name = due.name
                RETURNING due.old_status, {_qualified(_CA_COLUMNS)}""",
            as_of,
        )
        return _changes(rows, _ca_view, revoked=False)

    async def expire_certificates(
        self, conn: asyncpg.Connection, *, as_of: datetime, shard: int, shards: int
    ) -> list[StatusChange[CertificateView]]:
        """One shard's transitions at ``as_of``: one statement over (status, not_after).

        It reads two ranges of that index: ACTIVE certificates up to the largest
        threshold of any CA, and ABOUT_TO_EXPIRE ones already past notAfter. So it
        reads the certificates that may change, never the whole table nor the many
        already warned and not yet expired. The shard's range of ``shard_key``, the
        index's third column, is checked on the index entry, so the heap is visited
        only for this shard's rows; each is then held to its own CA's threshold.
        """
        longest = await conn.fetchval(
            "SELECT coalesce(max(about_to_expire_days), 0) FROM ca.cas"
        )
        # The planner assumes status and not_after independent and overestimates these
        # ranges tenfold, which buys a JIT compilation (10-35 ms) for every shard of a
        # statement that waits on the heap, not on expressions.
        await conn.execute("SET LOCAL jit = off")
        rows = await conn.fetch(
            f"""WITH due AS (
                    SELECT serial, status AS old_status, {_NEW_STATUS} AS new_status
                    FROM ca.certificates
                    JOIN (SELECT name AS ca, about_to_expire_days FROM ca.cas) AS cas
                        USING (ca)
                    WHERE ((status = 'ACTIVE' AND not_after <= $4)
                           OR (status = 'ABOUT_TO_EXPIRE' AND not_after < $1))
                      AND shard_key >= $2 AND shard_key < $3
                      AND {_DUE}
                    FOR UPDATE OF certificates)
                UPDATE ca.certificates c SET status = due.new_status
                FROM due WHERE c.serial = due.serial
                RETURNING due.old_status, {_qualified(_CERT_COLUMNS)}""",
            as_of,
            *shard_bounds(shard, shards),
            as_of + timedelta(days=longest),
        )
        return _changes(rows, _certificate_view, revoked=False)

    async def insert_sweep(self, conn: asyncpg.Connection, sweep: SweepView) -> None:
        await conn.execute(
            """INSERT INTO ca.sweeps (id, trigger, as_of, shards, ca_transitions)
               VALUES ($1, $2, $3, $4, $5)""",
            uuid.UUID(sweep.id),
            sweep.trigger.value,
            sweep.as_of,
            sweep.shards,
            sweep.ca_transitions,
        )

    async def claim_shard(
        self, conn: asyncpg.Connection, sweep_id: str, shard: int
    ) -> bool:
        """Mark a shard taken in the caller's transaction; False if it was done already.

        A twin delivery of the same shard waits on this row until the first commits
        (then finds it) or rolls back (then takes it): each shard is applied once.
        """
        claimed = await conn.fetchval(
            """INSERT INTO ca.sweep_shards (sweep_id, shard, transitions)
               VALUES ($1, $2, 0) ON CONFLICT DO NOTHING RETURNING true""",
            uuid.UUID(sweep_id),
            shard,
        )
        return bool(claimed)

    async def finish_shard(
        self, conn: asyncpg.Connection, sweep_id: str, shard: int, transitions: int
    ) -> None:
        await conn.execute(
            """UPDATE ca.sweep_shards SET transitions = $3, done_at = now()
               WHERE sweep_id = $1 AND shard = $2""",
            uuid.UUID(sweep_id),
            shard,
            transitions,
        )

    async def get_sweep(
        self, conn: asyncpg.Connection, sweep_id: str
    ) -> SweepView | None:
        row = await conn.fetchrow(
            """SELECT s.id, s.trigger, s.as_of, s.shards, s.ca_transitions,
                      count(d.shard) AS shards_done,
                      coalesce(sum(d.transitions), 0) AS transitions
               FROM ca.sweeps s LEFT JOIN ca.sweep_shards d ON d.sweep_id = s.id
               WHERE s.id = $1 GROUP BY s.id""",
            uuid.UUID(sweep_id),
        )
        if row is None:
            return None
        return SweepView(
            id=str(row["id"]),
            trigger=SweepTrigger(row["trigger"]),
            as_of=row["as_of"],
            shards=row["shards"],
            shards_done=row["shards_done"],
            transitions=row["transitions"],
            ca_transitions=row["ca_transitions"],
        )
