"""The cloud proxy end to end: devices enroll over EST through the real workers, and a
local AWS IoT endpoint (moto server) shows what AWS would see.

Its own backends and workers, so its CAs and devices are all its own. Nothing sleeps:
each step waits, under a deadline, for what AWS lists or for an event.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloud_proxy.__main__ import serve as serve_cloud
from cloud_proxy.settings import Settings as CloudSettings
from cloud_proxy.sync import certificate_id
from contracts.ca import CAView, RevokeCertificate
from contracts.cloud import CloudStatus, ConnectCA, GetCloudStatus, Reconcile
from contracts.devices import DecommissionDevice
from contracts.errors import ErrorCode
from contracts.names import Topology
from runtime.bus import Bus
from runtime.settings import BusSettings
from tests.cloud_proxy.local_iot import LocalIot
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
from tests.device_worker.device_bus import envelope_bytes, publish_raw
from tests.est_gateway.test_gateway import (
    Identity,
    Stage,
    new_stage,
    openssl_csr,
    single_certificate,
)
from tests.pki import EventLog, call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

CONNECTOR = "aws-main"
POLICY = "lamassu-devices"
GROUP = "factory-line-1"


@dataclass
class World:
    bus: Bus
    events: EventLog
    gateway: Any
    directory: Path
    iot: LocalIot

    async def stage(self) -> Stage:
        return await new_stage(self.bus, self.gateway, self.directory)


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


def cloud_settings(backends: Backends, iot: LocalIot, **overrides: object) -> Any:
    values: dict[str, object] = {
        "postgres_hostname": backends.pg_host,
        "postgres_port": backends.pg_port,
        "postgres_username": backends.pg_user,
        "postgres_database": backends.database,
        "amqp_url": AMQP_URL,
        "amqp_prefix": backends.prefix,
        "cloud_connectors": CONNECTOR,
        "cloud_aws_endpoint_url": iot.url,
        "cloud_aws_region": "eu-west-1",
        "cloud_aws_max_attempts": 1,
        "cloud_retry_base_seconds": 0.2,
        "cloud_retry_max_seconds": 1.0,
        "cloud_reconcile_schedule": "off",
    }
    values.update(overrides)
    return CloudSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def world(
    own_backends: Backends, iot: LocalIot, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    client = iot.client()
    client.create_policy(policyName=POLICY, policyDocument='{"Version": "2012-10-17"}')
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


async def serve_cloud_default(settings: Any, stop: asyncio.Event) -> None:
    await serve_cloud(settings, stop)


async def serve_ca_default(settings: Any, stop: asyncio.Event) -> None:
    from ca_worker.__main__ import serve

    await serve(settings, stop)


# --- steps -----------------------------------------------------------------------------


async def until(check: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll what AWS shows (a blocking boto3 call) until ``check`` is truthy."""
    async with asyncio.timeout(timeout):
        while not (found := check()):
            await asyncio.sleep(0.05)
        return found


async def connect(world: World, ca: CAView, **options: Any) -> None:
    reply = await call(world.bus, ConnectCA(ca=ca.name, connector=CONNECTOR, **options))
    assert reply.ok, reply.error
    ca_id = certificate_id(ca.certificate_pem)
    assert "ACTIVE" == await until(lambda: world.iot.ca_status(ca_id))


async def enroll(
    world: World, stage: Stage, device_id: str
) -> tuple[x509.Certificate, Identity]:
    body, key = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    certificate = single_certificate(payload)
    identity = Identity(stage.directory / f"{device_id}.pem", key)
    identity.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate, identity


async def reenroll(
    stage: Stage, device_id: str, identity: Identity
) -> x509.Certificate:
    body, _ = openssl_csr(stage.directory, device_id, key=identity.key)
    status, _, payload = await stage.est.enroll(
        stage.ca.name, body, identity, "simplereenroll"
    )
    assert 200 == status, payload
    certificate = single_certificate(payload)
    identity.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


def aws_id(certificate: x509.Certificate) -> str:
    return certificate_id(certificate.public_bytes(serialization.Encoding.PEM).decode())


def serial(certificate: x509.Certificate) -> str:
    text = format(certificate.serial_number, "x")
    return text if len(text) % 2 == 0 else "0" + text


def arn_of(world: World, certificate: x509.Certificate) -> str:
    found = world.iot.client().describe_certificate(certificateId=aws_id(certificate))
    return str(found["certificateDescription"]["certificateArn"])


async def status(world: World) -> Any:
    reply = await call(world.bus, GetCloudStatus(connector=CONNECTOR))
    assert reply.ok, reply.error
    return CloudStatus.model_validate(reply.result).items[0]


async def settled(world: World) -> Any:
    """The connector's status once nothing is pending or failed."""
    async with asyncio.timeout(20):
        while True:
            found = await status(world)
            if found.pending == 0 and found.failed == 0:
                return found
            await asyncio.sleep(0.05)


# --- the walks -------------------------------------------------------------------------


async def test_lifecycle_reaches_aws(world: World) -> None:
    """CA registered; an EST enrollment makes thing and ACTIVE certificate (policy,
    group); re-enrollment activates the new one and deactivates the old; revocation
    sets REVOKED; decommissioning leaves nothing of the device."""
    stage = await world.stage()
    await connect(world, stage.ca, policy=POLICY, thing_group=GROUP)
    # BYO-CA: the ownership proof was signed by the CA worker, with the CA's key.
    (proof,) = await until(
        lambda: [
            e.data
            for e in world.events.events
            if e.type == "certificate.create"
            and e.data["ca"] == stage.ca.name
            and e.data["device_id"] is None
        ]
    )
    issued = x509.load_pem_x509_certificate(proof["certificate_pem"].encode())
    issued.verify_directly_issued_by(
        x509.load_pem_x509_certificate(stage.ca.certificate_pem.encode())
    )
    device_id = unique("sensor")

    first, identity = await enroll(world, stage, device_id)
    assert "ACTIVE" == await until(lambda: world.iot.certificate_status(aws_id(first)))
    await settled(world)
    assert [arn_of(world, first)] == world.iot.thing_principals(device_id)
    assert [POLICY] == world.iot.policies(arn_of(world, first))
    assert [GROUP] == world.iot.thing_groups(device_id)
    ca_id = certificate_id(stage.ca.certificate_pem)
    assert [aws_id(first)] == world.iot.certificates_by_ca(ca_id)

    second = await reenroll(stage, device_id, identity)
    assert "INACTIVE" == await until(
        lambda: world.iot.certificate_status(aws_id(first)) == "INACTIVE" and "INACTIVE"
    )
    assert "ACTIVE" == world.iot.certificate_status(aws_id(second))

    reply = await call(world.bus, RevokeCertificate(serial=serial(second)))
    assert reply.ok, reply.error
    assert await until(
        lambda: world.iot.certificate_status(aws_id(second)) == "REVOKED"
    )

    reply = await call(world.bus, DecommissionDevice(id=device_id))
    assert reply.ok, reply.error
    assert await until(lambda: world.iot.thing_principals(device_id) is None)
    assert None is world.iot.certificate_status(aws_id(first))
    assert None is world.iot.certificate_status(aws_id(second))
    assert [] == world.iot.certificates_by_ca(ca_id)
    done = await settled(world)
    assert done.synced >= 3


async def test_outage_heals_without_duplicates(world: World) -> None:
    """With the endpoint down, an enrollment and a revocation fail to sync and say so
    (cloud.sync.failed, status); once it is back, reconciliation converges and AWS
    holds each certificate and thing once."""
    stage = await world.stage()
    await connect(world, stage.ca, policy=POLICY)
    ca_id = certificate_id(stage.ca.certificate_pem)
    kept_id, gone_id = unique("kept"), unique("gone")
    gone, _ = await enroll(world, stage, gone_id)
    assert await until(lambda: world.iot.certificate_status(aws_id(gone)) == "ACTIVE")
    await settled(world)  # its thing too, before the outage
    assert [arn_of(world, gone)] == world.iot.thing_principals(gone_id)

    world.iot.stop()
    try:
        kept, _ = await enroll(world, stage, kept_id)
        reply = await call(world.bus, RevokeCertificate(serial=serial(gone)))
        assert reply.ok, reply.error
        failed = await world.events.wait_for(
            "cloud.sync.failed",
            f"cloud/{CONNECTOR}/certificate/{serial(kept)}",
            timeout=20,
        )
        assert "Could not connect" in failed.data["error"]
        async with asyncio.timeout(20):
            while (found := await status(world)).failed == 0:
                await asyncio.sleep(0.05)
        assert found.last_error is not None
    finally:
        world.iot.start()

    reply = await call(world.bus, Reconcile(connector=CONNECTOR))
    assert reply.ok, reply.error
    assert await until(lambda: world.iot.certificate_status(aws_id(kept)) == "ACTIVE")
    assert await until(lambda: world.iot.certificate_status(aws_id(gone)) == "REVOKED")
    await settled(world)
    assert sorted([aws_id(kept), aws_id(gone)]) == sorted(
        world.iot.certificates_by_ca(ca_id)
    )
    assert [arn_of(world, kept)] == world.iot.thing_principals(kept_id)
    assert 1 == world.iot.things().count(kept_id)
    assert 1 == world.iot.things().count(gone_id)


async def test_reconciliation_repairs_changes_behind_its_back(world: World) -> None:
    """A certificate deactivated and a thing's principal detached in AWS by hand (a
    lost event, say) are put back by a reconciliation."""
    stage = await world.stage()
    await connect(world, stage.ca, policy=POLICY)
    device_id = unique("drift")
    certificate, _ = await enroll(world, stage, device_id)
    assert await until(lambda: world.iot.thing_principals(device_id))
    await settled(world)
    client = world.iot.client()
    arn = arn_of(world, certificate)
    client.update_certificate(certificateId=aws_id(certificate), newStatus="INACTIVE")
    client.detach_thing_principal(thingName=device_id, principal=arn)
    client.delete_thing(thingName=device_id)

    reply = await call(world.bus, Reconcile())
    assert reply.ok, reply.error
    assert await until(
        lambda: world.iot.certificate_status(aws_id(certificate)) == "ACTIVE"
    )
    assert [arn] == await until(lambda: world.iot.thing_principals(device_id))
    found = await settled(world)
    assert found.last_reconciled_at is not None


async def test_connect_after_enrollment_backfills(world: World) -> None:
    """A CA connected after its devices enrolled: the proxy reads what it missed from
    the CA worker and registers those devices too."""
    stage = await world.stage()
    device_id = unique("early")
    certificate, _ = await enroll(world, stage, device_id)
    await connect(world, stage.ca, mode="sni-only")
    assert await until(
        lambda: world.iot.certificate_status(aws_id(certificate)) == "ACTIVE"
    )
    assert [arn_of(world, certificate)] == await until(
        lambda: world.iot.thing_principals(device_id)
    )
    # SNI_ONLY: the device certificate is registered without its CA.
    assert [] == world.iot.certificates_by_ca(certificate_id(stage.ca.certificate_pem))


async def test_jitp_registers_the_template_and_blocks_revoked(world: World) -> None:
    """JITP: the CA carries a provisioning template; live certificates are left for
    AWS to register at first connection, a revoked one is registered REVOKED."""
    stage = await world.stage()
    await connect(world, stage.ca, mode="jitp", policy=POLICY, thing_group=GROUP)
    ca_id = certificate_id(stage.ca.certificate_pem)
    found = world.iot.client().describe_ca_certificate(certificateId=ca_id)
    assert POLICY in found["registrationConfig"]["templateBody"]
    device_id = unique("jitp")
    certificate, _ = await enroll(world, stage, device_id)
    reply = await call(world.bus, RevokeCertificate(serial=serial(certificate)))
    assert reply.ok, reply.error
    assert await until(
        lambda: world.iot.certificate_status(aws_id(certificate)) == "REVOKED"
    )
    assert world.iot.thing_principals(device_id) is None


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


async def lamassu(backends: Backends, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lamassu_cli",
        *args,
        env=backends.env(LOG_LEVEL="warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        args, process.returncode, out.decode(), err.decode()
    )


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


async def test_scheduled_reconciliation_by_a_second_replica(
    world: World, own_backends: Backends
) -> None:
    """A replica with a schedule claims the current period at start and reconciles:
    an item changed in AWS behind the proxy's back is put back, by either replica."""
    stage = await world.stage()
    await connect(world, stage.ca)
    device_id = unique("scheduled")
    certificate, _ = await enroll(world, stage, device_id)
    assert await until(lambda: world.iot.thing_principals(device_id))
    before = (await settled(world)).last_reconciled_at
    world.iot.client().update_certificate(
        certificateId=aws_id(certificate), newStatus="INACTIVE"
    )
    replica = cloud_settings(own_backends, world.iot, cloud_reconcile_schedule="1d")
    async with running(serve_cloud_default, replica):
        assert await until(
            lambda: world.iot.certificate_status(aws_id(certificate)) == "ACTIVE"
        )
        found = await settled(world)
    assert found.last_reconciled_at is not None
    assert before is None or found.last_reconciled_at > before


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
