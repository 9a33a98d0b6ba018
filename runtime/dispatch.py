"""The adapter between a queue and a worker's handlers: decode, transaction, call,
outbox and inbox, reply, acknowledge. Handlers never see aio-pika.

Messages whose route writes are handled in batches: what has arrived (at most the
queue's prefetch) runs on one connection in one transaction, each run of consecutive
messages of one type together (in a savepoint when the batch has several runs), with
one statement for the inbox rows, one for the outbox rows and the stored replies, and
one commit; then the replies are published together, so the broker confirms them
together. A round trip to PostgreSQL, a commit and a publisher confirm cost a
fraction of a millisecond to a millisecond each here (DESIGN §7): paying them once per
batch is where the throughput is. A batch starts as soon as the previous one has
committed, with what arrived meanwhile; it never waits for more. Read-only routes run
concurrently, outside any transaction (those with ``many`` take what arrived together
at once); a route that is not ``batched`` runs each message as a batch of its own,
concurrently.

How each outcome is settled (one table, house rule 24):

=========================================  =============================================
a sender not allowed to send its type       reply ``forbidden`` if asked; dead-letter;
(``contracts.senders``, DESIGN §2a)         one audit line (sender, type, id)
malformed body, unknown type, bad data      reply ``invalid`` if asked; dead-letter
handler raises a Failure (not Transient)    its run is undone (to its savepoint, or
                                            the whole transaction) and its messages go
                                            again, each in a savepoint; reply with its
                                            code; ack (the rest of the batch commits)
a transient failure (``runtime.faults``:    the whole batch is rolled back and run
Transient, broker, DB or engine away,       again after a capped, jittered backoff,
deadlock)                                   unsettled meanwhile, for as long as the
                                            failure lasts: it never uses the queue's
                                            delivery limit (5), which is for bugs.
                                            Messages whose channel closed meanwhile
                                            are dropped from the retry: the broker
                                            delivers them again
a bug (any other exception)                 the batch is rolled back and each of its
                                            messages is run again alone; the one that
                                            fails alone gets ``unavailable`` and is
                                            dead-lettered
success                                     commit, wake the relay, reply; ack
success with ``forward``                    publish it keeping reply_to; ack
success of a read-only route with events    publish them (confirmed), reply; ack; if
                                            they fail, nack with requeue
an id already processed (redelivered, or    re-send the stored reply; ack
twice in one batch)
past its ``deadline`` (a command whose      not applied: reply ``unavailable`` (the
sender has stopped waiting)                 sender is gone); ack
=========================================  =============================================

A batch whose messages are all acked is acknowledged with one ack of its last delivery
tag (``multiple``) once the batch before it is settled, provided nothing else below that
tag is outstanding on the channel, which only this dispatcher consumes (``Bus.consume``
opens a channel per queue); otherwise each message is settled on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from aiormq.abc import AbstractChannel
from pydantic import BaseModel, ValidationError

from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode, Reply
from runtime.bus import Bus, BusUnavailable
from runtime.errors import Failure, Transient
from runtime.faults import Backoff, is_transient
from runtime.outbox import OutboxRelay, copy_many, insert_rows, outbox_rows

__all__ = [
    "ContextFactory",
    "Dispatcher",
    "Handler",
    "ManyHandler",
    "Outcome",
    "Route",
    "first_error",
]

log = structlog.get_logger("dispatch")

# Settling on a channel that closed meanwhile: the broker redelivers the message.
_CHANNEL_GONE = (AMQPError, ChannelInvalidStateError, ConnectionError)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler did: the reply's result and the events it caused.

    ``forward`` hands the request on to another worker, which answers the original
    requester (reply_to and correlation id are kept): one hop fewer than relaying.
    """

    result: BaseModel | None = None
    events: Sequence[CloudEvent] = field(default_factory=tuple)
    forward: CloudEvent | None = None
    # Fire-and-forget commands (no reply expected), sent through the outbox with the events.
    commands: Sequence[CloudEvent] = field(default_factory=tuple)


Handler = Callable[[Any, Any], Awaitable[Outcome]]
# Every (request, context) of one route in a batch, in arrival order; an outcome each.
ManyHandler = Callable[[Sequence[tuple[Any, Any]]], Awaitable[Sequence[Outcome]]]
ContextFactory = Callable[[asyncpg.Connection, CloudEvent, datetime], Any]


@dataclass(frozen=True, slots=True)
class Route:
    """A message type's contract model and the handler that takes it.

    ``writes=False`` marks a handler that changes nothing (queries, authorization,
    an event made from an event): it runs without a transaction or an inbox row,
    since repeating it is harmless. Its events are published before its message is
    acked, not through the outbox: their ids must come from what the handler read,
    so that a redelivery publishes the same ids again.

    ``batched=False`` runs each message in a transaction of its own, side by side with
    the others (up to the queue's prefetch): for a message that is itself a large
    set-based unit of work, like a sweep shard, where a shared transaction would run
    the units one after the other on one core.

    ``many`` takes a run of consecutive messages of this type at once, in one savepoint,
    so that it reads and writes with one statement per batch where ``handler`` would
    use one per message (events that arrive by the thousand, like a sweep's). If it
    refuses (a ``Failure``), each message goes through ``handler`` alone. A read-only
    route's ``many`` takes what arrived together (authorizations read with one query).
    """

    model: type[BaseModel]
    handler: Handler
    writes: bool = True
    batched: bool = True
    many: ManyHandler | None = None


def first_error(exc: ValidationError) -> str:
    """One line from a pydantic error: the field path and what is wrong with it."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "message"
    return f"{where}: {err['msg']}"


def _runs(deliveries: Iterable[_Delivery]) -> list[list[_Delivery]]:
    """Consecutive deliveries of one message type, in arrival order."""
    runs: list[list[_Delivery]] = []
    for delivery in deliveries:
        if runs and runs[-1][0].envelope.type == delivery.envelope.type:
            runs[-1].append(delivery)
        else:
            runs.append([delivery])
    return runs


def _one_each(run: Sequence[_Delivery], outcomes: Sequence[Outcome]) -> list[Outcome]:
    """A ``many`` handler's outcomes, one per message, or the bug it is raised."""
    if len(outcomes) != len(run):
        raise RuntimeError(f"{len(outcomes)} outcomes for {len(run)} messages")
    return list(outcomes)


def _channel(message: AbstractIncomingMessage) -> AbstractChannel | None:
    """The channel a message came on, or None once it has closed (aio-pika raises
    then): its unsettled messages are the broker's to deliver again."""
    try:
        channel = message.channel
    except _CHANNEL_GONE:
        return None
    return None if channel.is_closed else channel


def _now() -> datetime:
    return datetime.now(UTC)


class _Redo(Exception):  # noqa: N818 - not an error: a signal to run the batch again
    """A handler of a batch run without savepoints refused: roll back, run again."""


class _Verdict(enum.Enum):
    ACK = "ack"
    REQUEUE = "requeue"  # nack with requeue: the broker delivers it again
    DEAD_LETTER = "dead-letter"  # reject without requeue: to ``<queue>.dead``


@dataclass(frozen=True, slots=True)
class _Delivery:
    """A decoded message waiting for its batch."""

    message: AbstractIncomingMessage
    envelope: CloudEvent
    route: Route
    request: BaseModel


@dataclass(frozen=True, slots=True)
class _Settlement:
    """What happens to a message once its batch has committed (or failed)."""

    reply: Reply | None = None
    forward: CloudEvent | None = None
    verdict: _Verdict = _Verdict.ACK
    # A read-only route's events and commands: published before the ack (no outbox).
    publish: tuple[tuple[str, CloudEvent], ...] = ()


_REQUEUE = _Settlement(verdict=_Verdict.REQUEUE)


@dataclass(slots=True)
class _Writes:
    """What a batch's handlers left to write once they have all run."""

    events: list[CloudEvent] = field(default_factory=list)
    commands: list[CloudEvent] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)  # message id: reply JSON
    refused: list[str] = field(default_factory=list)

    def took(self, message_id: str, outcome: Outcome) -> _Settlement:
        """Keep what a handler's outcome leaves to write; how to settle its message."""
        self.events += outcome.events
        self.commands += outcome.commands
        settlement = _handled(outcome)
        if settlement.reply is not None:
            self.replies[message_id] = settlement.reply.model_dump_json()
        return settlement

    def took_expired(self, message_id: str, deadline: datetime) -> _Settlement:
        """A command whose sender stopped waiting at ``deadline``: not applied, and a
        redelivery is answered the same (the reply is stored with the inbox row)."""
        log.info("message_expired", deadline=deadline.isoformat())
        reply = Reply.failure(
            ErrorCode.UNAVAILABLE,
            f"not applied: its deadline ({deadline.isoformat()}) had passed when a "
            "worker took it",
        )
        self.replies[message_id] = reply.model_dump_json()
        return _Settlement(reply=reply)


def _bind(message: AbstractIncomingMessage, envelope: CloudEvent | None) -> None:
    """Log context of one message (house rule 27)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        message_id=message.message_id, correlation_id=message.correlation_id
    )
    if message.user_id:
        # The broker-verified identity of the publisher (AMQP 0-9-1 user-id,
        # which RabbitMQ checks against the connection's user): the audit's sender.
        structlog.contextvars.bind_contextvars(sender=message.user_id)
    if envelope is not None:
        structlog.contextvars.bind_contextvars(
            message_type=envelope.type, subject=envelope.subject, source=envelope.source
        )


def _poison(envelope: CloudEvent) -> _Settlement:
    return _Settlement(
        reply=Reply.failure(
            ErrorCode.UNAVAILABLE,
            f"internal error; message {envelope.id} was dead-lettered",
        ),
        verdict=_Verdict.DEAD_LETTER,
    )


def _refusal(exc: Failure) -> _Settlement:
    log.info("request_refused", code=str(exc.code), reason=str(exc))
    return _Settlement(reply=Reply.failure(exc.code, str(exc)))


def _handled(outcome: Outcome) -> _Settlement:
    if outcome.forward is not None:
        return _Settlement(forward=outcome.forward)
    return _Settlement(reply=Reply.success(outcome.result))


def _outcome(settlement: _Settlement) -> str:
    """A settlement in one word, for ``lamassu_messages_total``."""
    if settlement.verdict is _Verdict.REQUEUE:
        return "requeued"
    if settlement.verdict is _Verdict.DEAD_LETTER:
        return "dead_lettered"
    if settlement.forward is not None:
        return "forwarded"
    if settlement.reply is not None and not settlement.reply.ok:
        return "refused"
    return "ok"


def _read_out(outcome: Outcome) -> _Settlement:
    """A read-only route's outcome: its events and commands go out with the answer."""
    settlement = _handled(outcome)
    publish = tuple(("events", e) for e in outcome.events) + tuple(
        ("commands", c) for c in outcome.commands
    )
    return replace(settlement, publish=publish) if publish else settlement


class Dispatcher:
    """Consumes one queue for one worker schema: read-only messages one by one and
    concurrently, the others in batches, one batch transaction at a time."""

    def __init__(
        self,
        *,
        routes: Mapping[str, Route],
        pool: asyncpg.Pool,
        schema: str,
        bus: Bus,
        relay: OutboxRelay | None,
        context: ContextFactory,
        clock: Callable[[], datetime] = _now,
        transient: tuple[type[BaseException], ...] = (),
        backoff: Backoff | None = None,
        observe: Callable[[str, str], None] | None = None,
    ) -> None:
        self._routes = routes
        # Told (message type, outcome) of each settled message: the metrics hook.
        self._observe = observe or (lambda _type, _outcome: None)
        self._pool = pool
        self._schema = schema
        self._bus = bus
        self._relay = relay
        self._context = context
        self._clock = clock
        self._transient = transient
        self._backoff = backoff or Backoff(initial=0.2, cap=30.0)
        self._closing = False
        self._arrived: list[_Delivery] = []
        self._batches: asyncio.Task[None] | None = None
        # Read-only messages of ``many`` routes waiting to be read together.
        self._to_read: list[_Delivery] = []
        self._reads: asyncio.Task[None] | None = None
        # Settlements in flight; held so that they are not garbage-collected midway.
        self._settling: set[asyncio.Task[None]] = set()
        # The last batch's settlement: the next batch acknowledges after it.
        self._last_settlement: asyncio.Task[None] | None = None
        # Delivery tags handed over and not yet settled, per consumer channel: what a
        # batch may acknowledge with one ``multiple`` ack (AMQP 0-9-1 §1.8.3.13 acks
        # every tag up to and including it).
        self._outstanding: dict[AbstractChannel, set[int]] = {}

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        _bind(message, None)
        self._hand_over(message)
        try:
            envelope = CloudEvent.model_validate_json(message.body)
        except ValidationError as exc:
            await self._dead_letter(
                message, f"not a CloudEvents 1.0 JSON message: {first_error(exc)}"
            )
            return
        _bind(message, envelope)
        route = await self._route(message, envelope)
        if route is None:
            return
        try:
            request = route.model.model_validate(envelope.data)
        except ValidationError as exc:
            await self._dead_letter(
                message, f"invalid {envelope.type}: {first_error(exc)}"
            )
            return
        delivery = _Delivery(message, envelope, route, request)
        if not route.writes:
            if route.many is None:
                await self._settle_run([(delivery, await self._read(delivery))])
                return
            self._to_read.append(delivery)
            if self._reads is None:
                self._reads = asyncio.create_task(self._run_reads())
            return
        if not route.batched:
            alone = asyncio.create_task(self._run_batch([delivery], in_order=False))
            self._settling.add(alone)  # drain() waits for it too
            alone.add_done_callback(self._settling.discard)
            await alone
            return
        self._arrived.append(delivery)
        if self._batches is None:
            self._batches = asyncio.create_task(self._run_batches())

    def close(self) -> None:
        """Stop retrying: messages waiting out a transient failure are left to the
        broker, which delivers them again once this consumer is gone."""
        self._closing = True

    async def drain(self) -> None:
        """Wait until every message handed over so far is settled (tests, shutdown)."""
        while self._batches is not None or self._reads is not None or self._settling:
            await asyncio.gather(
                *(task for task in (self._batches, self._reads) if task is not None)
            )
            await asyncio.gather(*self._settling)

    # --- read-only routes ----------------------------------------------------------

    async def _read(self, delivery: _Delivery) -> _Settlement | None:
        """One read-only message; None when it is left to the broker to redeliver."""
        attempt = 0
        while True:
            _bind(delivery.message, delivery.envelope)
            try:
                async with self._pool.acquire() as conn:
                    ctx = self._context(conn, delivery.envelope, self._clock())
                    outcome = await delivery.route.handler(delivery.request, ctx)
            except Exception as exc:
                if is_transient(exc, self._transient):
                    attempt += 1
                    if not await self._pause(exc, [delivery], attempt):
                        return None
                    continue
                if isinstance(exc, Failure):
                    return _refusal(exc)
                log.exception("handler_crashed")
                return _poison(delivery.envelope)
            return _read_out(outcome)

    async def _run_reads(self) -> None:
        """Read-only messages of ``many`` routes: what arrived together, at once."""
        try:
            await asyncio.sleep(0)  # one turn of the loop, as for batches
            while self._to_read:
                arrived, self._to_read = self._to_read, []
                for run in _runs(arrived):
                    answered = await self._read_run(run)
                    task = asyncio.create_task(self._settle_run(answered))
                    self._settling.add(task)
                    task.add_done_callback(self._settling.discard)
        finally:
            self._reads = None

    async def _read_run(
        self, run: Sequence[_Delivery]
    ) -> list[tuple[_Delivery, _Settlement | None]]:
        """One type's read-only messages through its ``many`` handler on one
        connection; one by one if it refuses or fails, so that each gets its answer."""
        many = run[0].route.many
        if many is None:  # pragma: no cover - only such routes are queued to read
            raise TypeError(f"route {run[0].envelope.type} reads one by one")
        attempt = 0
        while True:
            try:
                async with self._pool.acquire() as conn:
                    now = self._clock()
                    outcomes = _one_each(
                        run,
                        await many(
                            [
                                (d.request, self._context(conn, d.envelope, now))
                                for d in run
                            ]
                        ),
                    )
            except Exception as exc:  # noqa: BLE001 - judged by the settlement table
                if is_transient(exc, self._transient):
                    attempt += 1
                    run = await self._pause(exc, run, attempt)
                    if not run:
                        return []
                    continue
                if isinstance(exc, Failure) and len(run) > 1:
                    log.info("batch_refused", reason=str(exc), messages=len(run))
                return [(d, await self._read(d)) for d in run]
            return [
                (d, _read_out(outcome))
                for d, outcome in zip(run, outcomes, strict=True)
            ]

    async def _settle_run(
        self, answered: Sequence[tuple[_Delivery, _Settlement | None]]
    ) -> None:
        """Answer read-only messages; the events they caused are published first, all
        in one batch, and a message is acked only once its events are confirmed.
        A message without a settlement is left to the broker to deliver again."""
        kept = [(d, s) for d, s in answered if s is not None]
        settlements = await self._published([s for _, s in kept])
        await asyncio.gather(
            *(self._settle(d, s) for (d, _), s in zip(kept, settlements, strict=True))
        )

    async def _pause(
        self, exc: BaseException, deliveries: Sequence[_Delivery], attempt: int
    ) -> list[_Delivery]:
        """After a transient failure, wait (backoff) before the next try; the
        deliveries still worth it: none when stopping, and none whose channel closed
        meanwhile (the broker delivers those again, to whoever consumes then)."""
        delay = self._backoff.delay(attempt)
        log.warning(
            "batch_retrying",
            error=f"{type(exc).__name__}: {exc}",
            messages=len(deliveries),
            attempt=attempt,
            retry_in=round(delay, 2),
        )
        await asyncio.sleep(delay)
        if self._closing:
            return []
        return [d for d in deliveries if _channel(d.message) is not None]

    async def _published(
        self, settlements: Sequence[_Settlement]
    ) -> Sequence[_Settlement]:
        """Publish the settlements' events and commands; if that fails, the messages
        that caused them are requeued. Their redelivery publishes them again under
        the same ids (handlers of read-only routes make their ids from what they
        read), which consumers absorb by deduplicating on the id."""
        messages = [m for s in settlements for m in s.publish]
        if not messages:
            return settlements
        topology = self._bus.topology
        try:
            await self._bus.publish_batch(
                [
                    (
                        topology.exchange(kind),
                        m.type,
                        m.id,
                        m.model_dump_json().encode(),
                    )
                    for kind, m in messages
                ]
            )
        except (*_CHANNEL_GONE, BusUnavailable, OSError) as exc:
            log.warning("events_unpublished", error=f"{type(exc).__name__}: {exc}")
            return [_REQUEUE if s.publish else s for s in settlements]
        return settlements

    # --- batches of writing routes -------------------------------------------------

    async def _run_batches(self) -> None:
        """Take what has arrived, batch after batch, until nothing waits."""
        try:
            # One turn of the loop, no more: deliveries already read join this batch.
            await asyncio.sleep(0)
            while self._arrived:
                batch, self._arrived = self._arrived, []
                await self._run_batch(batch)
        finally:
            self._batches = None

    async def _run_batch(
        self, batch: Sequence[_Delivery], *, in_order: bool = True
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
                if is_transient(exc, self._transient):
                    attempt += 1
                    batch = await self._pause(exc, batch, attempt)
                    if not batch:
                        return
                    continue
                if len(batch) > 1:
                    # Find the poison message: alone, every other message commits.
                    for delivery in batch:
                        await self._run_batch([delivery])
                    return
                log.exception("handler_crashed")
                settlements = {batch[0].envelope.id: _poison(batch[0].envelope)}
                break
        task = asyncio.create_task(
            self._settle_batch(
                batch, settlements, self._last_settlement if in_order else None
            )
        )
        if in_order:
            self._last_settlement = task
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _transact(self, batch: Sequence[_Delivery]) -> dict[str, _Settlement]:
        """Run a batch in one transaction; each message id's settlement once committed.

        A batch of one run (the usual case: a busy queue of one message type) runs
        without a savepoint. If one of its handlers refuses, the transaction is rolled
        back and the batch runs again, each message in a savepoint of its own.

        Raises what ``_run_batch`` maps: a transient error or a bug, after rollback.
        """
        firsts: dict[str, _Delivery] = {}
        for delivery in batch:
            firsts.setdefault(delivery.envelope.id, delivery)
        async with self._pool.acquire() as conn:
            try:
                settlements, writes = await self._attempt(conn, firsts, alone=False)
            except _Redo:
                settlements, writes = await self._attempt(conn, firsts, alone=True)
        if (writes.events or writes.commands) and self._relay is not None:
            self._relay.wake()
        return settlements

    async def _attempt(
        self, conn: asyncpg.Connection, firsts: Mapping[str, _Delivery], *, alone: bool
    ) -> tuple[dict[str, _Settlement], _Writes]:
        """The batch in one transaction: ``alone``, each message in its own savepoint."""
        writes = _Writes()
        async with conn.transaction():
            # The inbox rows are claimed first: a twin in another transaction waits on
            # its row until this one commits, then finds it processed.
            fresh = {
                row["id"]
                for row in await conn.fetch(
                    f"INSERT INTO {self._schema}.inbox (id) "
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
            runs = _runs(
                d for i, d in firsts.items() if i in fresh and i not in settlements
            )
            for run in runs:
                if alone:
                    for delivery in run:
                        settlements[delivery.envelope.id] = await self._apply(
                            conn, delivery, writes
                        )
                else:
                    settlements.update(
                        await self._apply_run(
                            conn, run, writes, savepoint=len(runs) > 1
                        )
                    )
            await self._record(conn, writes)
        return settlements, writes

    async def _apply_run(
        self,
        conn: asyncpg.Connection,
        run: Sequence[_Delivery],
        writes: _Writes,
        *,
        savepoint: bool,
    ) -> dict[str, _Settlement]:
        """Consecutive messages of one type together: through the route's ``many``
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
        now = self._clock()
        items = [(d.request, self._context(conn, d.envelope, now)) for d in run]
        try:
            async with conn.transaction() if savepoint else contextlib.nullcontext():
                if route.many is not None:
                    outcomes = _one_each(run, await route.many(items))
                else:
                    outcomes = []
                    for delivery, (request, ctx) in zip(run, items, strict=True):
                        _bind(delivery.message, delivery.envelope)
                        outcomes.append(await route.handler(request, ctx))
        except Transient:
            raise
        except Failure as exc:
            log.info("batch_refused", reason=str(exc), messages=len(run))
            if not savepoint:
                raise _Redo from exc
            return {d.envelope.id: await self._apply(conn, d, writes) for d in run}
        return {
            d.envelope.id: writes.took(d.envelope.id, outcome)
            for d, outcome in zip(run, outcomes, strict=True)
        }

    async def _apply(
        self, conn: asyncpg.Connection, delivery: _Delivery, writes: _Writes
    ) -> _Settlement:
        """One message alone, in a savepoint so that a refusal undoes only it."""
        _bind(delivery.message, delivery.envelope)
        ctx = self._context(conn, delivery.envelope, self._clock())
        try:
            async with conn.transaction():
                outcome = await delivery.route.handler(delivery.request, ctx)
        except Transient:
            raise
        except Failure as exc:
            return self._refused(delivery, exc, writes)
        return writes.took(delivery.envelope.id, outcome)

    @staticmethod
    def _refused(delivery: _Delivery, exc: Failure, writes: _Writes) -> _Settlement:
        _bind(delivery.message, delivery.envelope)
        writes.refused.append(delivery.envelope.id)
        return _refusal(exc)

    async def _record(self, conn: asyncpg.Connection, writes: _Writes) -> None:
        """The batch's outbox rows, its stored replies, and the inbox rows of refused
        messages removed (a redelivery is judged afresh): one statement for it all,
        as a round trip to PostgreSQL costs more than the rows (DESIGN §7)."""
        rows = await copy_many(
            conn, self._schema, outbox_rows(writes.events, writes.commands)
        )
        if not (rows[0] or writes.replies or writes.refused):
            return
        schema = self._schema
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
    ) -> dict[str, _Settlement]:
        """Messages processed before (a redelivery): their replies as first sent."""
        rows = await conn.fetch(
            f"SELECT id, reply::text FROM {self._schema}.inbox "
            "WHERE id = ANY($1::text[])",
            ids,
        )
        log.info("messages_duplicate", ids=ids)
        # A forwarded message has no stored reply: the worker it went to answered.
        found = dict.fromkeys(ids, _Settlement())
        for row in rows:
            if row["reply"] is not None:
                found[row["id"]] = _Settlement(
                    reply=Reply.model_validate_json(row["reply"])
                )
        return found

    # --- settling ------------------------------------------------------------------

    async def _settle_batch(
        self,
        batch: Sequence[_Delivery],
        settlements: Mapping[str, _Settlement],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Answer each message, then acknowledge the batch with one ack when it can."""
        # Published concurrently on one confirming channel, so confirms come together.
        answered = await asyncio.gather(
            *(self._respond(d, settlements[d.envelope.id]) for d in batch)
        )
        if previous is not None:
            # In batch order: the previous batch's tags are then no longer outstanding.
            await asyncio.wait([previous])
        verdicts = [settlements[d.envelope.id].verdict for d in batch]
        if all(answered) and all(v is _Verdict.ACK for v in verdicts):
            last = self._last_of_only_outstanding(batch)
            if last is not None:
                await self._conclude(last, _Verdict.ACK, multiple=True)
                self._settled(d.message for d in batch)
                return
        await asyncio.gather(
            *(
                self._conclude(d.message, verdict)
                for d, verdict, ok in zip(batch, verdicts, answered, strict=True)
                if ok
            )
        )

    def _last_of_only_outstanding(
        self, batch: Sequence[_Delivery]
    ) -> AbstractIncomingMessage | None:
        """The batch's last message when acking up to it acks the batch and nothing
        else: one channel, and no other tag outstanding below its last one."""
        channel = _channel(batch[0].message)
        tags = {d.message.delivery_tag for d in batch}
        if (
            channel is None
            or None in tags
            or any(_channel(d.message) is not channel for d in batch)
        ):
            return None
        last = max(batch, key=lambda d: d.message.delivery_tag or 0).message
        assert last.delivery_tag is not None  # noqa: S101 - None is excluded above
        others = self._outstanding.get(channel, set()) - tags
        if any(tag < last.delivery_tag for tag in others):
            return None
        return last

    async def _settle(self, delivery: _Delivery, settlement: _Settlement) -> None:
        if await self._respond(delivery, settlement):
            await self._conclude(delivery.message, settlement.verdict)

    async def _respond(self, delivery: _Delivery, settlement: _Settlement) -> bool:
        """Send the reply or the forward; False when the channel went meanwhile."""
        message = delivery.message
        _bind(message, delivery.envelope)
        self._observe(delivery.envelope.type, _outcome(settlement))
        try:
            if settlement.forward is not None:
                await self._forward(message, settlement.forward)
            elif settlement.reply is not None:
                await self._answer(message, settlement.reply)
                if settlement.reply.ok:
                    log.info("message_handled")
        except _CHANNEL_GONE as exc:
            # Unacknowledged: the broker delivers it again, and the inbox answers it.
            log.warning("message_unsettled", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def _conclude(
        self,
        message: AbstractIncomingMessage,
        verdict: _Verdict,
        *,
        multiple: bool = False,
    ) -> None:
        try:
            if verdict is _Verdict.ACK:
                await message.ack(multiple=multiple)
            elif verdict is _Verdict.REQUEUE:
                await message.nack(requeue=True)
            else:
                await message.reject(requeue=False)
        except _CHANNEL_GONE as exc:
            # Unacknowledged: the broker delivers it again, and the inbox answers it.
            log.warning("message_unsettled", error=f"{type(exc).__name__}: {exc}")
        finally:
            if not multiple:
                self._settled([message])

    def _hand_over(self, message: AbstractIncomingMessage) -> None:
        if message.delivery_tag is None:
            return  # consumed without acknowledgements: nothing to settle
        channel = _channel(message)
        if channel is None:
            return  # closed already: the broker delivers it again
        if channel not in self._outstanding:
            # A new channel (a reconnection): what was outstanding on closed ones
            # the broker delivers again, on this one.
            for gone in [c for c in self._outstanding if c.is_closed]:
                del self._outstanding[gone]
        self._outstanding.setdefault(channel, set()).add(message.delivery_tag)

    def _settled(self, messages: Iterable[AbstractIncomingMessage]) -> None:
        for message in messages:
            channel = _channel(message)
            outstanding = None if channel is None else self._outstanding.get(channel)
            if outstanding is not None and message.delivery_tag is not None:
                outstanding.discard(message.delivery_tag)

    async def _forward(
        self, message: AbstractIncomingMessage, forward: CloudEvent
    ) -> None:
        forward = forward.model_copy(update={"correlationid": message.correlation_id})
        try:
            await self._bus.publish(
                self._bus.topology.commands,
                forward,
                reply_to=message.reply_to,
                mandatory=True,
            )
        except BusUnavailable as exc:
            log.warning("forward_failed", to=forward.type, error=str(exc))
            await self._answer(message, Reply.failure(ErrorCode.UNAVAILABLE, str(exc)))
        else:
            log.info("message_forwarded", to=forward.type)

    async def _route(
        self, message: AbstractIncomingMessage, envelope: CloudEvent
    ) -> Route | None:
        """The message's route, or None once it is refused and dead-lettered."""
        refusal = self._bus.sender_refusal(message, envelope.type)
        if refusal is not None:
            # Before anything else: an unauthorized message is not even validated.
            log.warning(
                "sender_refused",
                sender=message.user_id,
                type=envelope.type,
                id=envelope.id,
                reason=refusal,
            )
            await self._dead_letter(message, refusal, ErrorCode.FORBIDDEN)
            return None
        route = self._routes.get(envelope.type)
        if route is None:
            await self._dead_letter(message, f"unknown message type {envelope.type!r}")
        return route

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        reason: str,
        code: ErrorCode = ErrorCode.INVALID,
    ) -> None:
        if code is ErrorCode.INVALID:  # a refused sender has its audit line already
            log.warning("message_dead_lettered", reason=reason)
        self._observe(message.type or "unknown", "dead_lettered")
        await self._answer(message, Reply.failure(code, reason))
        await self._conclude(message, _Verdict.DEAD_LETTER)

    async def _answer(self, message: AbstractIncomingMessage, reply: Reply) -> None:
        if message.reply_to:
            await self._bus.reply(message.reply_to, message.correlation_id, reply)
