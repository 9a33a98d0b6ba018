"""``lamassu up`` keeps its services running: a dead one is restarted; Ctrl-C exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.names import Topology
from runtime.bus import Bus
from tests.conftest import AMQP_URL, Backends, isolated_backends, wait_until_queue
from tests.faults.infra import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


async def test_a_killed_service_is_restarted_and_ctrl_c_exits_0(
    own_backends: Backends, tmp_path: Path
) -> None:
    """kill -9 of the device worker: up logs it, starts it again, and it consumes again."""
    env = own_backends.env(
        GOPEM_DATA=str(tmp_path / "keys"),
        EST_TLS_DIR=str(tmp_path / "tls"),
        EST_HOST="127.0.0.1",
        EST_PORT=str(free_port()),
        SWEEP_SCHEDULE="off",
        LOG_LEVEL="warning",
    )
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lamassu_cli",
        "up",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert up.stderr is not None
    seen: list[str] = []

    async def line_matching(pattern: str) -> re.Match[str]:
        async with asyncio.timeout(60):
            while True:
                line = (await up.stderr.readline()).decode()  # type: ignore[union-attr]
                assert line, f"lamassu up ended; it said: {seen}"
                seen.append(line)
                match = re.search(pattern, line)
                if match:
                    return match

    bus = await Bus.connect(AMQP_URL, Topology(own_backends.prefix))
    try:
        first = await line_matching(r"started device_worker \(pid (\d+)\)")
        await _consumes(bus)
        os.kill(int(first[1]), signal.SIGKILL)
        await line_matching(r"device_worker exited with -9; restarting")
        again = await line_matching(r"started device_worker \(pid (\d+)\)")
        assert first[1] != again[1]
        await _consumes(bus)
        up.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            assert 0 == await up.wait()
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
        await bus.close()


async def _consumes(bus: Bus) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    never_done = asyncio.create_task(forever())
    try:
        await wait_until_queue(bus, "devices", "commands", never_done)
    finally:
        never_done.cancel()
