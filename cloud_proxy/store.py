"""SQL of schema ``cloud``: inline, on asyncpg, each method taking the caller's connection
so the caller owns the transaction. Rows come back as ``cloud_proxy.sync`` targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from cloud_proxy.sync import CATarget, CertificateTarget, Connection
from contracts.ca import CertificateStatus, CertificateView
from contracts.cloud import (
    ConnectCA,
    ConnectionMode,
    ConnectionView,
    ConnectorStatus,
    SyncKind,
)

__all__ = ["CHANNEL", "SCHEMA", "Item", "Store"]

SCHEMA = "cloud"
# LISTEN/NOTIFY channel: a NOTIFY in a handler's transaction is delivered at its commit
# (PostgreSQL NOTIFY docs), so the syncer wakes when the change is visible, not before.
CHANNEL = "cloud_sync"
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


@dataclass(frozen=True, slots=True)
class Item:
    """A claimed item: what to bring in step, in which connector, at which version."""

    connector: str
    kind: SyncKind
    key: str
    version: int
    attempts: int


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
            view.slot or "default",
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

    # --- items -----------------------------------------------------------------------

    async def touch(
        self,
        conn: asyncpg.Connection,
        now: datetime,
        *,
        cas: Sequence[str] = (),
        serials: Sequence[str] = (),
    ) -> int:
        """Make the items of these CAs and certificates due in every connector they are
        connected to; wakes the syncers at commit. The number of items touched."""
        touched: int = await conn.fetchval(
            """
            WITH wanted AS (
                SELECT connector, 'ca' AS kind, ca AS key FROM cloud.connections
                WHERE ca = ANY($1::text[])
                UNION ALL
                SELECT n.connector, 'certificate', c.serial
                FROM cloud.certificates c JOIN cloud.connections n ON n.ca = c.ca
                WHERE c.serial = ANY($2::text[])
            ), upserted AS (
                INSERT INTO cloud.items AS i (connector, kind, key, state, next_attempt_at)
                SELECT connector, kind, key, 'pending', $3 FROM wanted
                ON CONFLICT (connector, kind, key) DO UPDATE SET state = 'pending',
                    next_attempt_at = $3, attempts = 0, version = i.version + 1
                RETURNING 1
            )
            SELECT count(*) FROM upserted
            """,
            list(cas),
            list(serials),
            now,
        )
        if touched:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
        return touched

    async def touch_connection(
        self, conn: asyncpg.Connection, ca: str, now: datetime
    ) -> int:
        rows = await conn.fetch(
            "SELECT serial FROM cloud.certificates WHERE ca = $1", ca
        )
        return await self.touch(
            conn, now, cas=[ca], serials=[row["serial"] for row in rows]
        )

    async def claim(
        self,
        conn: asyncpg.Connection,
        now: datetime,
        lease_until: datetime,
        connectors: Sequence[str],
        limit: int,
    ) -> list[Item]:
        """Due items, CAs first (device certificates need their CA registered); each
        is leased until ``lease_until``, so other replicas skip it meanwhile."""
        rows = await conn.fetch(
            """
            UPDATE cloud.items i SET next_attempt_at = $2
            FROM (
                SELECT connector, kind, key FROM cloud.items
                WHERE state <> 'synced' AND next_attempt_at <= $1
                  AND connector = ANY($3::text[])
                ORDER BY kind = 'ca' DESC, next_attempt_at
                LIMIT $4
                FOR UPDATE SKIP LOCKED
            ) due
            WHERE (i.connector, i.kind, i.key) = (due.connector, due.kind, due.key)
            RETURNING i.connector, i.kind, i.key, i.version, i.attempts
            """,
            now,
            lease_until,
            list(connectors),
            limit,
        )
        items = [
            Item(
                r["connector"],
                SyncKind(r["kind"]),
                r["key"],
                r["version"],
                r["attempts"],
            )
            for r in rows
        ]
        return sorted(items, key=lambda item: item.kind is not SyncKind.CA)

    async def next_due(
        self, conn: asyncpg.Connection, connectors: Sequence[str]
    ) -> datetime | None:
        due: datetime | None = await conn.fetchval(
            "SELECT min(next_attempt_at) FROM cloud.items "
            "WHERE state <> 'synced' AND connector = ANY($1::text[])",
            list(connectors),
        )
        return due

    async def synced(self, conn: asyncpg.Connection, item: Item, now: datetime) -> bool:
        """Mark the item synced unless it changed meanwhile (then it stays due)."""
        done = await conn.fetchval(
            """
            UPDATE cloud.items SET state = 'synced', attempts = 0, synced_at = $5
            WHERE connector = $1 AND kind = $2 AND key = $3 AND version = $4
            RETURNING true
            """,
            item.connector,
            item.kind.value,
            item.key,
            item.version,
            now,
        )
        return bool(done)

    async def failed(
        self,
        conn: asyncpg.Connection,
        item: Item,
        error: str,
        now: datetime,
        next_attempt_at: datetime,
    ) -> bool | None:
        """Record a failed attempt. True when the item was not failed before (worth an
        event), False when it was, None when it changed meanwhile (nothing recorded)."""
        row = await conn.fetchrow(
            """
            UPDATE cloud.items i SET state = 'failed', attempts = i.attempts + 1,
                last_error = $5, last_error_at = $6, next_attempt_at = $7
            FROM cloud.items old
            WHERE (old.connector, old.kind, old.key) = (i.connector, i.kind, i.key)
              AND i.connector = $1 AND i.kind = $2 AND i.key = $3 AND i.version = $4
            RETURNING old.state
            """,
            item.connector,
            item.kind.value,
            item.key,
            item.version,
            error,
            now,
            next_attempt_at,
        )
        return None if row is None else row["state"] != "failed"

    async def release(
        self, conn: asyncpg.Connection, item: Item, now: datetime
    ) -> None:
        """Give a claimed item back, due now (its sync was cut short, not failed)."""
        await conn.execute(
            "UPDATE cloud.items SET next_attempt_at = $4 "
            "WHERE connector = $1 AND kind = $2 AND key = $3",
            item.connector,
            item.kind.value,
            item.key,
            now,
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

    async def ca_synced(
        self, conn: asyncpg.Connection, connector: str, ca: str
    ) -> bool:
        state = await conn.fetchval(
            "SELECT state FROM cloud.items "
            "WHERE connector = $1 AND kind = 'ca' AND key = $2",
            connector,
            ca,
        )
        return bool(state == "synced")

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

    async def make_due(
        self,
        conn: asyncpg.Connection,
        connector: str,
        keys: Sequence[tuple[SyncKind, str]],
        now: datetime,
    ) -> None:
        """Reconciliation found these items out of step: due now, whatever they were."""
        if not keys:
            return
        await conn.execute(
            """
            INSERT INTO cloud.items AS i (connector, kind, key, state, next_attempt_at)
            SELECT $1, kind, key, 'pending', $4
            FROM unnest($2::text[], $3::text[]) AS k (kind, key)
            ON CONFLICT (connector, kind, key) DO UPDATE SET
                state = CASE WHEN i.state = 'synced' THEN 'pending' ELSE i.state END,
                next_attempt_at = $4, version = i.version + 1
            """,
            connector,
            [kind.value for kind, _ in keys],
            [key for _, key in keys],
            now,
        )

    # --- reconciliations -------------------------------------------------------------

    async def request_reconciliation(
        self, conn: asyncpg.Connection, connectors: Sequence[str], now: datetime
    ) -> None:
        await conn.execute(
            """
            INSERT INTO cloud.reconciliations (connector, requested_at)
            SELECT unnest($1::text[]), $2
            ON CONFLICT (connector) DO UPDATE SET requested_at = $2
            """,
            list(connectors),
            now,
        )
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)

    async def claim_reconciliation(
        self, conn: asyncpg.Connection, connectors: Sequence[str]
    ) -> str | None:
        """A connector whose reconciliation was asked for; the request is taken."""
        connector: str | None = await conn.fetchval(
            """
            UPDATE cloud.reconciliations r SET requested_at = NULL
            FROM (
                SELECT connector FROM cloud.reconciliations
                WHERE requested_at IS NOT NULL AND connector = ANY($1::text[])
                LIMIT 1 FOR UPDATE SKIP LOCKED
            ) due
            WHERE r.connector = due.connector
            RETURNING r.connector
            """,
            list(connectors),
        )
        return connector

    async def reconciled(
        self, conn: asyncpg.Connection, connector: str, now: datetime
    ) -> None:
        await conn.execute(
            "UPDATE cloud.reconciliations SET reconciled_at = $2 WHERE connector = $1",
            connector,
            now,
        )

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
