"""What the CLI reports as not done is never done later."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from ca_worker.__main__ import serve as serve_ca
from contracts.ca import GetCA
from contracts.errors import ErrorCode
from contracts.names import Topology
from runtime.bus import Bus
from tests.cli.test_cli import lamassu
from tests.conftest import (
    AMQP_URL,
    Backends,
    ca_settings,
    isolated_backends,
    running,
    wait_until_answered,
)
from tests.pki import call

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


async def test_no_worker_fails_fast_and_sends_nothing(own_backends: Backends) -> None:
    """With no CA worker consuming its queue, ca create says so at once (exit 3)."""
    result = await lamassu(own_backends, "ca", "create", "--name", "never")
    assert 3 == result.returncode
    assert "no ca worker is running" in result.stderr
    assert "nothing was sent" in result.stderr


async def test_a_command_not_taken_in_time_is_never_applied(
    own_backends: Backends, tmp_path: Path
) -> None:
    """A worker that hangs holds the command past its deadline: the CLI reports that
    nothing was done, and a worker that takes the command afterwards does not apply it."""
    backends = own_backends
    settings = ca_settings(backends, tmp_path / "keys")
    bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    try:
        async with running(serve_ca, settings) as task:
            await wait_until_answered(bus, task)  # the queue exists from now on
        hung = await aio_pika.connect(AMQP_URL)
        channel = await hung.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.get_queue(bus.topology.queue("ca", "commands"))
        taken = asyncio.Event()

        async def hold(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
            taken.set()  # and never settled, like a worker stuck on a dead dependency

        await queue.consume(hold)
        result = await lamassu(
            backends, "ca", "create", "--name", "late-ca", timeout="1"
        )
        assert taken.is_set()
        assert 3 == result.returncode, result.stderr
        assert "nothing was done" in result.stderr
        await hung.close()  # the held command goes back to the queue
        async with running(serve_ca, settings) as task:
            await wait_until_answered(bus, task)
            reply = await call(bus, GetCA(name="late-ca"))
        assert reply.error is not None
        assert ErrorCode.NOT_FOUND == reply.error.code
    finally:
        await bus.close()
