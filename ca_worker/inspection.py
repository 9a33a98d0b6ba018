"""What the CA worker tells an operator's tools about itself: its engines, its counts.

``ca.engines`` runs ``engines.check`` on each engine this worker has configured, in
this process, with this process's settings: the answer is about the engines the
worker signs with, whatever the caller's environment says. Both queries change
nothing, so they run without a transaction or an inbox row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg

from ca_worker.context import CaContext
from contracts.ops import (
    CAStats,
    CertificateCount,
    CheckEngines,
    EngineCheck,
    EngineChecks,
    GetCAStats,
)
from engines.check import check
from engines.config import AnyEngineConfig
from runtime.routes import Mode, Outcome, Route, routes

__all__ = ["count_certificates", "inspection_handlers"]


def inspection_handlers(
    configs: Mapping[str, AnyEngineConfig],
) -> Mapping[str, Route[Any, Any]]:
    """The routes of both queries, over the worker's engine configurations."""

    async def check_engines(_query: CheckEngines, _ctx: Any) -> Outcome:
        # One engine after the other, in a thread: a PKCS#11 login or a Vault
        # round trip blocks.
        items = [
            EngineCheck(engine=name, check=line.name, ok=line.ok, detail=line.detail)
            for name, config in configs.items()
            for line in await asyncio.to_thread(check, config)
        ]
        return Outcome(EngineChecks(items=items))

    return routes(
        Route(CheckEngines, check_engines, mode=Mode.READ),
        Route(GetCAStats, ca_stats, mode=Mode.READ),
    )


async def ca_stats(_query: GetCAStats, ctx: CaContext) -> Outcome:
    """CAs and certificates by CA and status, counted in the database."""
    cas, counts = await count_certificates(ctx.conn)
    return Outcome(CAStats(cas=cas, certificates=counts))


async def count_certificates(
    conn: asyncpg.Connection,
) -> tuple[int, list[CertificateCount]]:
    """How many CAs, and each CA's certificates per status (``lamassu status`` and
    the ``lamassu_certificates`` gauge)."""
    cas = await conn.fetchval("SELECT count(*) FROM ca.cas")
    rows = await conn.fetch(
        "SELECT ca, status, count(*) AS count FROM ca.certificates "
        "GROUP BY ca, status ORDER BY ca, status"
    )
    return int(cas), [
        CertificateCount(ca=r["ca"], status=r["status"], count=r["count"]) for r in rows
    ]
