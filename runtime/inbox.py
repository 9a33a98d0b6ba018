"""Inbox retention: processed message ids are kept for a while, then forgotten.

The inbox (``<schema>.inbox``) makes consumers idempotent: a message id seen before is
answered with its stored reply instead of being handled again. A redelivery arrives
within minutes of the first delivery (a broker restart, a nack, a publisher's retry
after a lost confirm), so ids are kept for ``keep_ids`` (default 7 days, far beyond any
redelivery) and the stored replies, which are the bulk of a row, for ``keep_replies``
(default 1 hour: as long as a requester may still be waiting for them). Ages are
measured on PostgreSQL's clock, which stamped ``processed_at``.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import structlog

__all__ = ["prune_inbox"]

log = structlog.get_logger("inbox")


async def prune_inbox(
    conn: asyncpg.Connection,
    schema: str,
    *,
    keep_ids: timedelta,
    keep_replies: timedelta,
) -> tuple[int, int]:
    """Forget old ids and old replies in one statement; (ids removed, replies dropped)."""
    row = await conn.fetchrow(
        f"""WITH gone AS (
                DELETE FROM {schema}.inbox
                WHERE processed_at < now() - $1::interval RETURNING 1),
            emptied AS (
                UPDATE {schema}.inbox SET reply = NULL
                WHERE processed_at < now() - $2::interval
                  AND processed_at >= now() - $1::interval
                  AND reply IS NOT NULL RETURNING 1)
            SELECT (SELECT count(*) FROM gone) AS ids,
                   (SELECT count(*) FROM emptied) AS replies""",
        keep_ids,
        keep_replies,
    )
    ids, replies = (int(row["ids"]), int(row["replies"])) if row else (0, 0)
    if ids or replies:
        log.info("inbox_pruned", schema=schema, ids=ids, replies=replies)
    return ids, replies
