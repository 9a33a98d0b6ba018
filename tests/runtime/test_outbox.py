"""The outbox relay on real PostgreSQL and RabbitMQ: every row is published once with
its id and properties, batch after batch, and a failed publish loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel, ConfigDict

from contracts.envelope import CloudEvent
from contracts.names import Topology
from runtime.bus import Bus
from runtime.db import migrate
from runtime.outbox import OutboxRelay, write_events
from tests.conftest import AMQP_URL, Backends
from tests.envelopes import raw_envelope

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


class Note(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str


@dataclass
class Relaying:
    pool: asyncpg.Pool
    schema: str
    bus: Bus
    relay: OutboxRelay
    queue: AbstractQueue

    async def write(self, events: list[CloudEvent]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await write_events(conn, self.schema, events)

    async def left(self) -> int:
        async with self.pool.acquire() as conn:
            count: int = await conn.fetchval(
                f"SELECT count(*) FROM {self.schema}.outbox"
            )
            return count

    async def received(self, count: int) -> list[AbstractIncomingMessage]:
        """The next ``count`` messages of the subscriber queue (10 s deadline)."""
        messages: list[AbstractIncomingMessage] = []
        async with asyncio.timeout(10), self.queue.iterator() as incoming:
            async for message in incoming:
                await message.ack()
                messages.append(message)
                if len(messages) == count:
                    break
        return messages


@pytest.fixture
async def relaying(backends: Backends) -> AsyncIterator[Relaying]:
    schema = f"outbox_{uuid.uuid4().hex[:8]}"
    pool = await backends.pool()
    await migrate(pool, schema, [])
    topology = Topology(backends.prefix)
    bus = await Bus.connect(AMQP_URL, topology)
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(topology.events, routing_key="test.#")
    try:
        yield Relaying(pool, schema, bus, OutboxRelay(pool, schema, bus), queue)
    finally:
        await connection.close()
        await bus.close()
        await pool.close()


def _events(count: int, *, text: str = "note") -> list[CloudEvent]:
    now = datetime.now(UTC)
    return [
        raw_envelope(
            type_="test.noted", source="test", data=Note(text=f"{text}-{i}"), now=now
        )
        for i in range(count)
    ]


async def test_every_row_is_published_once_with_its_id_and_properties(
    relaying: Relaying,
) -> None:
    # More than one relay batch (500), written by COPY; one body spans several AMQP
    # frames (frame_max is 128 KiB unless the broker says otherwise).
    events = [*_events(700), *_events(1, text="x" * 300_000)]
    await relaying.write(events)

    assert 500 == await relaying.relay.drain_once()
    assert 201 == await relaying.relay.drain_once()
    assert 0 == await relaying.relay.drain_once()
    assert 0 == await relaying.left()

    messages = await relaying.received(len(events))
    assert [e.id for e in events] == [m.message_id for m in messages]
    assert [e.model_dump_json().encode() for e in events] == [m.body for m in messages]
    first = messages[0]
    assert "test.noted" == first.routing_key == first.type
    assert "application/cloudevents+json" == first.content_type
    assert aio_pika.DeliveryMode.PERSISTENT == first.delivery_mode


async def test_a_publish_that_fails_keeps_its_rows_for_the_next_try(
    relaying: Relaying,
) -> None:
    events = _events(3)
    await relaying.write(events)
    # Without its exchange the broker closes the channel (404): no confirm arrives.
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(relaying.bus.topology.events)

    with pytest.raises(aio_pika.exceptions.AMQPError):
        await relaying.relay.drain_once()
    assert 3 == await relaying.left()

    # The exchange is back (any worker declares it at start) and the queue rebound.
    again = await Bus.connect(AMQP_URL, relaying.bus.topology)
    await again.close()
    await relaying.queue.bind(relaying.bus.topology.events, routing_key="test.#")
    published = 0
    async with asyncio.timeout(10):
        while not published:
            # The relay's own loop retries too: the robust channel reopens meanwhile.
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                published = await relaying.relay.drain_once()
            if not published:
                await asyncio.sleep(0.05)
    assert 3 == published
    assert 0 == await relaying.left()
    assert [e.id for e in events] == [m.message_id for m in await relaying.received(3)]
