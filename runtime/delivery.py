"""What the dispatcher's parts share: a delivered message, the ports it needs from the
broker and the database, the log context of one message, and the wait after a
transient failure.

The ports are protocols so that ``runtime.testing`` can run the same dispatcher over
an in-memory bus and one connection in a rolled-back transaction: aio-pika's
incoming messages, ``runtime.bus.Bus`` and an asyncpg pool fit them as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import structlog
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from contracts.envelope import CloudEvent
from contracts.errors import Reply
from contracts.message import Message
from contracts.names import Topology
from runtime.faults import Backoff
from runtime.routes import ContextFactory, Route

if TYPE_CHECKING:  # the settler sends through these ports: it imports this module
    from runtime.settlement import Settler

__all__ = [
    "CHANNEL_GONE",
    "Channel",
    "Delivery",
    "Incoming",
    "Lane",
    "Outgoing",
    "Pool",
    "Transport",
    "bind",
    "channel_of",
    "pause",
    "runs",
]

log = structlog.get_logger("dispatch")

# Settling on a channel that closed meanwhile: the broker redelivers the message.
CHANNEL_GONE = (AMQPError, ChannelInvalidStateError, ConnectionError)

# An already-serialised message: (exchange, routing key, message id, body).
Outgoing = tuple[str, str, str, bytes]


class Channel(Protocol):
    """The consumer channel a message came on (aiormq's)."""

    @property
    def is_closed(self) -> bool: ...


class Incoming(Protocol):
    """The parts of a delivered AMQP message the dispatcher reads and settles."""

    @property
    def body(self) -> bytes: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def exchange(self) -> str | None: ...
    @property
    def delivery_tag(self) -> int | None: ...
    @property
    def channel(self) -> Any: ...

    async def ack(self, multiple: bool = False) -> None: ...
    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...
    async def reject(self, requeue: bool = False) -> None: ...


class Transport(Protocol):
    """What the dispatcher sends through: ``runtime.bus.Bus``, or an in-memory bus."""

    @property
    def topology(self) -> Topology: ...

    def sender_refusal(self, message: Incoming, type_: str) -> str | None: ...

    async def publish(
        self,
        exchange: str,
        message: CloudEvent,
        *,
        reply_to: str | None = None,
        mandatory: bool = False,
    ) -> None: ...

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None: ...

    async def reply(
        self, reply_to: str, correlation_id: str | None, reply: Reply
    ) -> None: ...


class Pool(Protocol):
    """Where handlers' connections come from: an asyncpg pool, or one connection."""

    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """A decoded message waiting for its turn: its envelope (data validated as the
    route's model) and the route that takes it."""

    message: Incoming
    envelope: CloudEvent[Message]
    route: Route[Any, Any]

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def request(self) -> Message:
        return self.envelope.data


@dataclass(slots=True)
class Lane:
    """What the dispatcher's writing and READ routes both run with: where connections
    come from, how a handler's context is made, the clock, what else counts as
    transient and how long to wait then, who settles, whether the consumer is
    closing, and the tasks in flight that ``Dispatcher.drain`` waits for."""

    pool: Pool
    context: ContextFactory
    clock: Callable[[], datetime]
    transient: tuple[type[BaseException], ...]
    backoff: Backoff
    settler: Settler
    closing: Callable[[], bool]
    settling: set[asyncio.Task[None]] = field(default_factory=set)

    def track(self, task: asyncio.Task[None]) -> None:
        """Hold a task until it is done (and let drain() wait for it)."""
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    async def pause(
        self, exc: BaseException, deliveries: Sequence[Delivery], attempt: int
    ) -> list[Delivery]:
        """``pause`` with this lane's backoff and closing flag."""
        return await pause(
            exc, deliveries, attempt, backoff=self.backoff, closing=self.closing
        )


def bind(message: Incoming, envelope: CloudEvent | None) -> None:
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


def channel_of(message: Incoming) -> Channel | None:
    """The channel a message came on, or None once it has closed (aio-pika raises
    then): its unsettled messages are the broker's to deliver again."""
    try:
        channel: Channel = message.channel
    except CHANNEL_GONE:
        return None
    return None if channel.is_closed else channel


def runs(deliveries: Iterable[Delivery]) -> list[list[Delivery]]:
    """Consecutive deliveries of one message type, in arrival order."""
    found: list[list[Delivery]] = []
    for delivery in deliveries:
        if found and found[-1][0].envelope.type == delivery.envelope.type:
            found[-1].append(delivery)
        else:
            found.append([delivery])
    return found


async def pause(
    exc: BaseException,
    deliveries: Sequence[Delivery],
    attempt: int,
    *,
    backoff: Backoff,
    closing: Callable[[], bool],
) -> list[Delivery]:
    """After a transient failure, wait (backoff) before the next try; the deliveries
    still worth it: none when stopping, and none whose channel closed meanwhile (the
    broker delivers those again, to whoever consumes then)."""
    delay = backoff.delay(attempt)
    log.warning(
        "batch_retrying",
        error=f"{type(exc).__name__}: {exc}",
        messages=len(deliveries),
        attempt=attempt,
        retry_in=round(delay, 2),
    )
    await asyncio.sleep(delay)
    if closing():
        return []
    return [d for d in deliveries if channel_of(d.message) is not None]
