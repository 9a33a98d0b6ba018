"""The transactional outbox: events are written with the state change that caused them,
and a relay publishes them with publisher confirms, then deletes them.

A crash between commit and publish only delays an event; a crash between publish and
delete publishes it twice, which consumers absorb by deduplicating on the event id.
Several replicas may relay at once: rows are claimed with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import structlog
from aio_pika.exceptions import AMQPError

from contracts.envelope import CloudEvent
from runtime.bus import Bus

__all__ = ["OutboxRelay", "write_commands", "write_events"]

log = structlog.get_logger("outbox")

# From this many rows on, COPY beats a multi-row INSERT (a sweep shard writes hundreds);
# below it, COPY's extra round trip to learn the column types costs more than it saves.
_COPY_FROM = 64


async def _write(
    conn: asyncpg.Connection, schema: str, exchange: str, messages: Sequence[CloudEvent]
) -> None:
    if not messages:
        return
    rows = [(m.id, exchange, m.type, m.model_dump_json().encode()) for m in messages]
    if len(rows) < _COPY_FROM:
        await conn.executemany(
            f"INSERT INTO {schema}.outbox (id, exchange, routing_key, body) "
            "VALUES ($1, $2, $3, $4)",
            rows,
        )
        return
    await conn.copy_records_to_table(
        "outbox",
        schema_name=schema,
        columns=["id", "exchange", "routing_key", "body"],
        records=rows,
    )


async def write_events(
    conn: asyncpg.Connection, schema: str, events: Sequence[CloudEvent]
) -> None:
    """Add events to the outbox inside the caller's transaction (one multi-row insert)."""
    await _write(conn, schema, "events", events)


async def write_commands(
    conn: asyncpg.Connection, schema: str, commands: Sequence[CloudEvent]
) -> None:
    """Add fire-and-forget commands (no reply) to the outbox, e.g. revoke on decommission."""
    await _write(conn, schema, "commands", commands)


class OutboxRelay:
    """Publishes outbox rows; woken after each commit, polling as a backstop."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        bus: Bus,
        *,
        batch: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._bus = bus
        self._batch = batch
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def drain_once(self) -> int:
        """Publish one batch; returns how many events went out."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT seq, id, exchange, routing_key, body FROM {self._schema}.outbox "
                "ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
            )
            if not rows:
                return 0
            topology = self._bus.topology
            exchanges = {"events": topology.events, "commands": topology.commands}
            await self._bus.publish_batch(
                [
                    (exchanges[r["exchange"]], r["routing_key"], r["id"], r["body"])
                    for r in rows
                ]
            )
            await conn.execute(
                f"DELETE FROM {self._schema}.outbox WHERE seq = ANY($1::bigint[])",
                [r["seq"] for r in rows],
            )
            return len(rows)

    async def run(self) -> None:
        """Relay until cancelled; errors are logged once and retried after the poll interval."""
        while True:
            self._wake.clear()
            try:
                while await self.drain_once() == self._batch:
                    pass
            except (OSError, asyncpg.PostgresError, AMQPError, ConnectionError) as exc:
                log.warning("outbox_relay_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
