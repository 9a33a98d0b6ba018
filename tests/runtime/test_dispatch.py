"""The batched dispatcher on real RabbitMQ and PostgreSQL: each message of a batch is
settled on its own (reply, ack, dead-letter), while the batch commits once.

Messages are fetched with basic.get and handed to the dispatcher one after the other
without yielding, so they form one batch deterministically.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from contracts.envelope import CloudEvent, new_message
from contracts.errors import ErrorCode, Reply
from contracts.message import Message
from contracts.names import Topology
from runtime.bus import Bus
from runtime.db import migrate
from runtime.dispatch import Dispatcher
from runtime.errors import Conflict, Transient
from runtime.faults import Backoff
from runtime.routes import Batch, Events, Mode, Outcome, Route
from tests.conftest import AMQP_URL, Backends

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

NOTE = "test.note"


class Note(Message):
    TYPE: ClassVar[str] = NOTE
    text: str


class Noted(Note):
    TYPE: ClassVar[str] = "test.noted"


@dataclass(frozen=True)
class Context:
    conn: asyncpg.Connection
    envelope: CloudEvent
    now: datetime


@dataclass
class Notes:
    """The handler under test: stores a note and emits an event, or refuses, or fails."""

    schema: str
    # Texts that fail transiently, and how many more times each will.
    flaky: dict[str, int] = field(default_factory=dict)
    transactions: list[int] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # sizes ``many`` was called with
    read_only: bool = False  # reads the note back instead of storing it

    async def __call__(self, note: Note, ctx: Context) -> Outcome:
        self.transactions.append(await ctx.conn.fetchval("SELECT txid_current()"))
        if self.read_only:
            await ctx.conn.fetchval("SELECT $1::text", note.text)
        else:
            await ctx.conn.execute(
                f"INSERT INTO {self.schema}.notes (text) VALUES ($1)", note.text
            )
        if note.text.startswith("refuse"):
            raise Conflict(f"{note.text} is refused")
        if note.text.startswith("crash"):
            raise RuntimeError("a bug")
        if self.flaky.get(note.text, 0) > 0:
            self.flaky[note.text] -= 1
            raise Transient("the dependency is down")
        event = new_message(
            source="test", data=Noted.of(note), now=ctx.now, subject=note.text
        )
        return Outcome(result=note, events=[event])

    async def many(self, batch: Batch[Note, Context]) -> list[Outcome]:
        """The same, one statement for the batch; refuses all if one is refused."""
        items = batch.items
        self.batches.append(len(items))
        conn = batch.ctx.conn
        texts = [note.text for note, _ in items]
        if self.read_only:
            await conn.fetch("SELECT unnest($1::text[])", texts)
        else:
            await conn.execute(
                f"INSERT INTO {self.schema}.notes (text) SELECT unnest($1::text[])",
                texts,
            )
        if any(note.text.startswith("refuse") for note, _ in items):
            raise Conflict("a note of the batch is refused")
        return [
            Outcome(
                result=note,
                events=[new_message(source="test", data=Noted.of(note), now=ctx.now)],
            )
            for note, ctx in items
        ]


@dataclass
class Harness:
    """A queue, its dispatcher, a reply queue, and the database rows to look at."""

    bus: Bus
    channel: aio_pika.abc.AbstractChannel
    queue: str
    dispatcher: Dispatcher
    pool: asyncpg.Pool
    schema: str
    handler: Notes
    replies: dict[str, asyncio.Future[Reply]] = field(default_factory=dict)
    reply_to: str = ""

    async def publish(self, envelopes: Sequence[CloudEvent]) -> None:
        for envelope in envelopes:
            self.replies.setdefault(
                envelope.correlationid or envelope.id,
                asyncio.get_running_loop().create_future(),
            )
            await self.bus.publish(
                self.bus.topology.commands, envelope, reply_to=self.reply_to
            )

    async def deliver(self, count: int) -> list[AbstractIncomingMessage]:
        """Hand ``count`` queued messages to the dispatcher as one batch."""
        queue = await self.channel.get_queue(self.queue)
        messages = []
        for _ in range(count):
            message = await queue.get(no_ack=False, timeout=5)
            assert message is not None
            messages.append(message)
        for message in messages:
            await self.dispatcher(message)  # never yields for a writing route
        return messages

    async def reply(self, envelope: CloudEvent) -> Reply:
        async with asyncio.timeout(10):
            return await asyncio.shield(self.replies[envelope.correlationid or ""])

    async def rows(self, sql: str) -> list[str]:
        async with self.pool.acquire() as conn:
            return [r[0] for r in await conn.fetch(sql.format(schema=self.schema))]

    async def first_dead(self) -> str:
        """The id of the first message the broker dead-lettered from this queue."""
        queue = await self.channel.get_queue(f"{self.queue}.dead")
        arrived: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_dead(message: AbstractIncomingMessage) -> None:
            if not arrived.done():
                arrived.set_result(message.message_id or "")

        tag = await queue.consume(on_dead, no_ack=True)
        try:
            async with asyncio.timeout(10):
                return await arrived
        finally:
            await queue.cancel(tag)


def note(text: str, *, message_id: str | None = None) -> CloudEvent:
    envelope = new_message(
        source="test",
        data=Note(text=text),
        now=datetime.now(UTC),
        correlation_id=str(uuid.uuid4()),
    )
    if message_id is not None:
        envelope = envelope.model_copy(update={"id": message_id})
    return envelope


@pytest.fixture
async def harness(
    backends: Backends, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """The dispatcher on a fresh queue; ``indirect`` "many" gives its route ``many``,
    "alone" makes it not ``batched``, "read-many" makes it read-only with ``many``."""
    schema = f"dispatch_{uuid.uuid4().hex[:8]}"
    pool = await backends.pool()
    await migrate(pool, schema, [])
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {schema}.notes (text text NOT NULL)")
    bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    purpose = f"dispatch{uuid.uuid4().hex[:6]}"
    queue = await bus.declare_worker_queue(
        "test", purpose, [(bus.topology.commands, NOTE)]
    )
    variant = getattr(request, "param", None)
    handler = Notes(schema, read_only=variant == "read-many")
    route: Route[Note, Context] = {
        None: Route(Note, handler),
        "many": Route(Note, handler, handler.many),
        "alone": Route(Note, handler, mode=Mode.ALONE),
        "read-many": Route(
            Note, handler, handler.many, mode=Mode.READ, events=Events.DIRECT
        ),
    }[variant]
    dispatcher = Dispatcher(
        routes={NOTE: route},
        pool=pool,
        schema=schema,
        bus=bus,
        relay=None,
        context=Context,
        backoff=Backoff(initial=0.01, cap=0.05),
    )
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    found = Harness(bus, channel, queue, dispatcher, pool, schema, handler)
    replies = await channel.declare_queue(exclusive=True, auto_delete=True)

    async def on_reply(message: AbstractIncomingMessage) -> None:
        future = found.replies.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(Reply.model_validate_json(message.body))

    await replies.consume(on_reply, no_ack=True)
    found.reply_to = replies.name
    try:
        yield found
    finally:
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        await connection.close()
        await bus.close()
        async with pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


async def settled(harness: Harness, envelopes: Sequence[CloudEvent]) -> list[Reply]:
    return [await harness.reply(e) for e in envelopes]


async def test_refusal_undoes_only_its_own_message(harness: Harness) -> None:
    """One transaction for the batch; the refused message's savepoint is rolled back."""
    batch = [note("first"), note("refuse-me"), note("third")]
    await harness.publish(batch)
    await harness.deliver(len(batch))
    first, refused, third = await settled(harness, batch)
    assert (first.ok, third.ok) == (True, True)
    assert Note(text="first") == Note.model_validate(first.result)
    assert refused.error is not None
    assert ErrorCode.CONFLICT == refused.error.code
    # The batch ran without savepoints up to the refusal, was rolled back, and ran
    # again in one transaction with a savepoint per message.
    first_try, second_try = (
        harness.handler.transactions[:2],
        harness.handler.transactions[2:],
    )
    assert (1, 3, 1) == (len(set(first_try)), len(second_try), len(set(second_try)))
    assert first_try[0] != second_try[0]
    assert ["first", "third"] == await harness.rows(
        "SELECT text FROM {schema}.notes ORDER BY text"
    )
    assert ["first", "third"] == await harness.rows(
        "SELECT convert_from(body, 'utf8')::json->'data'->>'text' "
        "FROM {schema}.outbox ORDER BY seq"
    )
    # A refusal leaves no inbox row: its redelivery would be judged afresh.
    assert sorted([batch[0].id, batch[2].id]) == sorted(
        await harness.rows("SELECT id FROM {schema}.inbox")
    )


async def test_poison_message_alone_is_dead_lettered(harness: Harness) -> None:
    """A bug rolls the batch back; run alone, the others commit and only it is dead-lettered."""
    batch = [note("before"), note("crash-me"), note("after")]
    await harness.publish(batch)
    await harness.deliver(len(batch))
    before, crashed, after = await settled(harness, batch)
    assert (before.ok, after.ok) == (True, True)
    assert crashed.error is not None
    assert ErrorCode.UNAVAILABLE == crashed.error.code
    assert ["after", "before"] == await harness.rows(
        "SELECT text FROM {schema}.notes ORDER BY text"
    )
    assert batch[1].id == await harness.first_dead()


async def test_duplicates_in_one_batch_are_handled_once(harness: Harness) -> None:
    """The same message id twice in a batch: one row, one event, the same reply twice."""
    original = note("twice")
    twin = original.model_copy(update={"correlationid": str(uuid.uuid4())})
    await harness.publish([original, twin])
    await harness.deliver(2)
    first, second = await settled(harness, [original, twin])
    assert first == second
    assert first.ok
    assert ["twice"] == await harness.rows("SELECT text FROM {schema}.notes")
    assert 1 == len(await harness.rows("SELECT id FROM {schema}.outbox"))


async def test_redelivered_batch_gets_the_stored_replies(harness: Harness) -> None:
    """A batch delivered again (same ids) is answered from the inbox, not handled again."""
    batch = [note("one"), note("two")]
    await harness.publish(batch)
    await harness.deliver(2)
    first_replies = await settled(harness, batch)
    again = [e.model_copy(update={"correlationid": str(uuid.uuid4())}) for e in batch]
    await harness.publish(again)
    await harness.deliver(2)
    assert first_replies == await settled(harness, again)
    assert ["one", "two"] == await harness.rows(
        "SELECT text FROM {schema}.notes ORDER BY text"
    )
    assert 2 == len(await harness.rows("SELECT id FROM {schema}.outbox"))


async def test_transient_failure_retries_the_batch_without_redelivery(
    harness: Harness,
) -> None:
    """A dependency down longer than the delivery limit (5): the batch is rolled back
    and run again after a backoff, in this consumer, until it commits; the broker never
    redelivers it, so a restart of the database cannot dead-letter anything."""
    batch = [note("steady"), note("flaky")]
    harness.handler.flaky["flaky"] = 7
    await harness.publish(batch)
    delivered = await harness.deliver(2)
    assert all(r.ok for r in await settled(harness, batch))
    async with asyncio.timeout(10):
        await harness.dispatcher.drain()
    assert ["flaky", "steady"] == await harness.rows(
        "SELECT text FROM {schema}.notes ORDER BY text"
    )
    # Eight tries of one batch: seven rolled back, each in a transaction of its own.
    assert 16 == len(harness.handler.transactions)
    assert not any(m.redelivered for m in delivered)
    queue = await harness.channel.declare_queue(harness.queue, passive=True)
    assert 0 == queue.declaration_result.message_count
    dead = await harness.channel.declare_queue(f"{harness.queue}.dead", passive=True)
    assert 0 == dead.declaration_result.message_count


async def test_a_command_past_its_deadline_is_not_applied(harness: Harness) -> None:
    """The sender stopped waiting at the deadline: a worker that takes the command
    later answers that it was not applied, and changes nothing, then or on redelivery."""
    late = note("late").model_copy(
        update={"deadline": datetime.now(UTC) - timedelta(seconds=1)}
    )
    on_time = note("on-time").model_copy(
        update={"deadline": datetime.now(UTC) + timedelta(minutes=5)}
    )
    await harness.publish([late, on_time])
    await harness.deliver(2)
    refused, applied = await settled(harness, [late, on_time])
    assert refused.error is not None
    assert ErrorCode.UNAVAILABLE == refused.error.code
    assert "deadline" in refused.error.message
    assert applied.ok
    assert ["on-time"] == await harness.rows("SELECT text FROM {schema}.notes")
    again = late.model_copy(update={"correlationid": str(uuid.uuid4())})
    await harness.publish([again])
    await harness.deliver(1)
    assert refused == await harness.reply(again)
    assert ["on-time"] == await harness.rows("SELECT text FROM {schema}.notes")


@pytest.mark.parametrize("harness", ["many"], indirect=True)
async def test_a_many_route_takes_the_batch_in_one_call(harness: Harness) -> None:
    batch = [note("one"), note("two"), note("three")]
    await harness.publish(batch)
    await harness.deliver(len(batch))
    replies = await settled(harness, batch)
    assert [3] == harness.handler.batches
    assert ["one", "two", "three"] == [
        Note.model_validate(r.result).text for r in replies
    ]
    assert ["one", "three", "two"] == await harness.rows(
        "SELECT text FROM {schema}.notes ORDER BY text"
    )
    assert 3 == len(await harness.rows("SELECT id FROM {schema}.outbox"))
    assert 3 == len(await harness.rows("SELECT id FROM {schema}.inbox"))


@pytest.mark.parametrize("harness", ["many", "alone"], indirect=True)
async def test_a_refusal_fails_only_its_own_message_in_every_variant(
    harness: Harness, request: pytest.FixtureRequest
) -> None:
    """``many`` refused: its savepoint undoes the batch's statement, and one by one only
    the refused message fails. Not ``batched``: a transaction per message."""
    batch = [note("first"), note("refuse-me"), note("third")]
    await harness.publish(batch)
    await harness.deliver(len(batch))
    first, refused, third = await settled(harness, batch)
    assert (first.ok, third.ok) == (True, True)
    assert refused.error is not None
    assert ErrorCode.CONFLICT == refused.error.code
    assert ["first", "third"] == await harness.rows(
        "SELECT text FROM {schema}.notes ORDER BY text"
    )
    assert 2 == len(await harness.rows("SELECT id FROM {schema}.outbox"))
    if request.node.callspec.params["harness"] == "many":
        assert [3] == harness.handler.batches
    else:
        # A transaction per message; the refused one twice (rolled back, then again
        # with a savepoint).
        assert 4 == len(set(harness.handler.transactions))


@pytest.mark.parametrize("harness", ["read-many"], indirect=True)
async def test_read_only_messages_that_arrive_together_are_read_at_once(
    harness: Harness,
) -> None:
    """A read-only ``many`` route takes what arrived together in one call, outside any
    transaction; refused, it answers each message on its own."""
    together = [note("one"), note("two"), note("three")]
    await harness.publish(together)
    await harness.deliver(len(together))
    replies = await settled(harness, together)
    assert ["one", "two", "three"] == [
        Note.model_validate(r.result).text for r in replies
    ]
    assert [3] == harness.handler.batches

    with_refusal = [note("four"), note("refuse-me"), note("six")]
    await harness.publish(with_refusal)
    await harness.deliver(len(with_refusal))
    four, refused, six = await settled(harness, with_refusal)
    assert (four.ok, six.ok) == (True, True)
    assert refused.error is not None
    assert ErrorCode.CONFLICT == refused.error.code
    assert [3, 3] == harness.handler.batches
    await harness.dispatcher.drain()
    assert [] == await harness.rows("SELECT id FROM {schema}.inbox")


@pytest.mark.parametrize("harness", ["read-many"], indirect=True)
async def test_read_only_events_are_published_before_the_ack(harness: Harness) -> None:
    """A read-only route's events go out with publisher confirms, not through the
    outbox; if they cannot, the message is requeued, and handled again later."""
    arrived: asyncio.Queue[CloudEvent] = asyncio.Queue()

    async def on_event(message: AbstractIncomingMessage) -> None:
        async with message.process():
            arrived.put_nowait(CloudEvent.model_validate_json(message.body))

    async def texts(count: int) -> list[str]:
        async with asyncio.timeout(10):
            return sorted([(await arrived.get()).data["text"] for _ in range(count)])

    await harness.bus.subscribe("test.noted", on_event)
    together = [note("one"), note("two")]
    await harness.publish(together)
    await harness.deliver(len(together))
    assert all(reply.ok for reply in await settled(harness, together))
    assert ["one", "two"] == await texts(2)
    assert [] == await harness.rows("SELECT id FROM {schema}.outbox")

    # Without the events exchange the broker refuses the publish: no reply, no ack.
    await harness.channel.exchange_delete(harness.bus.topology.events)
    unpublished = note("three")
    await harness.publish([unpublished])
    (first,) = await harness.deliver(1)
    await harness.dispatcher.drain()
    assert not harness.replies[unpublished.correlationid or ""].done()

    # The exchange is back (any worker declares it at start): the redelivery goes out.
    await (await Bus.connect(AMQP_URL, harness.bus.topology)).close()
    await harness.bus.subscribe("test.noted", on_event)
    (again,) = await harness.deliver(1)
    assert first.message_id == again.message_id
    assert (await harness.reply(unpublished)).ok
    assert ["three"] == await texts(1)


SLOW = "test.slow"


class Slow(Note):
    TYPE: ClassVar[str] = SLOW


async def test_batch_ack_spares_an_earlier_message_still_handled(
    harness: Harness,
) -> None:
    """A batch is acknowledged with one ack up to its last tag only when nothing below
    it is outstanding: a read-only message delivered before it and still running is
    settled on its own afterwards (here dead-lettered, which an acked one could not be)."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(note: Note, ctx: Context) -> Outcome:
        entered.set()
        await release.wait()
        raise RuntimeError(f"{note.text}: a bug")

    dispatcher = Dispatcher(
        routes={
            NOTE: Route(Note, harness.handler),
            SLOW: Route(Slow, slow, mode=Mode.READ),
        },
        pool=harness.pool,
        schema=harness.schema,
        bus=harness.bus,
        relay=None,
        context=Context,
    )
    queue = await harness.channel.get_queue(harness.queue)
    await queue.bind(harness.bus.topology.commands, SLOW)
    first = note("slow").model_copy(update={"type": SLOW})
    batch = [note("one"), note("two")]
    await harness.publish([first, *batch])
    messages = [await queue.get(no_ack=False, timeout=5) for _ in range(3)]
    reading = asyncio.create_task(dispatcher(messages[0]))
    await entered.wait()
    for message in messages[1:]:
        await dispatcher(message)  # one batch: never yields for a writing route
    await dispatcher.drain()
    assert all(r.ok for r in await settled(harness, batch))

    release.set()
    await reading
    assert first.id == await harness.first_dead()
    assert await queue.get(no_ack=False, fail=False, timeout=5) is None
