"""Inbox retention: old ids are forgotten, old replies dropped, recent ones kept."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from runtime.db import migrate
from runtime.inbox import prune_inbox
from tests.conftest import Backends

pytestmark = [pytest.mark.postgres]


async def test_prune_keeps_what_a_redelivery_may_still_need(backends: Backends) -> None:
    """Ids older than keep_ids go; replies older than keep_replies go, their ids stay."""
    schema = f"inbox_{uuid.uuid4().hex[:8]}"
    pool = await backends.pool()
    try:
        await migrate(pool, schema, [])
        reply = json.dumps({"ok": True, "result": {"x": 1}})
        async with pool.acquire() as conn:
            await conn.executemany(
                f"INSERT INTO {schema}.inbox (id, reply, processed_at) "
                "VALUES ($1, $2::jsonb, now() - $3::interval)",
                [
                    ("ancient", reply, timedelta(days=8)),
                    ("yesterday", reply, timedelta(days=1)),
                    ("just-now", reply, timedelta(minutes=1)),
                ],
            )
            removed = await prune_inbox(
                conn,
                schema,
                keep_ids=timedelta(days=7),
                keep_replies=timedelta(hours=1),
            )
            rows = {
                r["id"]: r["kept"]
                for r in await conn.fetch(
                    f"SELECT id, reply IS NOT NULL AS kept FROM {schema}.inbox"
                )
            }
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await pool.close()
    assert (1, 1) == removed
    assert {"yesterday": False, "just-now": True} == rows
