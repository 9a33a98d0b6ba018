"""SQL of schema ``alerts``: inline, on asyncpg, each method taking the caller's
connection so that the caller owns the transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from alerts_worker.subscriptions import NewDelivery, Subscription
from contracts.alerts import (
    Channel,
    DeliveryAttempt,
    DeliveryStatus,
    DeliveryView,
)

__all__ = ["SCHEMA", "WAKE_CHANNEL", "Claimed", "Store"]

SCHEMA = "alerts"
# NOTIFY channel (PostgreSQL LISTEN/NOTIFY): delivered on commit, to every replica.
WAKE_CHANNEL = "alerts_due"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A notification claimed for one attempt, with where it goes."""

    id: int
    subscription_id: str
    message_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int  # including this one
    created_at: datetime
    channel: Channel
    target: str
    secret: str | None


_COLUMNS = "id, event, condition, channel, target, secret, digest, created_at"


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(
        row["id"],
        row["event"],
        row["condition"],
        Channel(row["channel"]),
        row["target"],
        row["secret"],
        row["digest"],
        row["created_at"],
    )


class Store:
    async def insert_subscription(
        self, conn: asyncpg.Connection, sub: Subscription
    ) -> None:
        await conn.execute(
            f"INSERT INTO {SCHEMA}.subscriptions ({_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            sub.id,
            sub.event,
            sub.condition,
            sub.channel.value,
            sub.target,
            sub.secret,
            sub.digest,
            sub.created_at,
        )

    async def subscriptions(self, conn: asyncpg.Connection) -> list[Subscription]:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {SCHEMA}.subscriptions ORDER BY created_at, id"
        )
        return [_subscription(r) for r in rows]

    async def subscription(
        self, conn: asyncpg.Connection, subscription_id: str
    ) -> Subscription | None:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM {SCHEMA}.subscriptions WHERE id = $1",
            subscription_id,
        )
        return None if row is None else _subscription(row)

    async def delete_subscription(
        self, conn: asyncpg.Connection, subscription_id: str
    ) -> Subscription | None:
        row = await conn.fetchrow(
            f"DELETE FROM {SCHEMA}.subscriptions WHERE id = $1 RETURNING {_COLUMNS}",
            subscription_id,
        )
        return None if row is None else _subscription(row)

    async def add_deliveries(
        self, conn: asyncpg.Connection, deliveries: Sequence[NewDelivery], now: datetime
    ) -> list[int]:
        """Queue notifications (a repeat of one is ignored) and wake the senders on
        commit; the ids of those added."""
        if not deliveries:
            return []
        rows = await conn.fetch(
            f"""INSERT INTO {SCHEMA}.deliveries
                    (subscription_id, message_id, kind, payload, created_at, next_attempt_at)
                SELECT s, m, k, p::jsonb, $5, $5
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r(s, m, k, p)
                ON CONFLICT (subscription_id, message_id) DO NOTHING
                RETURNING id""",
            [d.subscription_id for d in deliveries],
            [d.message_id for d in deliveries],
            [d.kind for d in deliveries],
            [json.dumps(d.payload) for d in deliveries],
            now,
        )
        await conn.execute(f"NOTIFY {WAKE_CHANNEL}")
        return [r["id"] for r in rows]

    async def add_digest_items(
        self,
        conn: asyncpg.Connection,
        items: Sequence[tuple[str, str, datetime, Mapping[str, str]]],
    ) -> None:
        """``(subscription id, event id, due at, item)`` rows; repeats are ignored."""
        if not items:
            return
        await conn.execute(
            f"""INSERT INTO {SCHEMA}.digest_items (subscription_id, event_id, due_at, item)
                SELECT s, e, d, i::jsonb
                FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
                    AS r(s, e, d, i)
                ON CONFLICT DO NOTHING""",
            [i[0] for i in items],
            [i[1] for i in items],
            [i[2] for i in items],
            [json.dumps(i[3]) for i in items],
        )

    async def take_due_digests(
        self, conn: asyncpg.Connection, now: datetime
    ) -> dict[tuple[str, datetime], list[dict[str, str]]]:
        """Remove the items of every period that has ended, grouped by subscription
        and period, in arrival order. One replica at a time (a transaction-scoped
        advisory lock), so that a period's items are never split between two."""
        locked = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtext($1))", f"{SCHEMA}:digests"
        )
        if not locked:
            return {}
        rows = await conn.fetch(
            f"""DELETE FROM {SCHEMA}.digest_items WHERE due_at <= $1
                RETURNING subscription_id, due_at, seq, item::text""",
            now,
        )
        grouped: dict[tuple[str, datetime], list[dict[str, str]]] = {}
        for row in sorted(rows, key=lambda r: r["seq"]):
            key = (row["subscription_id"], row["due_at"])
            grouped.setdefault(key, []).append(json.loads(row["item"]))
        return grouped

    async def next_due(self, conn: asyncpg.Connection) -> datetime | None:
        """When the next notification or digest falls due."""
        value: datetime | None = await conn.fetchval(
            f"""SELECT least(
                    (SELECT min(next_attempt_at) FROM {SCHEMA}.deliveries
                     WHERE status = 'pending'),
                    (SELECT min(due_at) FROM {SCHEMA}.digest_items))"""
        )
        return value

    async def claim(
        self, conn: asyncpg.Connection, now: datetime, lease: float, limit: int
    ) -> list[Claimed]:
        """Due notifications, each pushed ``lease`` seconds ahead for this attempt, so
        that another replica (``SKIP LOCKED``) or a restart takes it if this one dies."""
        rows = await conn.fetch(
            f"""UPDATE {SCHEMA}.deliveries AS d
                SET next_attempt_at = $2, attempts = d.attempts + 1
                FROM {SCHEMA}.subscriptions AS s
                WHERE d.id = ANY(ARRAY(
                        SELECT id FROM {SCHEMA}.deliveries
                        WHERE status = 'pending' AND next_attempt_at <= $1
                        ORDER BY next_attempt_at LIMIT $3
                        FOR UPDATE SKIP LOCKED))
                  AND s.id = d.subscription_id
                RETURNING d.id, d.subscription_id, d.message_id, d.kind,
                    d.payload::text, d.attempts, d.created_at,
                    s.channel, s.target, s.secret""",
            now,
            now + timedelta(seconds=lease),
            limit,
        )
        return [
            Claimed(
                r["id"],
                r["subscription_id"],
                r["message_id"],
                r["kind"],
                json.loads(r["payload"]),
                r["attempts"],
                r["created_at"],
                Channel(r["channel"]),
                r["target"],
                r["secret"],
            )
            for r in rows
        ]

    async def settle(
        self,
        conn: asyncpg.Connection,
        now: datetime,
        outcomes: Sequence[tuple[Claimed, str | None, DeliveryStatus, datetime]],
    ) -> None:
        """Record attempts: ``(claimed, error or None, new status, next attempt at)``."""
        await conn.execute(
            f"""WITH attempts AS (
                    INSERT INTO {SCHEMA}.attempts (delivery_id, number, at, ok, error)
                    SELECT i, n, $6, e IS NULL, e
                    FROM unnest($1::bigint[], $2::int[], $3::text[]) AS a(i, n, e)
                    ON CONFLICT DO NOTHING)
                UPDATE {SCHEMA}.deliveries AS d SET status = r.s, next_attempt_at = r.t
                FROM unnest($1::bigint[], $4::text[], $5::timestamptz[]) AS r(i, s, t)
                WHERE d.id = r.i""",
            [c.id for c, _, _, _ in outcomes],
            [c.attempts for c, _, _, _ in outcomes],
            [error for _, error, _, _ in outcomes],
            [status.value for _, _, status, _ in outcomes],
            [at for _, _, _, at in outcomes],
            now,
        )

    async def deliveries(
        self, conn: asyncpg.Connection, subscription_id: str, limit: int
    ) -> list[DeliveryView]:
        rows = await conn.fetch(
            f"""SELECT d.id, d.subscription_id, d.message_id, d.kind, d.status,
                    d.created_at, d.next_attempt_at,
                    coalesce(json_agg(json_build_object(
                        'number', a.number, 'at', a.at, 'ok', a.ok, 'error', a.error)
                        ORDER BY a.number) FILTER (WHERE a.number IS NOT NULL),
                        '[]')::text AS attempts
                FROM (SELECT * FROM {SCHEMA}.deliveries WHERE subscription_id = $1
                      ORDER BY id DESC LIMIT $2) AS d
                LEFT JOIN {SCHEMA}.attempts AS a ON a.delivery_id = d.id
                GROUP BY d.id, d.subscription_id, d.message_id, d.kind, d.status,
                    d.created_at, d.next_attempt_at
                ORDER BY d.id DESC""",
            subscription_id,
            limit,
        )
        return [
            DeliveryView(
                id=r["id"],
                subscription_id=r["subscription_id"],
                message_id=r["message_id"],
                kind=r["kind"],
                status=DeliveryStatus(r["status"]),
                created_at=r["created_at"],
                next_attempt_at=(
                    r["next_attempt_at"] if r["status"] == "pending" else None
                ),
                attempts=[
                    DeliveryAttempt.model_validate(a) for a in json.loads(r["attempts"])
                ],
            )
            for r in rows
        ]
