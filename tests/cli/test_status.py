"""``lamassu status`` healthy and unhealthy, and ``lamassu engine check`` asking the
running CA worker (whose key directory is not the caller's)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from ca_worker.__main__ import serve as serve_ca
from contracts.ca import CreateCA, ListCAs, SignCertificate
from contracts.devices import ListDevices
from contracts.names import Topology
from device_worker.__main__ import serve as serve_devices
from device_worker.settings import Settings as DeviceSettings
from dms_worker.__main__ import serve as serve_dms
from dms_worker.settings import Settings as DmsSettings
from runtime.bus import Bus
from tests.cli.test_cli import lamassu
from tests.conftest import (
    AMQP_URL,
    Backends,
    ca_settings,
    isolated_backends,
    running,
    wait_until_answered,
    wait_until_queue,
    worker_settings,
)
from tests.envelopes import raw_envelope
from tests.pki import call, csr_pem, make_csr

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def own() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture(scope="module")
async def site(
    own: Backends, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """The three workers, each with its admin port; LAMASSU_ADMIN_URLS for them."""
    ports = {name: free_port() for name in ("ca_worker", "dms_worker", "device_worker")}
    keys = tmp_path_factory.mktemp("worker-keys")
    async with (
        running(serve_ca, ca_settings(own, keys, admin_port=ports["ca_worker"])) as ca,
        running(
            serve_dms, worker_settings(DmsSettings, own, admin_port=ports["dms_worker"])
        ) as dms,
        running(
            serve_devices,
            worker_settings(DeviceSettings, own, admin_port=ports["device_worker"]),
        ) as devices,
    ):
        bus = await Bus.connect(AMQP_URL, Topology(own.prefix))
        try:
            await wait_until_answered(bus, ca)
            await wait_until_queue(bus, "dms", "commands", dms)
            await wait_until_queue(bus, "devices", "commands", devices)
            await wait_until_queue(bus, "devices", "events", devices)
            await wait_until_queue(bus, "dms", "events", dms)
        finally:
            await bus.close()
        yield ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in ports.items())


async def status(own: Backends, urls: str, *args: str) -> tuple[int, str, str]:
    result = await lamassu(own, "status", *args, LAMASSU_ADMIN_URLS=urls)
    return result.returncode, result.stdout, result.stderr


async def test_status_healthy(own: Backends, site: str) -> None:
    created = await lamassu(own, "ca", "create", "--name", "status-root")
    assert created.returncode == 0, created.stderr
    code, out, err = await status(own, site)
    assert code == 0, out + err
    assert err == ""
    assert out.splitlines()[-1] == "healthy"
    assert "ca_worker       yes" in out
    assert "CAs: 2; certificates:" in out  # the internal CA and ours
    code, out, _ = await status(own, site, "--json")
    document = json.loads(out)
    assert code == 0
    assert document["ok"] is True
    assert document["cas"] == 2
    assert [s["ready"] for s in document["services"]] == [True, True, True]
    assert {q["name"] for q in document["queues"]} >= {"ca.commands", "devices.events"}
    # Every queue of a service that runs here is consumed; the others (VA, alerts,
    # cloud proxy: not started by this test) were never declared.
    deployed = [q for q in document["queues"] if q["consumers"] is not None]
    assert {"ca.commands", "devices.events"} <= {q["name"] for q in deployed}
    assert all(q["consumers"] >= 1 for q in deployed)


async def test_status_unhealthy_names_what_is_wrong(own: Backends, site: str) -> None:
    closed = free_port()
    bus = await Bus.connect(AMQP_URL, Topology(own.prefix))
    try:
        # A message no handler knows is dead-lettered by the device worker.
        bogus = raw_envelope(
            type_="device.bogus",
            source="test/status",
            data=ListDevices(),
            now=datetime.now(UTC),
        )
        await bus.publish(bus.topology.commands, bogus)
        async with asyncio.timeout(30):
            while not await bus.message_count(
                bus.topology.queue("devices", "commands") + ".dead"
            ):
                await asyncio.sleep(0.05)
    finally:
        await bus.close()
    urls = f"{site},est_gateway=http://127.0.0.1:{closed}"
    code, out, err = await status(own, urls)
    assert code == 1
    assert "est_gateway     NO" in out
    assert "unreachable at http://127.0.0.1:" in out
    assert out.splitlines()[-1] == "UNHEALTHY (2)"
    assert err.startswith("error: unhealthy: est_gateway: unreachable")
    assert "1 dead letter(s) in devices.commands.dead (lamassu dlq list)" in err
    code, out, err = await status(own, urls, "--json")
    assert code == 1
    assert err == ""
    document = json.loads(out)  # one JSON document, nothing after it
    assert document["ok"] is False
    assert len(document["problems"]) == 2
    purged = await lamassu(own, "dlq", "purge", "devices.commands", "--yes")
    assert purged.returncode == 0, purged.stderr


async def test_engine_check_asks_the_running_worker(
    own: Backends, site: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "not-the-workers-keys"
    result = await lamassu(own, "engine", "check", GOPEM_DATA=str(elsewhere))
    as_json = await lamassu(own, "engine", "check", "--json", GOPEM_DATA=str(elsewhere))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "# the running CA worker's engines"
    first = result.stdout.splitlines()[0]
    assert first.startswith("ok   engine: gopem, ")
    assert "worker-keys" in first
    assert not elsewhere.exists()
    document = json.loads(as_json.stdout)
    assert document["next"] is None
    assert document["source"] == "worker"
    assert [i["check"] for i in document["items"]] == [
        "engine",
        "reachable",
        "logged in",
        "key types",
    ]


async def test_ca_worker_metrics_after_signing(own: Backends, site: str) -> None:
    """Certificates by CA and status, signing latency per engine, messages by type."""
    bus = await Bus.connect(AMQP_URL, Topology(own.prefix))
    try:
        created = await call(bus, CreateCA(name="metrics-ca"))
        assert created.ok, created.error
        for index in range(2):
            signed = await call(
                bus,
                SignCertificate(
                    ca="metrics-ca",
                    csr_pem=csr_pem(make_csr(f"metrics-{index}")[1]),
                    validity_days=365,
                ),
            )
            assert signed.ok, signed.error
    finally:
        await bus.close()
    ca_admin = dict(e.split("=", 1) for e in site.split(","))["ca_worker"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{ca_admin}/metrics") as response,
    ):
        lines = (await response.text()).splitlines()
    assert 'lamassu_certificates{ca="metrics-ca",status="ACTIVE"} 2.0' in lines
    assert 'lamassu_engine_sign_duration_seconds_count{engine="gopem"} 2.0' in lines
    signed_ok = (
        'lamassu_messages_total{outcome="ok",type="certificate.sign",worker="ca"} 2.0'
    )
    assert signed_ok in lines


async def test_a_command_is_logged_with_its_sender(own: Backends, site: str) -> None:
    """The broker-checked user-id of the publisher is on the worker's log line."""
    assert site
    connection = await aio_pika.connect(AMQP_URL)
    topology = Topology(own.prefix)
    query = raw_envelope(
        type_="ca.list", source="test/audit", data=ListCAs(), now=datetime.now(UTC)
    )
    # The worker binds a message's context (ids, sender) with contextvars.
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(topology.commands)
            await exchange.publish(
                aio_pika.Message(
                    query.model_dump_json().encode(),
                    message_id=query.id,
                    user_id="guest",  # RabbitMQ refuses any other on this connection
                ),
                routing_key="ca.list",
            )
        async with asyncio.timeout(30):
            while not any(e.get("message_id") == query.id for e in logs):
                await asyncio.sleep(0.02)
    [handled] = [e for e in logs if e.get("message_id") == query.id]
    assert handled["event"] == "message_handled"
    assert handled["sender"] == "guest"
    assert handled["source"] == "test/audit"
