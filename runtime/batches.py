"""Writing routes: messages run in transactions with the inbox and the outbox.

What has arrived (at most the queue's prefetch) runs on one connection in one
transaction, each run of consecutive messages of one type together (in a savepoint
when the batch has several runs), with one statement for the inbox rows, one for the
outbox rows and the stored replies, and one commit; then the replies are published
together, so the broker confirms them together. A round trip to PostgreSQL, a commit
and a publisher confirm cost a fraction of a millisecond to a millisecond each here
(DESIGN §7): paying them once per batch is where the throughput is. A batch starts as
soon as the previous one has committed, with what arrived meanwhile; it never waits
for more. An ``ALONE`` route's message is a batch of its own, run concurrently.

How each outcome is settled is ``runtime.settlement``'s table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog

from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode, Reply
from runtime.delivery import Delivery, Lane, bind, runs
from runtime.errors import Failure, Transient
from runtime.faults import is_transient
from runtime.outbox import OutboxRelay, copy_many, insert_rows, outbox_rows
from runtime.routes import Outcome
from runtime.settlement import Settlement, poison, refusal, settled_by

__all__ = ["Batches"]

log = structlog.get_logger("dispatch")


class _Redo(Exception):  # noqa: N818 - not an error: a signal to run the batch again
    """A handler of a batch run without savepoints refused: roll back, run again."""


@dataclass(slots=True)
class _Writes:
    """What a batch's handlers left to write once they have all run."""

    events: list[CloudEvent] = field(default_factory=list)
    commands: list[CloudEvent] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)  # message id: reply JSON
    refused: list[str] = field(default_factory=list)

    def took(self, message_id: str, outcome: Outcome) -> Settlement:
        """Keep what a handler's outcome leaves to write; how to settle its message."""
        self.events += outcome.events
        self.commands += outcome.commands
        settlement = settled_by(outcome)
        if settlement.reply is not None:
            self.replies[message_id] = settlement.reply.model_dump_json()
        return settlement

    def took_expired(self, message_id: str, deadline: datetime) -> Settlement:
        """A command whose sender stopped waiting at ``deadline``: not applied, and a
        redelivery is answered the same (the reply is stored with the inbox row)."""
        log.info("message_expired", deadline=deadline.isoformat())
        reply = Reply.failure(
            ErrorCode.UNAVAILABLE,
            f"not applied: its deadline ({deadline.isoformat()}) had passed when a "
            "worker took it",
        )
        self.replies[message_id] = reply.model_dump_json()
        return Settlement(reply=reply)


@dataclass(slots=True)
class Batches:
    """The writing routes of one queue: batch after batch, one transaction each."""

    lane: Lane
    schema: str
    relay: OutboxRelay | None
    _arrived: list[Delivery] = field(default_factory=list)
    _loop: asyncio.Task[None] | None = None
    # The last batch's settlement: the next batch acknowledges after it.
    _last_settlement: asyncio.Task[None] | None = None

    @property
    def running(self) -> asyncio.Task[None] | None:
        return self._loop

    def add(self, delivery: Delivery) -> None:
        """Join the next batch."""
        self._arrived.append(delivery)
        if self._loop is None:
            self._loop = asyncio.create_task(self._run_batches())

    async def alone(self, delivery: Delivery) -> None:
        """An ``ALONE`` route's message: its own transaction, beside the others."""
        task = asyncio.create_task(self._run_batch([delivery], in_order=False))
        self.lane.track(task)
        await task

    async def _run_batches(self) -> None:
        """Take what has arrived, batch after batch, until nothing waits."""
        try:
            # One turn of the loop, no more: deliveries already read join this batch.
            await asyncio.sleep(0)
            while self._arrived:
                batch, self._arrived = self._arrived, []
                await self._run_batch(batch)
        finally:
            self._loop = None

    async def _run_batch(
        self, batch: Sequence[Delivery], *, in_order: bool = True
    ) -> None:
        """Run and settle a batch; ``in_order`` batches are acknowledged one after the
        other (what a ``multiple`` ack needs), the others as soon as they are done, so
        that a quick message running beside a slow one frees its prefetch slot."""
        attempt = 0
        while True:
            try:
                settlements = await self._transact(batch)
                break
            except Exception as exc:
                if is_transient(exc, self.lane.transient):
                    attempt += 1
                    batch = await self.lane.pause(exc, batch, attempt)
                    if not batch:
                        return
                    continue
                if len(batch) > 1:
                    # Find the poison message: alone, every other message commits.
                    for delivery in batch:
                        await self._run_batch([delivery])
                    return
                log.exception("handler_crashed")
                settlements = {batch[0].id: poison(batch[0].envelope)}
                break
        task = asyncio.create_task(
            self.lane.settler.settle_batch(
                batch, settlements, self._last_settlement if in_order else None
            )
        )
        if in_order:
            self._last_settlement = task
        self.lane.track(task)

    async def _transact(self, batch: Sequence[Delivery]) -> dict[str, Settlement]:
        """Run a batch in one transaction; each message id's settlement once committed.

        A batch of one run (the usual case: a busy queue of one message type) runs
        without a savepoint. If one of its handlers refuses, the transaction is rolled
        back and the batch runs again, each message in a savepoint of its own.

        Raises what ``_run_batch`` maps: a transient error or a bug, after rollback.
        """
        firsts: dict[str, Delivery] = {}
        for delivery in batch:
            firsts.setdefault(delivery.id, delivery)
        async with self.lane.pool.acquire() as conn:
            try:
                settlements, writes = await self._attempt(conn, firsts, alone=False)
            except _Redo:
                settlements, writes = await self._attempt(conn, firsts, alone=True)
        if (writes.events or writes.commands) and self.relay is not None:
            self.relay.wake()
        return settlements

    async def _attempt(
        self, conn: asyncpg.Connection, firsts: Mapping[str, Delivery], *, alone: bool
    ) -> tuple[dict[str, Settlement], _Writes]:
        """The batch in one transaction: ``alone``, each message in its own savepoint."""
        writes = _Writes()
        async with conn.transaction():
            # The inbox rows are claimed first: a twin in another transaction waits on
            # its row until this one commits, then finds it processed.
            fresh = {
                row["id"]
                for row in await conn.fetch(
                    f"INSERT INTO {self.schema}.inbox (id) "
                    "SELECT unnest($1::text[]) ON CONFLICT (id) DO NOTHING RETURNING id",
                    list(firsts),
                )
            }
            seen = [message_id for message_id in firsts if message_id not in fresh]
            settlements = await self._stored_replies(conn, seen) if seen else {}
            # Wall-clock time, not the injected clock: the sender's deadline is real.
            now = datetime.now(UTC)
            for message_id in fresh:
                deadline = firsts[message_id].envelope.deadline
                if deadline is not None and deadline < now:
                    settlements[message_id] = writes.took_expired(message_id, deadline)
            todo = runs(
                d for i, d in firsts.items() if i in fresh and i not in settlements
            )
            for run in todo:
                if alone:
                    for delivery in run:
                        settlements[delivery.id] = await self._apply(
                            conn, delivery, writes
                        )
                else:
                    settlements.update(
                        await self._apply_run(
                            conn, run, writes, savepoint=len(todo) > 1
                        )
                    )
            await self._record(conn, writes)
        return settlements, writes

    async def _apply_run(
        self,
        conn: asyncpg.Connection,
        run: Sequence[Delivery],
        writes: _Writes,
        *,
        savepoint: bool,
    ) -> dict[str, Settlement]:
        """Consecutive messages of one type together: through the route's batch
        handler, else through its handler one after the other. If a handler refuses,
        the run is undone (to its savepoint, else with the whole transaction: ``_Redo``)
        and each of its messages goes again in a savepoint of its own, so that only the
        refused one is undone.

        A savepoint costs two round trips to PostgreSQL, as much as a handler's work
        (DESIGN §7): one per run, not one per message, and none for a batch that is
        one run. A refusal costs a second run of the others' handlers; refusals are
        the rare case.
        """
        route = run[0].route
        now = self.lane.clock()
        items = [(d.request, self.lane.context(conn, d.envelope, now)) for d in run]
        try:
            async with conn.transaction() if savepoint else contextlib.nullcontext():
                if route.batches:
                    outcomes = await route.many(items)
                else:
                    outcomes = []
                    for delivery, (request, ctx) in zip(run, items, strict=True):
                        bind(delivery.message, delivery.envelope)
                        outcomes.append(await route.one(request, ctx))
        except Transient:
            raise
        except Failure as exc:
            log.info("batch_refused", reason=str(exc), messages=len(run))
            if not savepoint:
                raise _Redo from exc
            return {d.id: await self._apply(conn, d, writes) for d in run}
        return {
            d.id: writes.took(d.id, outcome)
            for d, outcome in zip(run, outcomes, strict=True)
        }

    async def _apply(
        self, conn: asyncpg.Connection, delivery: Delivery, writes: _Writes
    ) -> Settlement:
        """One message alone, in a savepoint so that a refusal undoes only it."""
        bind(delivery.message, delivery.envelope)
        ctx = self.lane.context(conn, delivery.envelope, self.lane.clock())
        try:
            async with conn.transaction():
                outcome = await delivery.route.one(delivery.request, ctx)
        except Transient:
            raise
        except Failure as exc:
            bind(delivery.message, delivery.envelope)
            writes.refused.append(delivery.id)
            return refusal(exc)
        return writes.took(delivery.id, outcome)

    async def _record(self, conn: asyncpg.Connection, writes: _Writes) -> None:
        """The batch's outbox rows, its stored replies, and the inbox rows of refused
        messages removed (a redelivery is judged afresh): one statement for it all,
        as a round trip to PostgreSQL costs more than the rows (DESIGN §7)."""
        rows = await copy_many(
            conn, self.schema, outbox_rows(writes.events, writes.commands)
        )
        if not (rows[0] or writes.replies or writes.refused):
            return
        schema = self.schema
        # Data-modifying WITH clauses run whether or not they are referenced.
        await conn.execute(
            f"""WITH outbox AS ({insert_rows(schema)}),
                replies AS (
                    UPDATE {schema}.inbox AS i SET reply = r.reply::jsonb
                    FROM unnest($5::text[], $6::text[]) AS r(id, reply)
                    WHERE i.id = r.id)
                DELETE FROM {schema}.inbox WHERE id = ANY($7::text[])""",
            *rows,
            list(writes.replies),
            list(writes.replies.values()),
            writes.refused,
        )

    async def _stored_replies(
        self, conn: asyncpg.Connection, ids: list[str]
    ) -> dict[str, Settlement]:
        """Messages processed before (a redelivery): their replies as first sent."""
        rows = await conn.fetch(
            f"SELECT id, reply::text FROM {self.schema}.inbox "
            "WHERE id = ANY($1::text[])",
            ids,
        )
        log.info("messages_duplicate", ids=ids)
        # A forwarded message has no stored reply: the worker it went to answered.
        found = dict.fromkeys(ids, Settlement())
        for row in rows:
            if row["reply"] is not None:
                found[row["id"]] = Settlement(
                    reply=Reply.model_validate_json(row["reply"])
                )
        return found
