"""The metrics every worker exports, on a registry its process makes and passes down.

Counters move as messages are settled; the gauges (outbox backlog and age, inbox
size, dead letters) are read when Prometheus scrapes, so a process that handles
nothing still reports them. Names follow the Prometheus conventions: ``_total`` for
counters, base units (seconds) in the name.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

from runtime.bus import Bus

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """One worker process's metrics (``schema`` labels them)."""

    def __init__(self, registry: CollectorRegistry, schema: str) -> None:
        self._schema = schema
        self.messages = Counter(
            "lamassu_messages_total",
            "Messages settled, by CloudEvents type and outcome "
            "(ok, refused, forwarded, requeued, dead_lettered).",
            ["worker", "type", "outcome"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "lamassu_outbox_backlog",
            "Outbox rows written and not yet published.",
            ["worker"],
            registry=registry,
        )
        self.outbox_oldest = Gauge(
            "lamassu_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when empty).",
            ["worker"],
            registry=registry,
        )
        self.inbox_rows = Gauge(
            "lamassu_inbox_rows",
            "Processed message ids kept for deduplication.",
            ["worker"],
            registry=registry,
        )
        self.queue_messages = Gauge(
            "lamassu_queue_messages",
            "Messages ready in a queue of this worker (the .dead ones: dead letters).",
            ["queue"],
            registry=registry,
        )

    def settled(self, type_: str, outcome: str) -> None:
        """Count one settled message (the dispatcher's ``observe`` hook)."""
        self.messages.labels(self._schema, type_, outcome).inc()

    async def read_outbox(self, pool: asyncpg.Pool) -> tuple[int, float]:
        """Refresh and return the outbox backlog and its oldest row's age (seconds)."""
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS backlog, coalesce(extract(epoch FROM "
                f"now() - min(created_at)), 0) AS age FROM {self._schema}.outbox"
            )
            # The planner's estimate: counting a large inbox exactly on every
            # scrape would read the whole table.
            inbox = await conn.fetchval(
                "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                "WHERE oid = to_regclass($1)",
                f"{self._schema}.inbox",
            )
        if row is None:
            raise RuntimeError("an aggregate query returned no row")
        backlog, age = int(row["backlog"]), float(row["age"])
        self.outbox_backlog.labels(self._schema).set(backlog)
        self.outbox_oldest.labels(self._schema).set(age)
        self.inbox_rows.labels(self._schema).set(int(inbox or 0))
        return backlog, age

    async def read_queues(self, bus: Bus, queues: Sequence[str]) -> None:
        """Refresh the depth of each queue and of its dead-letter queue."""
        for name in queues:
            for queue in (name, f"{name}.dead"):
                depth = await bus.message_count(queue)
                if depth is not None:
                    self.queue_messages.labels(queue).set(depth)
