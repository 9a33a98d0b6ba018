"""The bus on aio-pika: topology, publishing with confirms, consuming, request/reply.

Every worker queue is a durable quorum queue that dead-letters to ``<queue>.dead``
through the ``lamassu.dead`` exchange; ``x-delivery-limit`` bounds redeliveries of a
message whose handler keeps failing transiently, so nothing is requeued forever.

Every publish carries the connection's user as ``user_id``, which RabbitMQ verifies
(a message whose ``user_id`` is not the connection's user is refused), so a consumer
knows who sent each message; ``sender_refusal`` and the reply check compare it with
``contracts.senders`` (DESIGN §2a).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aio_pika.exceptions import DeliveryError
from pamqp import commands as spec

from contracts.envelope import CloudEvent
from contracts.errors import Reply
from contracts.names import Topology
from contracts.senders import Kind, may_send, role_of
from runtime.confirms import event_properties, publish_confirmed
from runtime.delivery import Incoming, Outgoing
from runtime.errors import Transient
from runtime.replies import Replies
from runtime.topology import declare_exchange

__all__ = [
    "Bus",
    "BusUnavailable",
    "Consumer",
    "RequestTimeout",
]

Consumer = Callable[[AbstractIncomingMessage], Awaitable[None]]

_DELIVERY_LIMIT = 5

log = structlog.get_logger("bus")


class BusUnavailable(Transient):
    """The broker refused or could not route a message (no consumer queue bound)."""


class RequestTimeout(Transient):
    """No reply arrived within the deadline."""


class Bus:
    """One robust connection; one confirming channel for publishing, one per consumer."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        topology: Topology,
        exchanges: Mapping[str, AbstractExchange],
        user: str | None = None,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self.topology = topology
        self._exchanges = exchanges
        # The broker user this connection authenticated as (the URL's user name; with
        # EXTERNAL, put the certificate's user name there): every publish's user_id.
        self.user = user
        # Senders are checked when this process runs as an identity of the
        # deployment; a bus shared under one user (``guest`` in development) cannot
        # tell senders apart, and a consuming process says so (warn_if_unchecked).
        self.checks_senders = role_of(user, topology.prefix) is not None
        self._replies = Replies(
            connection, topology, checks_senders=self.checks_senders
        )
        # The channel of each queue this process consumes (readiness).
        self._consuming: dict[str, AbstractChannel] = {}

    @classmethod
    async def connect(cls, url: str, topology: Topology) -> Bus:
        """Connect and declare the exchanges (idempotent, so any process may start first)."""
        try:
            connection = await aio_pika.connect_robust(url, timeout=10)
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            raise BusUnavailable(
                f"AMQP_URL: cannot connect to the broker: {exc}"
            ) from exc
        channel = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        exchanges = {
            name: await declare_exchange(connection, channel, name, kind)
            for name, kind in (
                (topology.commands, aio_pika.ExchangeType.TOPIC),
                (topology.events, aio_pika.ExchangeType.TOPIC),
                (topology.dead, aio_pika.ExchangeType.DIRECT),
            )
        }
        user = unquote(urlsplit(url).username or "") or None
        return cls(connection, channel, topology, exchanges, user)

    def warn_if_unchecked(self) -> None:
        """Say once, in a process that consumes, that it cannot tell senders apart."""
        if not self.checks_senders:
            log.warning(
                "sender_check_off",
                user=self.user,
                reason="not an identity of contracts/senders.py (lamassu bus setup)",
            )

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quick and synchronous: set an event) each time the robust
        connection is restored; whatever followed events must catch up on what it
        missed while the broker was away."""
        self._connection.reconnect_callbacks.add(lambda _connection: callback())

    async def close(self) -> None:
        self._replies.cancel()
        await self._connection.close()

    # --- topology ------------------------------------------------------------------

    async def declare_worker_queue(
        self,
        worker: str,
        purpose: str,
        bindings: Iterable[tuple[str, str]],
    ) -> str:
        """Declare ``<worker>.<purpose>`` and its dead-letter queue; bind (exchange, key)
        pairs."""
        name = self.topology.queue(worker, purpose)
        dead = f"{name}.dead"
        dead_queue = await self._channel.declare_queue(
            dead, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(self._exchanges[self.topology.dead], routing_key=dead)
        queue = await self._channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": self.topology.dead,
                "x-dead-letter-routing-key": dead,
                "x-delivery-limit": _DELIVERY_LIMIT,
            },
        )
        for exchange, key in bindings:
            await queue.bind(self._exchanges[exchange], routing_key=key)
        return name

    async def consume(
        self, queue_name: str, consumer: Consumer, *, prefetch: int
    ) -> str:
        """Start consuming a declared queue on its own channel; returns the consumer tag."""
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=True)
        tag = await queue.consume(consumer, no_ack=False)
        self._consuming[queue_name] = channel
        return tag

    def detached(self) -> list[str]:
        """The queues whose consumer channel is closed now (readiness): the robust
        connection reopens them after a reconnect, not after a channel error."""
        return sorted(q for q, ch in self._consuming.items() if ch.is_closed)

    async def consumer_count(self, queue_name: str) -> int | None:
        """How many consumers a queue has now; None when it does not exist."""
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None  # 404: a passive declare of an absent queue closes the channel
        finally:
            if not channel.is_closed:
                await channel.close()
        result = queue.declaration_result
        return int(result.consumer_count or 0)

    async def message_count(self, queue_name: str) -> int | None:
        """How many messages a queue holds ready now; None when it does not exist."""
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None  # 404, as in consumer_count
        finally:
            if not channel.is_closed:
                await channel.close()
        return int(queue.declaration_result.message_count or 0)

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now (readiness); the robust
        connection clears this while it reconnects."""
        return self._connection.connected.is_set()

    async def subscribe(
        self, pattern: str, consumer: Consumer, *, prefetch: int = 50
    ) -> None:
        """Follow events matching a topic pattern through an exclusive, temporary queue."""
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.topology.events, routing_key=pattern)
        await queue.consume(consumer, no_ack=False)
        self._consuming[f"events {pattern}"] = channel

    # --- senders -------------------------------------------------------------------

    def sender_refusal(self, message: Incoming, type_: str) -> str | None:
        """Why the sender of ``message`` may not send a ``type_`` (None: it may).

        The exchange it came through says whether it is a command or an event; a
        message put straight into a queue through the default exchange is neither.
        """
        if not self.checks_senders:
            return None
        kinds: dict[str, Kind] = {
            self.topology.commands: "commands",
            self.topology.events: "events",
        }
        kind = kinds.get(message.exchange or "")
        if kind is None:
            return f"{type_} did not come through the commands or events exchange"
        if may_send(role_of(message.user_id, self.topology.prefix), kind, type_):
            return None
        return f"{message.user_id or 'an unnamed sender'} may not send {kind} {type_}"

    # --- publishing ----------------------------------------------------------------

    async def publish(
        self,
        exchange: str,
        message: CloudEvent,
        *,
        body: bytes | None = None,
        reply_to: str | None = None,
        mandatory: bool = False,
        expiration: float | None = None,
    ) -> None:
        """Publish persistently and wait for the broker's confirm; ``expiration``
        (seconds) has the broker drop the message if no consumer took it by then."""
        payload = body if body is not None else message.model_dump_json().encode()
        properties = event_properties(
            message.id,
            message.type,
            user_id=self.user,
            correlation_id=message.correlationid,
            reply_to=reply_to,
        )
        if expiration is not None:
            # AMQP 0-9-1 per-message TTL, in milliseconds as a string (RabbitMQ).
            properties.expiration = str(max(1, int(expiration * 1000)))
        try:
            await self._send(
                exchange, message.type, payload, properties, mandatory=mandatory
            )
        except DeliveryError as exc:
            raise BusUnavailable(
                f"nothing consumes {message.type!r} on {exchange}: is its worker running?"
            ) from exc

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        """Publish already-serialised events persistently; return once all are
        confirmed (``runtime.confirms``: one write for the batch's frames)."""
        if messages:
            await publish_confirmed(
                await self._confirming_channel(), messages, self.user
            )

    async def reply(
        self, reply_to: str, correlation_id: str | None, reply: Reply
    ) -> None:
        """Answer a request on the default exchange (AMQP 0-9-1 §3.1.3.1)."""
        await self._send(
            "",
            reply_to,
            reply.model_dump_json().encode(),
            spec.Basic.Properties(
                correlation_id=correlation_id,
                content_type="application/json",
                user_id=self.user,
            ),
            mandatory=False,  # the requester may have timed out and gone
        )

    async def _confirming_channel(self) -> aiormq.Channel:
        """The aiormq channel under the publishing channel (aio-pika's public way in)."""
        channel = await self._channel.get_underlay_channel()
        if not isinstance(channel, aiormq.Channel):  # pragma: no cover - aio-pika 10
            raise TypeError(f"unexpected AMQP channel {type(channel).__name__}")
        return channel

    async def _send(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: spec.Basic.Properties,
        *,
        mandatory: bool,
    ) -> None:
        """One publish on the confirming channel, returning once the broker confirms.

        aio-pika's ``Exchange.publish`` has aiormq wait for each frame to be written
        before it releases the channel lock, so concurrent publishes (a batch's replies)
        go one per loop turn; ``wait=False`` only queues the frames: the confirm, which
        is what callers rely on, is still awaited. A nack or a returned mandatory message
        raises ``DeliveryError`` (the channel is opened with ``on_return_raises``).
        """
        channel = await self._confirming_channel()
        await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
            wait=False,
        )

    # --- request/reply -------------------------------------------------------------

    async def request(
        self,
        command: CloudEvent,
        *,
        timeout: float,  # noqa: ASYNC109 - the deadline is part of the contract
        expiration: float | None = None,
    ) -> Reply:
        """Send a command or query and wait for its typed reply (see ``publish`` for
        ``expiration``). ``timeout`` bounds everything, the publish included: while
        the broker is away a publish waits for the channel to come back."""
        correlation_id = command.correlationid or command.id
        if command.correlationid is None:
            command = command.model_copy(update={"correlationid": correlation_id})
        future = self._replies.expect(correlation_id, command.type)
        try:
            async with asyncio.timeout(timeout):
                reply_to = await self._replies.queue()
                await self.publish(
                    self.topology.commands,
                    command,
                    reply_to=reply_to,
                    mandatory=True,
                    expiration=expiration,
                )
                return await future
        except TimeoutError as exc:
            raise RequestTimeout(
                f"no reply to {command.type} within {timeout:g} s"
            ) from exc
        finally:
            self._replies.forget(correlation_id)
