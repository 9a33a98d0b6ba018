"""Every way in to the cloud proxy, sent garbage and refusals: commands, events on its
queues, the ``lamassu cloud`` command, its settings; and the proxy without connectors.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from cloud_proxy.settings import Settings as CloudSettings
from cloud_proxy.sync import certificate_id
from contracts.cloud import CloudStatus, ConnectCA, GetCloudStatus, Reconcile
from contracts.errors import ErrorCode
from contracts.names import Topology
from runtime.bus import Bus
from runtime.settings import BusSettings
from tests.cloud_proxy.stack import (
    CONNECTOR,
    GROUP,
    POLICY,
    World,
    lamassu,
    serve_cloud_default,
    status,
    until,
)
from tests.conftest import (
    AMQP_URL,
    Backends,
    isolated_backends,
    running,
    wait_until_queue,
)
from tests.device_worker.device_bus import envelope_bytes, publish_raw
from tests.pki import call

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (ConnectCA(ca="x", connector="aws-other"), ErrorCode.INVALID, "aws-other"),
        (
            ConnectCA(
                ca="x",
                connector=CONNECTOR,
                provisioning_role_arn="arn:aws:iam::123456789012:role/x",
            ),
            ErrorCode.INVALID,
            "jitp",
        ),
        (GetCloudStatus(connector="nope"), ErrorCode.INVALID, "nope"),
        (Reconcile(connector="nope"), ErrorCode.INVALID, "nope"),
    ],
    ids=[
        "unknown-connector",
        "role-without-jitp",
        "status-unknown",
        "reconcile-unknown",
    ],
)
async def test_refusals(
    world: World, request_: Any, code: ErrorCode, fragment: str
) -> None:
    """Each refusal has its code and a one-line reason; the proxy keeps answering."""
    reply = await call(world.bus, request_)
    assert not reply.ok
    assert reply.error is not None
    assert code is reply.error.code
    assert fragment in reply.error.message
    assert "\n" not in reply.error.message
    assert (await status(world)).configured


GARBAGE = {
    "command not json": (
        "commands",
        "cloud.connect",
        b"{not json",
        "cloud.commands.dead",
        "not a CloudEvents 1.0 JSON message",
    ),
    "unknown command": (
        "commands",
        "cloud.frobnicate",
        envelope_bytes("cloud.frobnicate", {}),
        "cloud.commands.dead",
        "unknown message type 'cloud.frobnicate'",
    ),
    "bad mode": (
        "commands",
        "cloud.connect",
        envelope_bytes(
            "cloud.connect", {"ca": "x", "connector": CONNECTOR, "mode": "cloudy"}
        ),
        "cloud.commands.dead",
        "invalid cloud.connect: mode",
    ),
    "bad policy name": (
        "commands",
        "cloud.connect",
        envelope_bytes(
            "cloud.connect", {"ca": "x", "connector": CONNECTOR, "policy": "a b"}
        ),
        "cloud.commands.dead",
        "invalid cloud.connect: policy",
    ),
    "event missing a field": (
        "",
        "cloud.events",
        envelope_bytes("certificate.create", {"device_id": "x"}),
        "cloud.events.dead",
        "invalid certificate.create: serial: Field required",
    ),
    "event not an envelope": (
        "",
        "cloud.events",
        b'{"specversion": "1.0"}',
        "cloud.events.dead",
        "not a CloudEvents 1.0 JSON message",
    ),
}


@pytest.mark.parametrize("case", GARBAGE.values(), ids=list(GARBAGE))
async def test_garbage_is_answered_and_dead_lettered(
    world: World, own_backends: Backends, case: tuple[str, str, bytes, str, str]
) -> None:
    """Garbage on either proxy queue: an 'invalid' reply with a one-line reason, the
    message in the queue's DLQ, nothing recorded, and the proxy keeps answering."""
    exchange, routing_key, body, dead_queue, reason = case
    if exchange == "":
        routing_key = own_backends.prefix + routing_key
    settings = BusSettings(amqp_url=AMQP_URL, amqp_prefix=own_backends.prefix)
    before = await status(world)
    [reply], dead = await publish_raw(
        settings, exchange, routing_key, [body], dead_queue
    )
    assert (False, ErrorCode.INVALID) == (reply.ok, reply.error and reply.error.code)
    assert reason in reply.error.message  # type: ignore[union-attr]
    assert "\n" not in reply.error.message  # type: ignore[union-attr]
    assert body == dead
    after = await status(world)
    assert before.connections == after.connections


async def test_cli(world: World, own_backends: Backends) -> None:
    """`lamassu cloud connect|status|reconcile` as an operator types them."""
    stage = await world.stage()
    connected = await lamassu(
        own_backends,
        "cloud",
        "connect",
        "--ca",
        stage.ca.name,
        "--connector",
        CONNECTOR,
        "--policy",
        POLICY,
        "--thing-group",
        GROUP,
    )
    assert 0 == connected.returncode, connected.stderr
    assert (
        f"{stage.ca.name} -> {CONNECTOR} (register, policy {POLICY}, thing group {GROUP})"
        == connected.stdout.strip()
    )
    ca_id = certificate_id(stage.ca.certificate_pem)
    assert await until(lambda: world.iot.ca_status(ca_id) == "ACTIVE")

    shown = await lamassu(own_backends, "cloud", "status")
    assert 0 == shown.returncode, shown.stderr
    assert shown.stdout.startswith(f"{CONNECTOR}: ")
    assert f"  {stage.ca.name} -> {CONNECTOR} (register" in shown.stdout
    as_json = await lamassu(
        own_backends, "--json", "cloud", "reconcile", "--connector", CONNECTOR
    )
    assert 0 == as_json.returncode, as_json.stderr
    assert CONNECTOR == json.loads(as_json.stdout)["items"][0]["connector"]

    refused = await lamassu(
        own_backends, "cloud", "connect", "--ca", "x", "--connector", "aws-other"
    )
    assert 1 == refused.returncode
    assert (
        "error: invalid: no connector named 'aws-other'; configured: aws-main"
        == refused.stderr.strip()
    )
    usage = await lamassu(
        own_backends,
        "cloud",
        "connect",
        "--ca",
        "x",
        "--connector",
        CONNECTOR,
        "--mode",
        "cloudy",
    )
    assert 2 == usage.returncode
    bad_name = await lamassu(
        own_backends,
        "cloud",
        "connect",
        "--ca",
        "x",
        "--connector",
        CONNECTOR,
        "--policy",
        "a b",
    )
    assert 2 == bad_name.returncode
    assert bad_name.stderr.startswith("error: invalid: policy:")


@pytest.fixture
def idle_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


async def test_without_connectors_the_proxy_idles(idle_backends: Backends) -> None:
    """CLOUD_CONNECTORS empty: it answers, refuses connections, touches no cloud."""
    settings = CloudSettings(
        postgres_hostname=idle_backends.pg_host,
        postgres_port=idle_backends.pg_port,
        postgres_username=idle_backends.pg_user,
        postgres_database=idle_backends.database,
        amqp_url=AMQP_URL,
        amqp_prefix=idle_backends.prefix,
        cloud_connectors="",
    )
    async with running(serve_cloud_default, settings) as task:
        bus = await Bus.connect(AMQP_URL, Topology(idle_backends.prefix))
        try:
            await wait_until_queue(bus, "cloud", "commands", task)
            reply = await call(bus, GetCloudStatus())
            assert reply.ok, reply.error
            assert [] == CloudStatus.model_validate(reply.result).items
            reply = await call(bus, ConnectCA(ca="x", connector=CONNECTOR))
            assert reply.error is not None
            assert (
                "no connector named 'aws-main'; configured: none (set CLOUD_CONNECTORS)"
                == reply.error.message
            )
        finally:
            await bus.close()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLOUD_CONNECTORS", "aws main"),
        ("CLOUD_AWS_ENDPOINT_URL", "ftp//nowhere"),
        ("CLOUD_RECONCILE_SCHEDULE", "sometimes"),
    ],
    ids=["connectors", "endpoint", "schedule"],
)
async def test_bad_setting_stops_the_process_with_one_line(
    own_backends: Backends, variable: str, value: str
) -> None:
    """`python -m cloud_proxy` with a wrong variable: exit 2, one line naming it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloud_proxy",
        env=own_backends.env(**{variable: value}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert 2 == process.returncode
    lines = err.decode().strip().splitlines()
    assert 1 == len(lines)
    assert lines[0].startswith(f"cloud_proxy: {variable}:")
