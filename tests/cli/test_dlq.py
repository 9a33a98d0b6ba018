"""``lamassu dlq``: a dead letter listed, shown, replayed to success, and purged.

A command dead-letters here the way it does in production when no worker takes it
in time: its AMQP expiration passes in the queue (RabbitMQ reason ``expired``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from contracts.devices import ListDevices
from contracts.envelope import CloudEvent, new_message
from contracts.names import Topology
from runtime.bus import Bus
from tests.cli.test_cli import lamassu
from tests.conftest import AMQP_URL, Backends, isolated_backends, worker_running

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def own() -> Iterator[Backends]:
    """Backends where no worker runs until the test starts one."""
    with isolated_backends() as found:
        yield found


def _query() -> CloudEvent:
    return new_message(
        source="test/dlq",
        data=ListDevices(),
        now=datetime.now(UTC),
    )


async def _dead_letters(own: Backends, count: int) -> list[dict[str, str]]:
    """``dlq list --json`` until it shows ``count`` letters (deadline 30 s)."""
    async with asyncio.timeout(30):
        while True:
            result = await lamassu(own, "dlq", "list", "--json")
            assert result.returncode == 0, result.stderr
            document = json.loads(result.stdout)
            if len(document["items"]) == count:
                return list(document["items"])
            await asyncio.sleep(0.1)


async def test_dead_letter_listed_shown_replayed_to_success(own: Backends) -> None:
    bus = await Bus.connect(AMQP_URL, Topology(own.prefix))
    try:
        # The device worker's queue, as the worker declares it, with nobody on it.
        await bus.declare_worker_queue(
            "devices", "commands", [(bus.topology.commands, "device.*")]
        )
        query = _query()
        answer = asyncio.create_task(bus.request(query, timeout=120, expiration=0.05))
        [letter] = await _dead_letters(own, 1)
        assert letter["id"] == query.id
        assert letter["origin"] == "devices.commands"
        assert letter["queue"] == "devices.commands.dead"
        assert letter["type"] == "device.list"
        assert letter["reason"] == "expired"
        assert (
            letter["sender"] == "guest"
        )  # the broker-verified user id (README "Trust")

        shown = await lamassu(own, "dlq", "show", query.id)
        assert shown.returncode == 0, shown.stderr
        assert "reason:  expired" in shown.stdout
        assert '"type":"device.list"' in shown.stdout.replace(" ", "")

        async with worker_running("device_worker", "devices", own):
            replayed = await lamassu(own, "dlq", "replay", query.id)
            assert replayed.returncode == 0, replayed.stderr
            assert replayed.stdout.strip() == "replayed 1 message(s)"
            reply = await asyncio.wait_for(answer, 30)
        assert reply.ok, reply.error
        assert isinstance(reply.result, dict)
        assert reply.result["items"] == []
        assert await _dead_letters(own, 0) == []
    finally:
        await bus.close()


async def test_unknown_id_and_purge_with_confirmation(own: Backends) -> None:
    missing = await lamassu(own, "dlq", "show", "no-such-id")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: not_found: no dead letter has the id 'no-such-id'"
    )
    bus = await Bus.connect(AMQP_URL, Topology(own.prefix))
    try:
        await bus.declare_worker_queue(
            "devices", "commands", [(bus.topology.commands, "device.*")]
        )
        await bus.publish(bus.topology.commands, _query(), expiration=0.05)
        await _dead_letters(own, 1)
        refused = await lamassu(own, "dlq", "purge", "devices.commands")
        assert refused.returncode == 2
        assert "confirm with --yes" in refused.stderr
        await _dead_letters(own, 1)
        purged = await lamassu(own, "dlq", "purge", "devices.commands", "--yes")
        assert purged.returncode == 0, purged.stderr
        assert "deleted 1 message(s)" in purged.stdout
        assert await _dead_letters(own, 0) == []
    finally:
        await bus.close()
