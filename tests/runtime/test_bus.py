"""The bus's topology on a real RabbitMQ: bindings that a later version retires."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from pydantic import BaseModel

from contracts.envelope import CloudEvent
from contracts.names import Topology
from runtime.bus import Bus, BusUnavailable
from tests.conftest import AMQP_URL, Backends
from tests.envelopes import raw_envelope

pytestmark = [pytest.mark.rabbitmq]


class Nothing(BaseModel):
    pass


def event(type_: str) -> CloudEvent:
    return raw_envelope(
        type_=type_, source="test", data=Nothing(), now=datetime.now(UTC)
    )


@pytest.fixture
async def bus(backends: Backends) -> AsyncIterator[Bus]:
    client = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    yield client
    await client.close()


async def test_retired_binding_is_removed(bus: Bus) -> None:
    """Declared again with a binding retired, the queue no longer receives its key;
    retiring one that was never made is fine."""
    purpose = f"retire{uuid.uuid4().hex[:6]}"
    kept, retired = f"test.kept.{purpose}", f"test.retired.{purpose}"
    # Commands: tests subscribe to every event ('#'), which would route these.
    exchange = bus.topology.commands
    await bus.declare_worker_queue(
        "test", purpose, [(exchange, kept), (exchange, retired)]
    )
    await bus.publish(exchange, event(retired), mandatory=True)

    await bus.declare_worker_queue(
        "test",
        purpose,
        [(exchange, kept)],
        retired=[(exchange, retired), (exchange, f"test.never.{purpose}")],
    )

    try:
        await bus.publish(exchange, event(kept), mandatory=True)
        with pytest.raises(BusUnavailable):
            await bus.publish(exchange, event(retired), mandatory=True)
    finally:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            name = bus.topology.queue("test", purpose)
            for queue in (name, f"{name}.dead"):
                await channel.queue_delete(queue)
