"""SQL of schema ``cloud`` for the projection, the connections and the status report:
inline, on asyncpg, each method taking the caller's connection so the caller owns the
transaction. Rows come back as ``cloud_proxy.sync`` targets. The items, the work to be
done, are in ``items.py``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from cloud_proxy.sync import CATarget, CertificateTarget, Connection
from contracts.ca import CertificateStatus, CertificateView
from contracts.cloud import (
    ConnectCA,
    ConnectionMode,
    ConnectionView,
    ConnectorStatus,
)
from contracts.pki import DEFAULT_SLOT

__all__ = ["SCHEMA", "Store"]

SCHEMA = "cloud"
_STATUS_ORDER = ["ACTIVE", "ABOUT_TO_EXPIRE", "EXPIRED", "REVOKED"]

_TARGET = """
    SELECT n.ca, n.connector, n.mode, n.policy, n.thing_group, n.provisioning_role_arn,
           c.serial, c.device_id, c.certificate_pem, c.status, c.replaced_by,
           a.certificate_pem AS ca_pem, d.id IS NOT NULL AS decommissioned
    FROM cloud.certificates c
    JOIN cloud.connections n ON n.ca = c.ca
    LEFT JOIN cloud.cas a ON a.name = c.ca
    LEFT JOIN cloud.decommissioned_devices d ON d.id = c.device_id
"""


def _connection(row: asyncpg.Record) -> Connection:
    return Connection(
        ca=row["ca"],
        connector=row["connector"],
        mode=ConnectionMode(row["mode"]),
        policy=row["policy"],
        thing_group=row["thing_group"],
        provisioning_role_arn=row["provisioning_role_arn"],
    )


def _certificate_target(row: asyncpg.Record) -> CertificateTarget:
    return CertificateTarget(
        connection=_connection(row),
        serial=row["serial"],
        device_id=row["device_id"],
        certificate_pem=row["certificate_pem"],
        ca_certificate_pem=row["ca_pem"],
        status=CertificateStatus(row["status"]),
        replaced=row["replaced_by"] is not None,
        decommissioned=row["decommissioned"],
    )


def _view(row: asyncpg.Record) -> ConnectionView:
    return ConnectionView(
        ca=row["ca"],
        connector=row["connector"],
        mode=ConnectionMode(row["mode"]),
        policy=row["policy"],
        thing_group=row["thing_group"],
        provisioning_role_arn=row["provisioning_role_arn"],
        created_at=row["created_at"],
    )


class Store:
    # --- projection (fed by events) --------------------------------------------------

    async def upsert_ca(
        self, conn: asyncpg.Connection, name: str, pem: str, status: str
    ) -> None:
        await conn.execute(
            """
            INSERT INTO cloud.cas (name, certificate_pem, status) VALUES ($1, $2, $3)
            ON CONFLICT (name) DO UPDATE SET certificate_pem = $2, status = $3
            """,
            name,
            pem,
            status,
        )

    async def upsert_certificate(
        self, conn: asyncpg.Connection, view: CertificateView
    ) -> list[str]:
        """Record a device certificate; the serials whose target changed."""
        if view.device_id is None:
            return []
        await conn.execute(
            """
            INSERT INTO cloud.certificates
                (serial, ca, device_id, slot, status, certificate_pem)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (serial) DO UPDATE SET status = $5
            -- Statuses only move forward (DESIGN §4): a late or redelivered event
            -- never takes a revoked certificate back to active.
            WHERE array_position($7::text[], $5)
                >= array_position($7::text[], cloud.certificates.status)
            """,
            view.serial,
            view.ca,
            view.device_id,
            view.slot or DEFAULT_SLOT,
            view.status.value,
            view.certificate_pem,
            _STATUS_ORDER,
        )
        changed = [view.serial]
        if view.replaces is not None:
            replaced = await conn.fetchval(
                "UPDATE cloud.certificates SET replaced_by = $2 "
                "WHERE serial = $1 RETURNING serial",
                view.replaces,
                view.serial,
            )
            changed += [replaced] if replaced is not None else []
        return changed

    async def decommission(
        self, conn: asyncpg.Connection, device_id: str, at: datetime
    ) -> list[str]:
        """Record a decommissioned device; the serials of its certificates."""
        await conn.execute(
            "INSERT INTO cloud.decommissioned_devices (id, decommissioned_at) "
            "VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            device_id,
            at,
        )
        rows = await conn.fetch(
            "SELECT serial FROM cloud.certificates WHERE device_id = $1", device_id
        )
        return [row["serial"] for row in rows]

    # --- connections -----------------------------------------------------------------

    async def connect(
        self, conn: asyncpg.Connection, request: ConnectCA, now: datetime
    ) -> ConnectionView:
        row = await conn.fetchrow(
            """
            INSERT INTO cloud.connections
                (ca, connector, mode, policy, thing_group, provisioning_role_arn,
                 created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (ca, connector) DO UPDATE SET mode = $3, policy = $4,
                thing_group = $5, provisioning_role_arn = $6
            RETURNING *
            """,
            request.ca,
            request.connector,
            request.mode.value,
            request.policy,
            request.thing_group,
            request.provisioning_role_arn,
            now,
        )
        return _view(row)

    async def to_backfill(
        self, conn: asyncpg.Connection, connectors: Sequence[str]
    ) -> list[str]:
        """CAs connected to one of ``connectors`` whose past is not read yet."""
        rows = await conn.fetch(
            "SELECT DISTINCT ca FROM cloud.connections "
            "WHERE backfilled_at IS NULL AND connector = ANY($1::text[]) ORDER BY ca",
            list(connectors),
        )
        return [row["ca"] for row in rows]

    async def backfilled(
        self, conn: asyncpg.Connection, ca: str, now: datetime
    ) -> None:
        await conn.execute(
            "UPDATE cloud.connections SET backfilled_at = $2 WHERE ca = $1", ca, now
        )

    # --- targets ---------------------------------------------------------------------

    async def ca_target(
        self, conn: asyncpg.Connection, connector: str, ca: str
    ) -> CATarget | None:
        row = await conn.fetchrow(
            """
            SELECT n.*, a.certificate_pem, a.status FROM cloud.connections n
            JOIN cloud.cas a ON a.name = n.ca WHERE n.connector = $1 AND n.ca = $2
            """,
            connector,
            ca,
        )
        if row is None:
            return None
        return CATarget(
            _connection(row), row["certificate_pem"], CertificateStatus(row["status"])
        )

    async def certificate_target(
        self, conn: asyncpg.Connection, connector: str, serial: str
    ) -> CertificateTarget | None:
        row = await conn.fetchrow(
            _TARGET + " WHERE n.connector = $1 AND c.serial = $2", connector, serial
        )
        return None if row is None else _certificate_target(row)

    async def certificate_targets(
        self, conn: asyncpg.Connection, connector: str, after: str, limit: int
    ) -> list[CertificateTarget]:
        """A page of the connector's certificate targets, by serial after ``after``."""
        rows = await conn.fetch(
            _TARGET
            + " WHERE n.connector = $1 AND c.serial > $2 ORDER BY c.serial LIMIT $3",
            connector,
            after,
            limit,
        )
        return [_certificate_target(row) for row in rows]

    async def ca_targets(
        self, conn: asyncpg.Connection, connector: str
    ) -> list[CATarget]:
        rows = await conn.fetch(
            """
            SELECT n.*, a.certificate_pem, a.status FROM cloud.connections n
            JOIN cloud.cas a ON a.name = n.ca WHERE n.connector = $1 ORDER BY n.ca
            """,
            connector,
        )
        return [
            CATarget(
                _connection(r), r["certificate_pem"], CertificateStatus(r["status"])
            )
            for r in rows
        ]

    # --- status ----------------------------------------------------------------------

    async def status(
        self, conn: asyncpg.Connection, connectors: Sequence[str], configured: set[str]
    ) -> list[ConnectorStatus]:
        rows = await conn.fetch(
            """
            WITH names AS (
                SELECT unnest($1::text[]) AS connector
                UNION SELECT connector FROM cloud.connections
            )
            SELECT names.connector,
                count(*) FILTER (WHERE i.state = 'synced') AS synced,
                count(*) FILTER (WHERE i.state = 'pending') AS pending,
                count(*) FILTER (WHERE i.state = 'failed') AS failed,
                (array_agg(i.last_error ORDER BY i.last_error_at DESC)
                    FILTER (WHERE i.state = 'failed'))[1] AS last_error,
                max(i.last_error_at) FILTER (WHERE i.state = 'failed') AS last_error_at,
                (SELECT reconciled_at FROM cloud.reconciliations r
                 WHERE r.connector = names.connector) AS last_reconciled_at
            FROM names LEFT JOIN cloud.items i ON i.connector = names.connector
            GROUP BY names.connector ORDER BY names.connector
            """,
            list(connectors),
        )
        connections = await conn.fetch(
            "SELECT * FROM cloud.connections ORDER BY connector, ca"
        )
        return [
            ConnectorStatus(
                connector=row["connector"],
                configured=row["connector"] in configured,
                connections=[
                    _view(c) for c in connections if c["connector"] == row["connector"]
                ],
                synced=row["synced"],
                pending=row["pending"],
                failed=row["failed"],
                last_error=row["last_error"],
                last_error_at=row["last_error_at"],
                last_reconciled_at=row["last_reconciled_at"],
            )
            for row in rows
        ]
