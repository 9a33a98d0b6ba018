"""A CA worker killed between its commit and its publish loses no event and duplicates none."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from contracts.ca import CreateCA
from contracts.envelope import CloudEvent
from contracts.names import Topology
from runtime.bus import Bus
from tests.conftest import AMQP_URL, Backends, isolated_backends, wait_until_answered
from tests.pki import call

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def crash_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


def _start_worker(
    backends: Backends, keys: Path, *, relay: bool
) -> subprocess.Popen[bytes]:
    with (keys / f"worker-relay-{relay}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ca_worker"],
            # No scheduled sweep: the test counts the outbox rows its own request makes.
            env=backends.env(
                GOPEM_DATA=str(keys / "keys"),
                OUTBOX_RELAY=str(relay).lower(),
                SWEEP_SCHEDULE="off",
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def _outbox_size(backends: Backends) -> int:
    conn = await asyncpg.connect(
        host=backends.pg_host,
        port=backends.pg_port,
        user=backends.pg_user,
        database=backends.database,
    )
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ca.outbox"))
    finally:
        await conn.close()


async def test_event_survives_kill_after_commit(
    crash_backends: Backends, tmp_path: Path
) -> None:
    """Kill -9 after commit, before publish: after restart the event arrives exactly once."""
    topology = Topology(crash_backends.prefix)
    bus = await Bus.connect(AMQP_URL, topology)
    subscriber = await bus.declare_worker_queue(
        "test", "subscriber", [(topology.events, "#")]
    )
    first = _start_worker(crash_backends, tmp_path, relay=False)
    try:
        await wait_until_answered(bus)
        reply = await call(bus, CreateCA(name="crash-ca"))
        assert reply.ok, reply.error
        # Committed (the reply came after the commit) but not published: it waits in the outbox.
        assert 2 == await _outbox_size(
            crash_backends
        )  # the internal CA's event and ours
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)

    second = _start_worker(crash_backends, tmp_path, relay=True)
    try:
        seen: list[CloudEvent] = []
        sentinel_seen = asyncio.Event()
        channel = await aio_pika.connect(AMQP_URL)
        async with channel:
            ch = await channel.channel()
            queue = await ch.get_queue(subscriber)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    if message.routing_key == "test.sentinel":
                        sentinel_seen.set()
                    else:
                        seen.append(CloudEvent.model_validate_json(message.body))

            await queue.consume(on_message)
            async with asyncio.timeout(30):
                while await _outbox_size(crash_backends):
                    await asyncio.sleep(0.05)
            # Everything the relay confirmed is queued before this marker (one FIFO queue).
            exchange = await ch.get_exchange(topology.events)
            await exchange.publish(aio_pika.Message(b"{}"), routing_key="test.sentinel")
            async with asyncio.timeout(30):
                await sentinel_seen.wait()
        created = [
            e for e in seen if e.type == "ca.create" and e.subject == "ca/crash-ca"
        ]
        assert 1 == len(created)
        assert len(seen) == len({e.id for e in seen})
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        await bus.close()
