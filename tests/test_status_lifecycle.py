"""Certificates, CAs and devices walked through every status with an injected clock.

Its own backends and workers: the CA worker's ``now`` is a ``Clock`` these tests move,
and a sweep at a moved clock would expire the session's other certificates. Devices
enroll over real HTTPS through the EST gateway; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_worker.__main__ import serve as serve_ca
from contracts.ca import (
    CAView,
    CertificateStatus,
    CertificateView,
    CreateCA,
    GetCertificate,
    RevokeCA,
    RevokeCertificate,
    SignCertificate,
    UpdateCA,
)
from contracts.devices import DecommissionDevice, DeviceStatus, DeviceView, GetDevice
from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode
from contracts.message import Message
from contracts.names import Topology
from contracts.sweeps import GetSweep, RunSweep, SweepShard, SweepView
from runtime.bus import Bus
from tests.conftest import (
    AMQP_URL,
    Backends,
    ca_settings,
    gateway_running,
    isolated_backends,
    running,
    wait_until_answered,
    worker_running,
)
from tests.est_gateway.test_gateway import (
    Identity,
    Stage,
    new_stage,
    openssl_csr,
    single_certificate,
)
from tests.pki import Clock, EventLog, call, csr_pem, make_csr, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

DAY = timedelta(days=1)
ACTIVE = CertificateStatus.ACTIVE
ABOUT = CertificateStatus.ABOUT_TO_EXPIRE
EXPIRED = CertificateStatus.EXPIRED
REVOKED = CertificateStatus.REVOKED


@dataclass
class World:
    bus: Bus
    clock: Clock
    events: EventLog
    stage: Stage


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture(scope="module")
async def world(
    own_backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    clock = Clock()
    settings = ca_settings(
        own_backends, tmp_path_factory.mktemp("keys"), sweep_schedule="off"
    )

    async def serve(settings: object, stop: asyncio.Event) -> None:
        await serve_ca(settings, stop, clock=clock)  # type: ignore[arg-type]

    directory = tmp_path_factory.mktemp("lifecycle")
    async with running(serve, settings) as task:
        bus = await Bus.connect(AMQP_URL, Topology(own_backends.prefix))
        try:
            await wait_until_answered(bus, task)
            events = EventLog()
            await bus.subscribe("#", events.on_message)
            async with (
                worker_running("dms_worker", "dms", own_backends),
                worker_running("device_worker", "devices", own_backends),
                gateway_running(own_backends, directory / "tls") as gateway,
            ):
                stage = await new_stage(bus, gateway, directory)
                yield World(bus, clock, events, stage)
        finally:
            await bus.close()


@pytest.fixture(autouse=True)
def real_time(world: World) -> Iterator[None]:
    """Each test starts at the real time; statuses never move back when it does."""
    world.clock.offset = timedelta(0)
    yield
    world.clock.offset = timedelta(0)


# --- steps -----------------------------------------------------------------------------


async def sweep(world: World, after: timedelta) -> SweepView:
    """Move the clock, run a sweep and wait until every shard is done."""
    world.clock.offset = after
    reply = await call(world.bus, RunSweep())
    assert reply.ok, reply.error
    view = SweepView.model_validate(reply.result)
    async with asyncio.timeout(20):
        while view.shards_done < view.shards:
            await asyncio.sleep(0.02)
            reply = await call(world.bus, GetSweep(id=view.id))
            view = SweepView.model_validate(reply.result)
    return view


def hex_serial(certificate: x509.Certificate) -> str:
    text = format(certificate.serial_number, "x")
    return text if len(text) % 2 == 0 else "0" + text


async def enroll(world: World, device_id: str) -> tuple[x509.Certificate, Identity]:
    """A device enrolls over EST; returns its certificate and TLS identity."""
    stage = world.stage
    body, key = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    certificate = single_certificate(payload)
    identity = Identity(stage.directory / f"{device_id}.pem", key)
    identity.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    await device_moved(world, device_id, None, DeviceStatus.FULLY_PROVISIONED)
    return certificate, identity


async def reenroll(
    world: World, device_id: str, identity: Identity
) -> x509.Certificate:
    """Renewal with the same key (RFC 7030 §4.2.2), authenticated by the current certificate."""
    stage = world.stage
    body, _ = openssl_csr(stage.directory, device_id, key=identity.key)
    status, _, payload = await stage.est.enroll(
        stage.ca.name, body, identity, "simplereenroll"
    )
    assert 200 == status, payload
    certificate = single_certificate(payload)
    identity.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


async def certificate_moved(
    world: World,
    serial: str,
    previous: CertificateStatus,
    updated: CertificateStatus,
) -> None:
    await world.events.wait_for(
        "certificate.status.update",
        f"certificate/{serial}",
        lambda d: (
            (d["previous"]["status"], d["updated"]["status"])
            == (previous.value, updated.value)
        ),
    )


async def ca_moved(
    world: World, name: str, previous: CertificateStatus, updated: CertificateStatus
) -> None:
    await world.events.wait_for(
        "ca.status.update",
        f"ca/{name}",
        lambda d: (
            (d["previous"]["status"], d["updated"]["status"])
            == (previous.value, updated.value)
        ),
    )


async def device_moved(
    world: World,
    device_id: str,
    previous: DeviceStatus | None,
    updated: DeviceStatus,
) -> None:
    """The device.status.update event from ``previous`` (any, if None) to ``updated``."""
    await world.events.wait_for(
        "device.status.update",
        f"device/{device_id}",
        lambda d: (
            d["updated"]["status"] == updated.value
            and (previous is None or d["previous"]["status"] == previous.value)
        ),
        timeout=15,
    )


async def device(world: World, device_id: str) -> DeviceView:
    reply = await call(world.bus, GetDevice(id=device_id))
    assert reply.ok, reply.error
    return DeviceView.model_validate(reply.result)


# --- the walks -------------------------------------------------------------------------


async def test_expiry_and_reenrollment(world: World) -> None:
    """ACTIVE -> ABOUT_TO_EXPIRE (device requires action) -> re-enrollment (fully
    provisioned again; the old certificate is revoked as superseded, the DMS's default)
    -> a sweep past its expiry leaves the device alone -> the new one warns and
    expires (device with warnings)."""
    device_id = unique("walk")
    first, identity = await enroll(world, device_id)
    first_serial = hex_serial(first)

    await sweep(world, 340 * DAY)  # 25 days left of 365: inside the CA's 30
    await certificate_moved(world, first_serial, ACTIVE, ABOUT)
    await device_moved(
        world, device_id, DeviceStatus.FULLY_PROVISIONED, DeviceStatus.REQUIRES_ACTION
    )

    second = await reenroll(world, device_id, identity)
    assert first.subject == second.subject
    await device_moved(
        world, device_id, DeviceStatus.REQUIRES_ACTION, DeviceStatus.FULLY_PROVISIONED
    )

    superseded = await world.events.wait_for(
        "certificate.status.update",
        f"certificate/{first_serial}",
        lambda d: d["updated"]["status"] == REVOKED.value,
    )
    assert ("ABOUT_TO_EXPIRE", "superseded") == (
        superseded.data["previous"]["status"],
        superseded.data["updated"]["revocation_reason"],
    )

    await sweep(world, 366 * DAY)
    current = await device(world, device_id)
    assert DeviceStatus.FULLY_PROVISIONED is current.status
    assert [hex_serial(second)] == [slot.certificate_serial for slot in current.slots]

    second_serial = hex_serial(second)  # issued at +340 days, valid until +705
    await sweep(world, 690 * DAY)
    await certificate_moved(world, second_serial, ACTIVE, ABOUT)
    await device_moved(
        world, device_id, DeviceStatus.FULLY_PROVISIONED, DeviceStatus.REQUIRES_ACTION
    )
    await sweep(world, 706 * DAY)
    await certificate_moved(world, second_serial, ABOUT, EXPIRED)
    await device_moved(
        world,
        device_id,
        DeviceStatus.REQUIRES_ACTION,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
    )


async def test_revocation_and_ca_revocation_reach_devices(
    world: World, tmp_path: Path
) -> None:
    """Revoking a device's certificate, and revoking the CA of another's, both leave the
    device provisioned with warnings; the CA revocation cascades to its certificates."""
    stage = await new_stage(world.bus, world.stage.est.gateway, tmp_path)
    own = World(world.bus, world.clock, world.events, stage)
    revoked_device, cascaded_device = unique("rev"), unique("cascade")
    revoked, _ = await enroll(own, revoked_device)
    cascaded, _ = await enroll(own, cascaded_device)

    reply = await call(world.bus, RevokeCertificate(serial=hex_serial(revoked)))
    assert reply.ok, reply.error
    await certificate_moved(world, hex_serial(revoked), ACTIVE, REVOKED)
    await device_moved(
        world,
        revoked_device,
        DeviceStatus.FULLY_PROVISIONED,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
    )

    reply = await call(world.bus, RevokeCA(name=stage.ca.name))
    assert reply.ok, reply.error
    await ca_moved(world, stage.ca.name, ACTIVE, REVOKED)
    await certificate_moved(world, hex_serial(cascaded), ACTIVE, REVOKED)
    await device_moved(
        world,
        cascaded_device,
        DeviceStatus.FULLY_PROVISIONED,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
    )
    # A revoked certificate never expires later: REVOKED is final.
    await sweep(world, 400 * DAY)
    assert REVOKED.value == await certificate_status(world, hex_serial(revoked))


async def certificate_status(world: World, serial: str) -> str:
    reply = await call(world.bus, GetCertificate(serial=serial))
    assert reply.ok, reply.error
    return CertificateView.model_validate(reply.result).status.value


async def test_decommission_is_final(world: World) -> None:
    device_id = unique("retired")
    certificate, _ = await enroll(world, device_id)
    reply = await call(world.bus, DecommissionDevice(id=device_id))
    assert reply.ok, reply.error
    await device_moved(
        world, device_id, DeviceStatus.FULLY_PROVISIONED, DeviceStatus.DECOMMISSIONED
    )
    await world.events.wait_for(
        "certificate.status.update",
        f"certificate/{hex_serial(certificate)}",
        lambda d: d["updated"]["revocation_reason"] == "cessationOfOperation",
    )
    await sweep(world, 400 * DAY)
    assert DeviceStatus.DECOMMISSIONED is (await device(world, device_id)).status


async def test_ca_threshold_and_ca_expiry(world: World) -> None:
    """A CA's threshold is its own and changeable; a CA expires like a certificate,
    with a ca.status.update, and then signs nothing."""
    reply = await call(
        world.bus,
        CreateCA(name=unique("short"), validity_days=100, about_to_expire_days=10),
    )
    assert reply.ok, reply.error
    ca = CAView.model_validate(reply.result)
    assert 10 == ca.about_to_expire_days

    async def sign(days: int) -> CertificateView:
        _, csr = make_csr(unique("leaf"))
        reply = await call(
            world.bus,
            SignCertificate(ca=ca.name, csr_pem=csr_pem(csr), validity_days=days),
        )
        assert reply.ok, reply.error
        return CertificateView.model_validate(reply.result)

    month, week = await sign(30), await sign(5)
    assert ACTIVE is month.status
    assert ABOUT is week.status  # issued inside the warning period already

    reply = await call(world.bus, UpdateCA(name=ca.name, about_to_expire_days=45))
    assert reply.ok, reply.error
    await world.events.wait_for(
        "ca.update",
        f"ca/{ca.name}",
        lambda d: (
            (
                d["previous"]["about_to_expire_days"],
                d["updated"]["about_to_expire_days"],
            )
            == (10, 45)
        ),
    )
    await sweep(world, DAY)  # the 30-day certificate is now inside 45 days
    await certificate_moved(world, month.serial, ACTIVE, ABOUT)

    await sweep(world, 60 * DAY)  # the CA has 40 days left: inside its 45
    await ca_moved(world, ca.name, ACTIVE, ABOUT)
    await sweep(world, 101 * DAY)
    await ca_moved(world, ca.name, ABOUT, EXPIRED)
    _, csr = make_csr(unique("late"))
    reply = await call(world.bus, SignCertificate(ca=ca.name, csr_pem=csr_pem(csr)))
    assert not reply.ok
    assert reply.error is not None
    assert ErrorCode.CONFLICT is reply.error.code
    assert "expired" in reply.error.message


async def test_a_repeated_shard_changes_nothing(world: World) -> None:
    """A shard delivered again, even claiming a later instant, is not applied twice."""
    device_id = unique("twice")
    certificate, _ = await enroll(world, device_id)
    done = await sweep(world, DAY)
    for shard in range(done.shards):
        repeat = SweepShard(
            sweep_id=done.id,
            shard=shard,
            shards=done.shards,
            as_of=world.clock() + 9999 * DAY,
        )
        reply = await call(world.bus, repeat)
        assert reply.ok, reply.error
    assert ACTIVE.value == await certificate_status(world, hex_serial(certificate))
    reply = await call(world.bus, GetSweep(id=done.id))
    assert done == SweepView.model_validate(reply.result)


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (
            GetSweep(id="00000000-0000-4000-8000-000000000000"),
            ErrorCode.NOT_FOUND,
            "no sweep",
        ),
        (
            SweepShard(
                sweep_id="00000000-0000-4000-8000-000000000000",
                shard=0,
                shards=1,
                as_of="2026-01-01T00:00:00Z",
            ),
            ErrorCode.NOT_FOUND,
            "no sweep",
        ),
        (
            UpdateCA(name="no-such-ca", about_to_expire_days=5),
            ErrorCode.NOT_FOUND,
            "no CA",
        ),
    ],
)
async def test_refusals(
    world: World, request_: Message, code: ErrorCode, reason: str
) -> None:
    reply = await call(world.bus, request_)
    assert not reply.ok
    assert reply.error is not None
    assert (code, True) == (reply.error.code, reason in reply.error.message)


@pytest.mark.parametrize(
    ("type_", "data", "reason"),
    [
        ("sweep.shard", {"sweep_id": "x", "shard": 0, "shards": 1}, "sweep_id"),
        (
            "sweep.shard",
            {
                "sweep_id": "00000000-0000-4000-8000-000000000000",
                "shard": 3,
                "shards": 2,
                "as_of": "2026-01-01T00:00:00Z",
            },
            "shard 3 is not below shards 2",
        ),
        ("sweep.run", {"shards": 0}, "shards"),
        ("sweep.run", {"shards": 5000}, "shards"),
        (
            "ca.update",
            {"name": "x", "about_to_expire_days": -1},
            "about_to_expire_days",
        ),
        (
            "ca.create",
            {"name": "x", "about_to_expire_days": "soon"},
            "about_to_expire_days",
        ),
    ],
)
async def test_garbage_is_invalid(
    world: World, type_: str, data: dict[str, object], reason: str
) -> None:
    message = CloudEvent(
        id=unique("garbage"),
        source="tests",
        type=type_,
        time=datetime.now(UTC),
        data=data,
    )
    reply = await world.bus.request(message, timeout=15)
    assert not reply.ok
    assert reply.error is not None
    assert ErrorCode.INVALID is reply.error.code
    assert reason in reply.error.message
