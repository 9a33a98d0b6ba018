"""SQL of the items table: one row per (connector, CA or certificate) to bring in step,
used as a work queue with leases, plus the reconciliation requests. Inline, on
asyncpg; each method takes the caller's connection so the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.cloud import SyncKind

__all__ = ["CHANNEL", "Item", "Items"]

# LISTEN/NOTIFY channel: a NOTIFY in a handler's transaction is delivered at its commit
# (PostgreSQL NOTIFY docs), so the syncer wakes when the change is visible, not before.
CHANNEL = "cloud_sync"


@dataclass(frozen=True, slots=True)
class Item:
    """A claimed item: what to bring in step, in which connector, at which version."""

    connector: str
    kind: SyncKind
    key: str
    version: int
    attempts: int


class Items:
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
