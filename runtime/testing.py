"""A worker's routes without RabbitMQ: the real ``Dispatcher`` over an in-memory bus
and one PostgreSQL connection in a transaction that is rolled back at the end.

Handlers, and the settlement table they are judged by, get fast tests next to the
real-service suite (which stays: it is what proves the broker and the relay)::

    async with Harness.open(pool, schema="devices", routes=COMMAND_HANDLERS,
                            context=context) as harness:
        handled = await harness.send(RegisterDevice(id="dev-1"))
        assert handled.ok and DeviceCreated.TYPE == handled.events[0].type

``send`` hands one message to the dispatcher and waits until it is settled; what the
handler wrote to the outbox (events and commands) or published directly is read back
and removed, and given to the message it names as its cause (its correlation id), so
each ``Handled`` holds only what its message caused. Everything else the handler wrote
is visible on ``harness.conn`` until the harness closes and rolls it all back.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contracts.envelope import CloudEvent, new_message
from contracts.errors import Reply
from contracts.message import Message
from contracts.names import Topology
from runtime.db import prepare_connection
from runtime.delivery import Incoming, Outgoing
from runtime.dispatch import Dispatcher
from runtime.faults import Backoff
from runtime.routes import ContextFactory, Route

__all__ = ["Handled", "Harness", "MemoryBus", "MemoryMessage"]

_REPLY_TO = "memory.replies"


@dataclass(slots=True, eq=False)
class _Channel:
    """A message's own channel: each is settled on its own (no ``multiple`` ack)."""

    is_closed: bool = False


@dataclass(slots=True)
class MemoryMessage:
    """A delivered message that records how the dispatcher settled it."""

    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = _REPLY_TO
    user_id: str | None = None
    type: str | None = None
    exchange: str | None = None
    delivery_tag: int | None = None
    channel: Any = field(default_factory=_Channel)
    verdict: str | None = None  # "ack", "requeue" or "dead-letter" once settled

    async def ack(self, multiple: bool = False) -> None:
        del multiple  # each message has its own channel: never more than itself
        self.verdict = "ack"

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        del multiple
        self.verdict = "requeue" if requeue else "dead-letter"

    async def reject(self, requeue: bool = False) -> None:
        self.verdict = "requeue" if requeue else "dead-letter"


@dataclass(slots=True)
class MemoryBus:
    """What a dispatcher sends, kept in lists; ``refuse`` plays the sender check."""

    topology: Topology = field(default_factory=Topology)
    refuse: Callable[[Incoming, str], str | None] = lambda _message, _type: None
    # Direct publishes (a READ route's events and commands): (exchange, message).
    published: list[tuple[str, CloudEvent]] = field(default_factory=list)
    forwards: list[CloudEvent] = field(default_factory=list)
    replies: list[tuple[str | None, Reply]] = field(default_factory=list)

    def sender_refusal(self, message: Incoming, type_: str) -> str | None:
        return self.refuse(message, type_)

    async def publish(
        self,
        exchange: str,
        message: CloudEvent,
        *,
        reply_to: str | None = None,
        mandatory: bool = False,
    ) -> None:
        """The dispatcher publishes one message only to forward a request."""
        del exchange, reply_to, mandatory
        self.forwards.append(message)

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        for exchange, _key, _id, body in messages:
            self.published.append((exchange, CloudEvent.model_validate_json(body)))

    async def reply(
        self, reply_to: str, correlation_id: str | None, reply: Reply
    ) -> None:
        del reply_to
        self.replies.append((correlation_id, reply))


@dataclass(frozen=True, slots=True)
class Handled:
    """How one message ended, and what it caused."""

    reply: Reply | None
    verdict: str | None  # None: left unsettled, for the broker to deliver again
    events: list[CloudEvent]
    commands: list[CloudEvent]
    forward: CloudEvent | None

    @property
    def ok(self) -> bool:
        return self.reply is not None and self.reply.ok

    @property
    def result(self) -> Any:
        """The reply's result; AssertionError (with the refusal) when it failed."""
        if self.reply is None or not self.reply.ok:
            raise AssertionError(f"not answered with a result: {self.reply}")
        return self.reply.result

    @property
    def code(self) -> str | None:
        """The refusal's error code, None when it succeeded (or was not answered)."""
        error = None if self.reply is None else self.reply.error
        return None if error is None else str(error.code)


class _OneConnection:
    """The ``Pool`` port over one connection: every handler runs on it, each time in
    a savepoint, so that a handler's failed statement cannot abort the harness's
    transaction (a READ route, which runs outside any transaction of its own)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @contextlib.asynccontextmanager
    async def _lend(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._conn.transaction():
            yield self._conn

    def acquire(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return self._lend()


class Harness:
    """One queue's routes through the real dispatcher, in memory and one transaction."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        *,
        schema: str,
        routes: Mapping[str, Route[Any, Any]],
        context: ContextFactory,
        clock: Callable[[], datetime] | None = None,
        bus: MemoryBus | None = None,
    ) -> None:
        self.conn = conn
        self.bus = bus or MemoryBus()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._schema = schema
        self._tags = itertools.count(1)
        self._dispatcher = Dispatcher(
            routes=routes,
            pool=_OneConnection(conn),
            schema=schema,
            bus=self.bus,
            relay=None,
            context=context,
            clock=self._clock,
            backoff=Backoff(initial=0.001, cap=0.01),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        pool: asyncpg.Pool,
        *,
        schema: str,
        routes: Mapping[str, Route[Any, Any]],
        context: ContextFactory,
        clock: Callable[[], datetime] | None = None,
        bus: MemoryBus | None = None,
    ) -> AsyncIterator[Harness]:
        """A harness on a connection of ``pool`` (whose database has the worker's
        schema), in a transaction rolled back on exit: the handlers' transactions
        are savepoints of it, and nothing they wrote outlives the test."""
        async with pool.acquire() as conn:
            await prepare_connection(conn)
            transaction = conn.transaction()
            await transaction.start()
            try:
                yield cls(
                    conn,
                    schema=schema,
                    routes=routes,
                    context=context,
                    clock=clock,
                    bus=bus,
                )
            finally:
                await transaction.rollback()

    async def send(
        self,
        message: Message,
        *,
        id_: str | None = None,
        deadline: datetime | None = None,
        sender: str | None = None,
    ) -> Handled:
        """Deliver ``message`` as a producer would (``id_`` to send one id twice)."""
        envelope = new_message(source="tests", data=message, now=self._clock(), id_=id_)
        if deadline is not None:
            envelope = envelope.model_copy(update={"deadline": deadline})
        return await self.deliver(
            envelope.model_dump_json().encode(),
            type_=message.TYPE,
            message_id=envelope.id,
            sender=sender,
        )

    async def send_all(self, messages: Sequence[Message]) -> list[Handled]:
        """Deliver ``messages`` together: the dispatcher takes them as one batch."""
        envelopes = [
            new_message(source="tests", data=m, now=self._clock()) for m in messages
        ]
        deliveries = [
            self._message(e.model_dump_json().encode(), type_=e.type, message_id=e.id)
            for e in envelopes
        ]
        for delivered in deliveries:
            await self._dispatcher(delivered)
        return await self._ended(deliveries)

    async def relay(self, envelope: CloudEvent) -> Handled:
        """Deliver a message a handler caused (a command from ``Handled.commands``,
        an event from ``Handled.events``) as the outbox relay would."""
        return await self.deliver(
            envelope.model_dump_json().encode(),
            type_=envelope.type,
            message_id=envelope.id,
        )

    async def deliver(
        self,
        body: bytes,
        *,
        type_: str | None = None,
        message_id: str | None = None,
        sender: str | None = None,
    ) -> Handled:
        """Deliver raw bytes with an AMQP ``type`` (garbage, a forged type, ...)."""
        delivered = self._message(body, type_=type_, message_id=message_id)
        delivered.user_id = sender
        await self._dispatcher(delivered)
        (handled,) = await self._ended([delivered])
        return handled

    def _message(
        self, body: bytes, *, type_: str | None, message_id: str | None = None
    ) -> MemoryMessage:
        return MemoryMessage(
            body=body,
            message_id=message_id,
            correlation_id=str(uuid.uuid4()),
            type=type_,
            exchange=self.bus.topology.commands,
            delivery_tag=next(self._tags),
        )

    async def _ended(self, deliveries: Sequence[MemoryMessage]) -> list[Handled]:
        await self._dispatcher.drain()
        replies = dict(self.bus.replies)
        self.bus.replies.clear()
        outbox = await self.conn.fetch(
            f"DELETE FROM {self._schema}.outbox "
            "RETURNING seq, exchange, convert_from(body, 'utf8') AS body"
        )
        sent = [
            (row["exchange"], CloudEvent.model_validate_json(row["body"]))
            for row in sorted(outbox, key=lambda row: row["seq"])
        ]
        topology = self.bus.topology
        sent += [
            ("events" if e == topology.events else "commands", m)
            for e, m in self.bus.published
        ]
        self.bus.published.clear()
        # A forward keeps its request's correlation id (runtime.settlement).
        forwards = {m.correlationid: m for m in self.bus.forwards}
        self.bus.forwards.clear()
        # What a handler sends carries its cause's id as correlation id (the message's
        # own id, as the harness sends none); what names no delivery goes to the first.
        caused: dict[int, list[tuple[str, CloudEvent]]] = {}
        index = {d.message_id: i for i, d in enumerate(deliveries)}
        for kind, m in sent:
            caused.setdefault(index.get(m.correlationid, 0), []).append((kind, m))
        return [
            Handled(
                reply=replies.get(delivered.correlation_id),
                verdict=delivered.verdict,
                events=[m for kind, m in caused.get(i, []) if kind == "events"],
                commands=[m for kind, m in caused.get(i, []) if kind == "commands"],
                forward=forwards.get(delivered.correlation_id),
            )
            for i, delivered in enumerate(deliveries)
        ]
