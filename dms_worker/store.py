"""SQL of schema ``dms``: inline, on asyncpg, each method taking the caller's connection
so the caller owns the transaction. Rows come back as contract views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import RevocationReason
from contracts.dms import DeviceOwnership, DMSStatus, DMSView
from contracts.pem import certificate_pem
from dms_worker.authorization import DMSRecord, RenewalPolicy

__all__ = ["EnrollmentFacts", "NewDMS", "Store"]


def _view(row: asyncpg.Record | dict[str, Any]) -> DMSView:
    return DMSView(
        name=row["name"],
        status=DMSStatus(row["status"]),
        authorized_cas=list(row["authorized_cas"]),
        certificate_serial=row["certificate_serial"],
        certificate_pem=certificate_pem(row["certificate_der"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
        allow_replace=row["allow_replace"],
        reenroll_window_days=row["reenroll_window_days"],
        revoke_on_reenroll=row["revoke_on_reenroll"],
        previous_certificate_serial=row["previous_certificate_serial"],
        previous_valid_until=row["previous_valid_until"],
        profile=row["profile"],
        require_pop=row["require_pop"],
    )


@dataclass(frozen=True, slots=True)
class NewDMS:
    name: str
    authorized_cas: list[str]
    certificate_serial: str
    certificate: x509.Certificate
    created_at: datetime
    allow_replace: bool = False
    reenroll_window_days: int = 0
    revoke_on_reenroll: bool = True
    profile: str | None = None
    require_pop: bool = False


@dataclass(frozen=True, slots=True)
class EnrollmentFacts:
    """What authorizing one enrollment reads: the DMS holding the presented certificate,
    whether the device is decommissioned, and the DMS it belongs to (None: nobody's)."""

    dms: DMSRecord | None
    decommissioned: bool
    owner: str | None
    # The owner's renewal policy; None when the device has no owner on record.
    owner_policy: RenewalPolicy | None = None
    # The owner's issuance profile (None: the CA's).
    owner_profile: str | None = None
    owner_requires_pop: bool = False


_COLUMNS = """name, status, authorized_cas, certificate_serial, certificate_der,
    created_at, revoked_at, revocation_reason, allow_replace, reenroll_window_days,
    revoke_on_reenroll, previous_certificate_serial, previous_valid_until, profile,
    require_pop"""


class Store:
    """Every query of the DMS worker, named for its intent."""

    async def lock_name(self, conn: asyncpg.Connection, name: str) -> None:
        """Serialise creations of one name until the transaction ends."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"dms:{name}")

    async def get_dms(
        self, conn: asyncpg.Connection, name: str, *, lock: bool = False
    ) -> DMSView | None:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM dms.dms WHERE name = $1"
            + (" FOR UPDATE" if lock else ""),
            name,
        )
        return None if row is None else _view(row)

    async def get_dms_by_serial(
        self, conn: asyncpg.Connection, serial: str, *, lock: bool = False
    ) -> DMSView | None:
        """The DMS whose certificate has this serial."""
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM dms.dms WHERE certificate_serial = $1"
            + (" FOR UPDATE" if lock else ""),
            serial,
        )
        return None if row is None else _view(row)

    async def list_dmss(
        self,
        conn: asyncpg.Connection,
        *,
        status: DMSStatus | None,
        limit: int,
        after: str | None,
    ) -> list[DMSView]:
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS} FROM dms.dms
                WHERE ($1::text IS NULL OR status = $1)
                  AND ($2::text IS NULL OR name > $2)
                ORDER BY name LIMIT $3""",
            None if status is None else status.value,
            after,
            limit,
        )
        return [_view(r) for r in rows]

    async def insert_dms(self, conn: asyncpg.Connection, new: NewDMS) -> DMSView:
        row = await conn.fetchrow(
            f"""INSERT INTO dms.dms (name, status, authorized_cas, certificate_serial,
                    certificate_der, created_at, allow_replace, reenroll_window_days,
                    revoke_on_reenroll, profile, require_pop)
                VALUES ($1, 'ACTIVE', $2, $3, $4, $5, $6, $7, $8, $9, $10)
                RETURNING {_COLUMNS}""",
            new.name,
            new.authorized_cas,
            new.certificate_serial,
            new.certificate.public_bytes(serialization.Encoding.DER),
            new.created_at,
            new.allow_replace,
            new.reenroll_window_days,
            new.revoke_on_reenroll,
            new.profile,
            new.require_pop,
        )
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        return _view(row)

    async def set_authorized_cas(
        self, conn: asyncpg.Connection, name: str, authorized_cas: list[str]
    ) -> DMSView:
        row = await conn.fetchrow(
            f"""UPDATE dms.dms SET authorized_cas = $2 WHERE name = $1
                RETURNING {_COLUMNS}""",
            name,
            authorized_cas,
        )
        if row is None:
            raise RuntimeError("the DMS row vanished while the caller held its lock")
        return _view(row)

    async def set_policy(
        self,
        conn: asyncpg.Connection,
        name: str,
        *,
        allow_replace: bool,
        reenroll_window_days: int,
        revoke_on_reenroll: bool,
        profile: str | None,
        require_pop: bool,
    ) -> DMSView:
        row = await conn.fetchrow(
            f"""UPDATE dms.dms SET allow_replace = $2, reenroll_window_days = $3,
                    revoke_on_reenroll = $4, profile = $5, require_pop = $6
                WHERE name = $1 RETURNING {_COLUMNS}""",
            name,
            allow_replace,
            reenroll_window_days,
            revoke_on_reenroll,
            profile,
            require_pop,
        )
        if row is None:
            raise RuntimeError("the DMS row vanished while the caller held its lock")
        return _view(row)

    async def renew_certificate(
        self,
        conn: asyncpg.Connection,
        name: str,
        *,
        serial: str,
        certificate: x509.Certificate,
        previous_valid_until: datetime,
    ) -> DMSView:
        """The DMS's certificate is now ``certificate``; the one it replaces keeps
        authenticating it until ``previous_valid_until``."""
        row = await conn.fetchrow(
            f"""UPDATE dms.dms SET
                    previous_certificate_serial = certificate_serial,
                    previous_certificate_der = certificate_der,
                    previous_valid_until = $4,
                    certificate_serial = $2, certificate_der = $3
                WHERE name = $1 RETURNING {_COLUMNS}""",
            name,
            serial,
            certificate.public_bytes(serialization.Encoding.DER),
            previous_valid_until,
        )
        if row is None:
            raise RuntimeError("the DMS row vanished while the caller held its lock")
        return _view(row)

    async def end_overlap(
        self, conn: asyncpg.Connection, serial: str, now: datetime
    ) -> None:
        """A replaced DMS certificate that was revoked authenticates no more."""
        await conn.execute(
            """UPDATE dms.dms SET previous_valid_until = $2
               WHERE previous_certificate_serial = $1 AND previous_valid_until > $2""",
            serial,
            now,
        )

    async def revoke_dms(
        self,
        conn: asyncpg.Connection,
        name: str,
        *,
        reason: RevocationReason,
        now: datetime,
    ) -> DMSView:
        row = await conn.fetchrow(
            f"""UPDATE dms.dms
                SET status = 'REVOKED', revoked_at = $2, revocation_reason = $3
                WHERE name = $1 RETURNING {_COLUMNS}""",
            name,
            now,
            reason.value,
        )
        if row is None:
            raise RuntimeError("the DMS row vanished while the caller held its lock")
        return _view(row)

    async def record_decommissioned(
        self, conn: asyncpg.Connection, device_id: str, now: datetime
    ) -> None:
        await conn.execute(
            """INSERT INTO dms.decommissioned_devices (device_id, decommissioned_at)
               VALUES ($1, $2) ON CONFLICT (device_id) DO NOTHING""",
            device_id,
            now,
        )

    async def enrollment_facts(
        self,
        conn: asyncpg.Connection,
        asked: Sequence[tuple[str | None, str]],
        now: datetime,
    ) -> list[EnrollmentFacts]:
        """What authorizing enrollments reads, with one statement: for each (serial of
        the presented certificate, device id), the DMS holding that certificate, whether
        the device is decommissioned and which DMS owns it."""
        rows = await conn.fetch(
            """SELECT a.serial, d.name, d.status, d.authorized_cas,
                      CASE WHEN d.certificate_serial = a.serial THEN d.certificate_der
                           ELSE d.previous_certificate_der END AS certificate_der,
                      d.allow_replace, d.reenroll_window_days, d.revoke_on_reenroll,
                      o.dms AS owner, p.reenroll_window_days AS owner_window,
                      p.revoke_on_reenroll AS owner_revokes,
                      p.profile AS owner_profile, d.profile,
                      coalesce(p.require_pop, false) AS owner_requires_pop,
                      d.require_pop,
                      EXISTS (SELECT 1 FROM dms.decommissioned_devices AS g
                              WHERE g.device_id = a.device_id) AS decommissioned
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY
                    AS a(serial, device_id, i)
               LEFT JOIN dms.dms AS d ON d.certificate_serial = a.serial
                    OR (d.previous_certificate_serial = a.serial
                        AND d.previous_valid_until > $3)
               LEFT JOIN dms.devices AS o ON o.device_id = a.device_id
               LEFT JOIN dms.dms AS p ON p.name = o.dms
               ORDER BY a.i""",
            [serial for serial, _ in asked],
            [device_id for _, device_id in asked],
            now,
        )
        return [
            EnrollmentFacts(
                None
                if row["name"] is None
                else DMSRecord(
                    row["name"],
                    DMSStatus(row["status"]),
                    frozenset(row["authorized_cas"]),
                    row["serial"],
                    row["certificate_der"],
                    allow_replace=row["allow_replace"],
                    renewal=RenewalPolicy(
                        row["reenroll_window_days"], row["revoke_on_reenroll"]
                    ),
                    profile=row["profile"],
                    require_pop=row["require_pop"],
                ),
                bool(row["decommissioned"]),
                row["owner"],
                None
                if row["owner"] is None
                else RenewalPolicy(row["owner_window"], row["owner_revokes"]),
                row["owner_profile"],
                row["owner_requires_pop"],
            )
            for row in rows
        ]

    async def claim_devices(
        self, conn: asyncpg.Connection, claims: Mapping[str, str], now: datetime
    ) -> dict[str, str]:
        """Give each unowned device to the DMS claiming it (device id: DMS); returns
        the owner of each, which is another DMS where one was first."""
        # One statement: the rows it inserts, and those its snapshot already saw.
        rows = await conn.fetch(
            """WITH claimed AS (
                   INSERT INTO dms.devices (device_id, dms, since)
                   SELECT device_id, dms, $3 FROM unnest($1::text[], $2::text[])
                       AS c(device_id, dms)
                   ON CONFLICT (device_id) DO NOTHING
                   RETURNING device_id, dms)
               SELECT device_id, dms FROM claimed
               UNION ALL
               SELECT device_id, dms FROM dms.devices
               WHERE device_id = ANY($1::text[])""",
            list(claims),
            list(claims.values()),
            now,
        )
        owners = {row["device_id"]: row["dms"] for row in rows}
        if missing := [device for device in claims if device not in owners]:
            # Claimed by a transaction that committed after this statement's snapshot
            # was taken: a new statement sees it.
            rows = await conn.fetch(
                "SELECT device_id, dms FROM dms.devices"
                " WHERE device_id = ANY($1::text[])",
                missing,
            )
            owners |= {row["device_id"]: row["dms"] for row in rows}
        return owners

    async def get_owner(
        self, conn: asyncpg.Connection, device_id: str, *, lock: bool = False
    ) -> DeviceOwnership | None:
        row = await conn.fetchrow(
            "SELECT device_id, dms, since FROM dms.devices WHERE device_id = $1"
            + (" FOR UPDATE" if lock else ""),
            device_id,
        )
        return None if row is None else DeviceOwnership(**dict(row))

    async def set_owner(
        self, conn: asyncpg.Connection, device_id: str, dms: str, now: datetime
    ) -> DeviceOwnership:
        row = await conn.fetchrow(
            """INSERT INTO dms.devices (device_id, dms, since) VALUES ($1, $2, $3)
               ON CONFLICT (device_id) DO UPDATE SET dms = $2, since = $3
               RETURNING device_id, dms, since""",
            device_id,
            dms,
            now,
        )
        if row is None:
            raise RuntimeError("an upsert returned no row")
        return DeviceOwnership(**dict(row))

    async def record_registration(
        self, conn: asyncpg.Connection, device_id: str, dms: str, now: datetime
    ) -> None:
        """A device registered for a DMS belongs to it, unless a DMS enrolled it first."""
        await conn.execute(
            """INSERT INTO dms.devices (device_id, dms, since)
               SELECT $1, name, $3 FROM dms.dms WHERE name = $2
               ON CONFLICT (device_id) DO NOTHING""",
            device_id,
            dms,
            now,
        )
