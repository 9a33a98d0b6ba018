"""Device ownership over real HTTPS (issue 14): a device belongs to the DMS that
registered or first enrolled it; another DMS is refused, a live slot is replaced only
when the DMS allows it, and only an admin transfer moves a device.

CSRs come from the openssl command; nothing sleeps except polls under deadlines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from contracts.devices import DeviceView, GetDevice, RegisterDevice
from contracts.dms import (
    CreateDMS,
    DeviceOwnership,
    DMSView,
    RevokeDMS,
    TransferDevice,
)
from contracts.errors import ErrorCode
from runtime.bus import Bus
from tests.conftest import Gateway
from tests.est_gateway.test_gateway import (
    Identity,
    Stage,
    make_dms_identity,
    new_stage,
    openssl_csr,
    single_certificate,
)
from tests.pki import EventLog, call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def second_dms(
    bus: Bus, stage: Stage, *, allow_replace: bool = False
) -> Identity:
    """Another DMS allowed to enroll with the stage's CA."""
    name = unique("dms-b")
    identity, csr = make_dms_identity(stage.directory, name)
    reply = await call(
        bus,
        CreateDMS(
            name=name,
            authorized_cas=[stage.ca.name],
            csr_pem=csr,
            allow_replace=allow_replace,
        ),
    )
    assert reply.ok, reply.error
    identity.cert.write_text(DMSView.model_validate(reply.result).certificate_pem)
    return identity


async def device_certificates(db: asyncpg.Pool, device_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT serial FROM ca.certificates WHERE device_id = $1 ORDER BY created_at",
        device_id,
    )
    return [row["serial"] for row in rows]


async def enroll(
    stage: Stage, dms: Identity, device_id: str
) -> tuple[int, str, str | None]:
    """simpleenroll with a fresh openssl key: status, body text, serial when issued."""
    body, _ = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, dms)
    if status != 200:
        return status, payload.decode(), None
    serial = format(single_certificate(payload).serial_number, "x")
    return status, "", serial.zfill(len(serial) + len(serial) % 2)


async def until(probe: object, timeout: float = 10) -> None:
    """Poll an async predicate until it holds (deadline-bounded)."""
    async with asyncio.timeout(timeout):
        while not await probe():  # type: ignore[operator]
            await asyncio.sleep(0.02)


@pytest.fixture
async def stage(bus: Bus, gateway: Gateway, tmp_path: Path) -> Stage:
    return await new_stage(bus, gateway, tmp_path)


async def test_another_dms_cannot_enroll_a_device_it_does_not_own(
    stage: Stage, bus: Bus, db: asyncpg.Pool
) -> None:
    """The first DMS to enroll a device owns it: another DMS gets 403 naming the
    owner, and no certificate is issued."""
    device_id = unique("pump")
    other = await second_dms(bus, stage, allow_replace=True)
    status, _, first = await enroll(stage, stage.dms_identity, device_id)
    assert 200 == status

    status, reason, _ = await enroll(stage, other, device_id)
    assert 403 == status
    assert f"belongs to DMS {stage.dms.name!r}" in reason
    assert [first] == await device_certificates(db, device_id)


async def test_registered_device_belongs_to_its_dms(
    stage: Stage, bus: Bus, db: asyncpg.Pool
) -> None:
    """device register --dms A: DMS B is refused even for its first enrollment; A enrolls."""
    device_id = unique("meter")
    other = await second_dms(bus, stage)

    async def dms_known() -> bool:
        return bool(
            await db.fetchval(
                "SELECT count(*) FROM devices.dmss WHERE name = $1", stage.dms.name
            )
        )

    await until(dms_known)
    reply = await call(bus, RegisterDevice(id=device_id, dms=stage.dms.name))
    assert reply.ok, reply.error

    async def owned() -> bool:
        owner = await db.fetchval(
            "SELECT dms FROM dms.devices WHERE device_id = $1", device_id
        )
        return bool(stage.dms.name == owner)

    await until(owned)
    status, reason, _ = await enroll(stage, other, device_id)
    assert 403 == status
    assert f"belongs to DMS {stage.dms.name!r}" in reason
    assert [] == await device_certificates(db, device_id)
    status, _, serial = await enroll(stage, stage.dms_identity, device_id)
    assert 200 == status
    assert [serial] == await device_certificates(db, device_id)


async def test_register_for_a_missing_dms_is_refused(
    bus: Bus, gateway: Gateway
) -> None:
    """device register --dms nope: not_found naming it, and no device is created."""
    device_id, dms = unique("pump"), unique("nope")
    reply = await call(bus, RegisterDevice(id=device_id, dms=dms))
    assert reply.error is not None
    assert ErrorCode.NOT_FOUND is reply.error.code
    assert f"no DMS named {dms!r}" in reply.error.message
    missing = await call(bus, GetDevice(id=device_id))
    assert missing.error is not None
    assert ErrorCode.NOT_FOUND is missing.error.code


async def test_live_slot_is_replaced_only_when_the_dms_allows(
    stage: Stage, bus: Bus, db: asyncpg.Pool
) -> None:
    """A second simpleenroll into a slot with a live certificate: 403 by default,
    200 from a DMS created with --allow-replace."""
    device_id = unique("valve")
    status, _, first = await enroll(stage, stage.dms_identity, device_id)
    assert 200 == status
    status, reason, _ = await enroll(stage, stage.dms_identity, device_id)
    assert 403 == status
    assert f"holds the live certificate {first}" in reason
    assert "--allow-replace" in reason
    assert [first] == await device_certificates(db, device_id)

    replacing = await second_dms(bus, stage, allow_replace=True)
    other_device = unique("valve")
    status, _, one = await enroll(stage, replacing, other_device)
    assert 200 == status
    status, _, two = await enroll(stage, replacing, other_device)
    assert 200 == status
    assert [one, two] == await device_certificates(db, other_device)
    slot = await db.fetchval(
        "SELECT serial FROM ca.slots WHERE device_id = $1 AND slot = 'default'",
        other_device,
    )
    assert two == slot


async def test_admin_transfer_moves_the_device(
    stage: Stage, bus: Bus, db: asyncpg.Pool, gateway: Gateway
) -> None:
    """dms.transfer-device gives a device to another DMS: the new owner enrolls it, the
    old one is refused, the device shows its new DMS and the event says so."""
    events = EventLog()
    await bus.subscribe("device.ownership.update", events.on_message)
    device_id = unique("drive")
    new_owner = await second_dms(bus, stage, allow_replace=True)
    new_name = new_owner.cert.stem
    status, _, _ = await enroll(stage, stage.dms_identity, device_id)
    assert 200 == status

    reply = await call(bus, TransferDevice(device_id=device_id, dms=new_name))
    assert reply.ok, reply.error
    assert new_name == DeviceOwnership.model_validate(reply.result).dms
    event = await events.wait_for("device.ownership.update", f"device/{device_id}")
    assert (stage.dms.name, new_name) == (
        event.data["previous"]["dms"],
        event.data["updated"]["dms"],
    )

    status, reason, _ = await enroll(stage, stage.dms_identity, device_id)
    assert 403 == status
    assert f"belongs to DMS {new_name!r}" in reason
    status, _, serial = await enroll(stage, new_owner, device_id)
    assert 200 == status

    async def shows_new_owner() -> bool:
        reply = await call(bus, GetDevice(id=device_id))
        return reply.ok and new_name == DeviceView.model_validate(reply.result).dms

    await until(shows_new_owner)
    assert serial in await device_certificates(db, device_id)


@pytest.mark.parametrize(
    ("target", "code", "reason"),
    [
        ("missing", ErrorCode.NOT_FOUND, "no DMS named"),
        ("revoked", ErrorCode.CONFLICT, "is revoked"),
        ("bad name!", ErrorCode.INVALID, "dms"),
    ],
    ids=["unknown-dms", "revoked-dms", "garbage-name"],
)
async def test_transfer_refusals(
    stage: Stage,
    bus: Bus,
    db: asyncpg.Pool,
    *,
    target: str,
    code: ErrorCode,
    reason: str,
) -> None:
    """A transfer to no DMS, to a revoked one, or with garbage: refused with its code,
    and the device keeps its owner."""
    device_id = unique("gate")
    status, _, _ = await enroll(stage, stage.dms_identity, device_id)
    assert 200 == status
    if target == "revoked":
        revoked = await second_dms(bus, stage)
        target = revoked.cert.stem
        assert (await call(bus, RevokeDMS(name=target))).ok
    elif target == "missing":
        target = unique("missing")
    if code is ErrorCode.INVALID:
        request = TransferDevice.model_construct(device_id=device_id, dms=target)
    else:
        request = TransferDevice(device_id=device_id, dms=target)
    reply = await call(bus, request)
    assert reply.error is not None
    assert code is reply.error.code
    assert reason in reply.error.message
    assert stage.dms.name == await db.fetchval(
        "SELECT dms FROM dms.devices WHERE device_id = $1", device_id
    )
