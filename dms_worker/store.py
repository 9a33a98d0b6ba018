"""SQL of schema ``dms``: inline, on asyncpg, each method taking the caller's connection
so the caller owns the transaction. Rows come back as contract views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import RevocationReason
from contracts.dms import DMSStatus, DMSView
from contracts.pem import certificate_pem
from dms_worker.authorization import DMSRecord

__all__ = ["NewDMS", "Store"]


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
    )


@dataclass(frozen=True, slots=True)
class NewDMS:
    name: str
    authorized_cas: list[str]
    certificate_serial: str
    certificate: x509.Certificate
    created_at: datetime


_COLUMNS = """name, status, authorized_cas, certificate_serial, certificate_der,
    created_at, revoked_at, revocation_reason"""


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
                    certificate_der, created_at)
                VALUES ($1, 'ACTIVE', $2, $3, $4, $5)
                RETURNING {_COLUMNS}""",
            new.name,
            new.authorized_cas,
            new.certificate_serial,
            new.certificate.public_bytes(serialization.Encoding.DER),
            new.created_at,
        )
        assert row is not None  # noqa: S101 - INSERT ... RETURNING always yields a row
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
        assert row is not None  # noqa: S101 - the caller holds the row lock
        return _view(row)

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
        assert row is not None  # noqa: S101 - the caller holds the row lock
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
        self, conn: asyncpg.Connection, asked: Sequence[tuple[str | None, str]]
    ) -> list[tuple[DMSRecord | None, bool]]:
        """What authorizing enrollments reads, with one statement: for each (serial of
        the presented certificate, device id), the DMS holding that certificate and
        whether the device is decommissioned."""
        rows = await conn.fetch(
            """SELECT a.serial, d.name, d.status, d.authorized_cas, d.certificate_der,
                      EXISTS (SELECT 1 FROM dms.decommissioned_devices AS g
                              WHERE g.device_id = a.device_id) AS decommissioned
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY
                    AS a(serial, device_id, i)
               LEFT JOIN dms.dms AS d ON d.certificate_serial = a.serial
               ORDER BY a.i""",
            [serial for serial, _ in asked],
            [device_id for _, device_id in asked],
        )
        return [
            (
                None
                if row["name"] is None
                else DMSRecord(
                    row["name"],
                    DMSStatus(row["status"]),
                    frozenset(row["authorized_cas"]),
                    row["serial"],
                    row["certificate_der"],
                ),
                bool(row["decommissioned"]),
            )
            for row in rows
        ]
