"""Fixtures of the cloud proxy's tests: the local AWS IoT endpoint, and per module its
own backends and stack of workers (so its CAs and devices are all its own)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from contracts.names import Topology
from runtime.bus import Bus
from tests.cloud_proxy.local_iot import LocalIot, local_iot
from tests.cloud_proxy.stack import (
    GROUP,
    POLICY,
    World,
    cloud_settings,
    serve_ca_default,
    serve_cloud_default,
)
from tests.conftest import (
    AMQP_URL,
    Backends,
    ca_settings,
    gateway_running,
    isolated_backends,
    running,
    wait_until_answered,
    wait_until_queue,
    worker_running,
)
from tests.pki import EventLog


@pytest.fixture(scope="module")
def iot() -> Iterator[LocalIot]:
    """A moto server for the module, on its own loopback port."""
    with local_iot() as found:
        yield found


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture(scope="module")
async def world(
    own_backends: Backends, iot: LocalIot, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    client = iot.client()
    # moto keeps one account per process: another module may have made them already.
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_policy(
            policyName=POLICY, policyDocument='{"Version": "2012-10-17"}'
        )
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_thing_group(thingGroupName=GROUP)
    settings = ca_settings(
        own_backends, tmp_path_factory.mktemp("keys"), sweep_schedule="off"
    )
    directory = tmp_path_factory.mktemp("cloud")
    async with running(serve_cloud_default, cloud_settings(own_backends, iot)) as proxy:
        bus = await Bus.connect(AMQP_URL, Topology(own_backends.prefix))
        try:
            await wait_until_queue(bus, "cloud", "commands", proxy)
            events = EventLog()
            await bus.subscribe("#", events.on_message)
            async with (
                running(serve_ca_default, settings) as ca_task,
                worker_running("dms_worker", "dms", own_backends),
                worker_running("device_worker", "devices", own_backends),
                gateway_running(own_backends, directory / "tls") as gateway,
            ):
                await wait_until_answered(bus, ca_task)
                yield World(bus, events, gateway, directory, iot)
        finally:
            await bus.close()
