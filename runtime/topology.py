"""Exchanges made or found at start, and a topology removed after a test or benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from contracts.names import Topology

__all__ = ["declare_exchange", "remove_topology"]


async def declare_exchange(
    connection: AbstractRobustConnection,
    channel: AbstractChannel,
    name: str,
    kind: aio_pika.ExchangeType,
) -> AbstractExchange:
    """The exchange, declared passively when it exists (``lamassu bus setup`` made it,
    and services have no configure permission on exchanges), else created."""
    probe = await connection.channel()
    try:
        await probe.declare_exchange(name, kind, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        # 404 (AMQP 0-9-1 §1.6.2.1 passive): absent; the probe channel is closed.
        return await channel.declare_exchange(name, kind, durable=True)
    finally:
        if not probe.is_closed:
            await probe.close()
    return await channel.get_exchange(name, ensure=False)


async def remove_topology(url: str, topology: Topology, queues: Iterable[str]) -> None:
    """Delete ``queues`` and the topology's exchanges: test runs and benchmarks clean
    up after themselves, since idle quorum queues cost the broker CPU."""
    connection = await aio_pika.connect(url)
    async with connection:
        for queue in queues:
            # A failed delete (no such queue) closes its channel: one channel each.
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(queue)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.close()
        channel = await connection.channel()
        for exchange in (topology.commands, topology.events, topology.dead):
            await channel.exchange_delete(exchange)
