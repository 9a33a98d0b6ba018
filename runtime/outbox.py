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

from contracts.envelope import CloudEvent
from runtime.bus import Bus
from runtime.faults import Backoff, is_transient

__all__ = [
    "OutboxRelay",
    "copy_many",
    "insert_rows",
    "outbox_rows",
    "write_commands",
    "write_events",
]

log = structlog.get_logger("outbox")

# From this many rows on, COPY beats a one-statement INSERT (a sweep shard writes
# hundreds); below it, COPY's extra round trip to learn the column types costs more.
_COPY_FROM = 64

Rows = tuple[list[str], list[str], list[str], list[bytes]]


def outbox_rows(
    events: Sequence[CloudEvent], commands: Sequence[CloudEvent] = ()
) -> Rows:
    """Outbox rows as four columns (id, exchange, routing key, body), for ``INSERT``."""
    messages = [("events", m) for m in events] + [("commands", m) for m in commands]
    return (
        [m.id for _, m in messages],
        [exchange for exchange, _ in messages],
        [m.type for _, m in messages],
        [m.model_dump_json().encode() for _, m in messages],
    )


def insert_rows(schema: str, first: int = 1) -> str:
    """One statement adding the rows of ``outbox_rows``, passed as parameters
    ``$first`` to ``$first+3``: one statement for PostgreSQL to run, not one per row."""
    p = [f"${first + i}" for i in range(4)]
    return (
        f"INSERT INTO {schema}.outbox (id, exchange, routing_key, body) "
        f"SELECT * FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], "
        f"{p[3]}::bytea[])"
    )


async def copy_many(conn: asyncpg.Connection, schema: str, rows: Rows) -> Rows:
    """COPY ``rows`` when there are many; what is left for ``insert_rows`` (none
    then, else all of them)."""
    if len(rows[0]) < _COPY_FROM:
        return rows
    await conn.copy_records_to_table(
        "outbox",
        schema_name=schema,
        columns=["id", "exchange", "routing_key", "body"],
        records=zip(*rows, strict=True),
    )
    return ([], [], [], [])


async def _write(
    conn: asyncpg.Connection,
    schema: str,
    events: Sequence[CloudEvent],
    commands: Sequence[CloudEvent] = (),
) -> None:
    rows = await copy_many(conn, schema, outbox_rows(events, commands))
    if rows[0]:
        await conn.execute(insert_rows(schema), *rows)


async def write_events(
    conn: asyncpg.Connection, schema: str, events: Sequence[CloudEvent]
) -> None:
    """Add events to the outbox inside the caller's transaction (one statement)."""
    await _write(conn, schema, events)


async def write_commands(
    conn: asyncpg.Connection, schema: str, commands: Sequence[CloudEvent]
) -> None:
    """Add fire-and-forget commands (no reply) to the outbox, e.g. revoke on decommission."""
    await _write(conn, schema, (), commands)


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
        backoff: Backoff | None = None,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._bus = bus
        self._batch = batch
        self._poll_interval = poll_interval
        self._backoff = backoff or Backoff(initial=0.2, cap=5.0)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def drain_once(self) -> int:
        """Publish one batch; returns how many events went out."""
        async with self._pool.acquire() as conn, conn.transaction():
            # Claimed and deleted in one statement; a failed publish rolls it back.
            # ``= ANY(ARRAY(...))`` runs the claim once and deletes through the primary
            # key; ``IN (...)`` plans a hash join over the whole table, which a backlog
            # makes quadratic.
            claimed = await conn.fetch(
                f"DELETE FROM {self._schema}.outbox WHERE seq = ANY(ARRAY("
                f"SELECT seq FROM {self._schema}.outbox ORDER BY seq LIMIT $1 "
                "FOR UPDATE SKIP LOCKED)) "
                "RETURNING seq, id, exchange, routing_key, body",
                self._batch,
            )
            if not claimed:
                return 0
            topology = self._bus.topology
            await self._bus.publish_batch(
                [
                    (
                        topology.exchange(r["exchange"]),
                        r["routing_key"],
                        r["id"],
                        r["body"],
                    )
                    for r in sorted(claimed, key=lambda r: r["seq"])
                ]
            )
            return len(claimed)

    async def run(self) -> None:
        """Relay until cancelled. A transient failure (the broker or the database
        restarting) is logged once per outage and retried with backoff; anything else
        is raised to the supervisor that runs this loop (``runtime.supervise``)."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                while await self.drain_once() == self._batch:
                    pass
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                if failures == 1:
                    log.warning(
                        "outbox_relay_waiting", error=f"{type(exc).__name__}: {exc}"
                    )
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            if failures:
                log.info("outbox_relay_resumed", failed_tries=failures)
                failures = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
