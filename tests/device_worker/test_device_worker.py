"""The device worker over a real RabbitMQ and PostgreSQL, beside the real CA worker.

Certificates come from the CA worker through ``certificate.issue``, so the device worker
sees the same ``certificate.create`` and ``certificate.status.update`` events as in
production. Tests wait for events or inbox rows under deadlines, never for time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import pytest
from pydantic import BaseModel

from ca_worker.settings import Settings as CaSettings
from contracts.ca import (
    CAView,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    CreateCA,
    GetCertificate,
    RevokeCertificate,
    SignCertificate,
)
from contracts.devices import (
    DecommissionDevice,
    DeviceDecommissioned,
    Devices,
    DeviceStatus,
    DeviceView,
    GetDevice,
    ListDevices,
    RegisterDevice,
    SlotView,
)
from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode
from contracts.message import Message
from runtime.bus import Bus
from runtime.settings import BusSettings
from tests.device_worker.device_bus import (
    csr_pem,
    enrollment_certificate,
    envelope_bytes,
    get,
    issue,
    known_dms,
    processed,
    publish_raw,
    status_change,
)
from tests.envelopes import raw_envelope
from tests.pki import EventLog, call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

PENDING = DeviceStatus.PENDING_PROVISIONING
FULL = DeviceStatus.FULLY_PROVISIONED
WARNINGS = DeviceStatus.PROVISIONED_WITH_WARNINGS
DECOMMISSIONED = DeviceStatus.DECOMMISSIONED


@pytest.fixture
async def events(bus: Bus, device_service: None) -> AsyncIterator[EventLog]:
    log = EventLog()
    await bus.subscribe("#", log.on_message)
    yield log


@pytest.fixture
def broker(ca_service: CaSettings, device_service: None) -> BusSettings:
    """This run's bus, once the device worker (tests/conftest.py) consumes from it."""
    return ca_service


@pytest.fixture
async def ca(bus: Bus) -> CAView:
    reply = await call(bus, CreateCA(name=unique("devices-ca")))
    assert reply.ok, reply.error
    return CAView.model_validate(reply.result)


def revoked(event: CloudEvent) -> tuple[str, str | None]:
    updated = event.data["updated"]
    return updated["status"], updated["revocation_reason"]


# --- commands and queries ----------------------------------------------------------


async def test_register_then_get(bus: Bus, events: EventLog, db: asyncpg.Pool) -> None:
    """A registered device is pending with empty slots, and device.create shows it."""
    device_id = unique("meter")
    await known_dms(bus, db, "plant-7")
    reply = await call(
        bus, RegisterDevice(id=device_id, dms="plant-7", slots=["default", "tpm"])
    )
    assert reply.ok, reply.error
    registered = DeviceView.model_validate(reply.result)

    assert (device_id, "plant-7", PENDING, None) == (
        registered.id,
        registered.dms,
        registered.status,
        registered.decommissioned_at,
    )
    assert [SlotView(name="default"), SlotView(name="tpm")] == registered.slots
    assert registered == await get(bus, device_id)
    created = await events.wait_for("device.create", f"device/{device_id}")
    assert ("service/devmanager", registered) == (
        created.source,
        DeviceView.model_validate(created.data),
    )


REFUSALS: dict[str, tuple[Callable[[str], BaseModel], ErrorCode, str]] = {
    "get an unknown device": (
        lambda _: GetDevice(id=unique("ghost")),
        ErrorCode.NOT_FOUND,
        "no device with id",
    ),
    "decommission an unknown device": (
        lambda _: DecommissionDevice(id=unique("ghost")),
        ErrorCode.NOT_FOUND,
        "no device with id",
    ),
    "register an id twice": (
        lambda taken: RegisterDevice(id=taken),
        ErrorCode.CONFLICT,
        "already exists",
    ),
    "an id with a colon": (
        lambda _: RegisterDevice.model_construct(
            id="tpm:meter", dms=None, slots=["default"]
        ),
        ErrorCode.INVALID,
        "invalid device.register: id",
    ),
    "a slot listed twice": (
        lambda _: RegisterDevice.model_construct(
            id=unique("twin"), dms=None, slots=["a", "a"]
        ),
        ErrorCode.INVALID,
        "more than once",
    ),
}


@pytest.mark.parametrize(
    ("make_request", "code", "reason"), REFUSALS.values(), ids=list(REFUSALS)
)
async def test_refusals_name_their_code_and_reason(
    bus: Bus,
    device_service: None,
    make_request: Callable[[str], Message],
    code: ErrorCode,
    reason: str,
) -> None:
    """Each refusal is a typed error reply with a one-line reason."""
    taken = unique("taken")
    assert (await call(bus, RegisterDevice(id=taken))).ok

    reply = await call(bus, make_request(taken))

    assert (False, code) == (reply.ok, reply.error and reply.error.code)
    assert reason in reply.error.message  # type: ignore[union-attr]
    assert "\n" not in reply.error.message  # type: ignore[union-attr]


async def test_list_filters_by_status_and_pages_by_id(
    bus: Bus, device_service: None
) -> None:
    """Listing pages in id order after a given id, optionally filtered by status."""
    prefix = unique("fleet")
    ids = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    for device_id in reversed(ids):
        assert (await call(bus, RegisterDevice(id=device_id))).ok
    assert (await call(bus, DecommissionDevice(id=ids[1]))).ok

    async def listed(**query: Any) -> list[str]:
        reply = await call(bus, ListDevices(**query))
        assert reply.ok, reply.error
        return [d.id for d in Devices.model_validate(reply.result).items]

    assert ids[:2] == await listed(after=prefix, limit=2)
    assert ids[2] == (await listed(after=ids[1], limit=1))[0]
    assert [ids[1]] == await listed(status=DECOMMISSIONED, after=prefix, limit=1)
    assert ids[2] == (await listed(status=PENDING, after=ids[0], limit=1))[0]


@pytest.mark.parametrize(
    ("known", "revoked", "code", "reason"),
    [
        (False, False, ErrorCode.NOT_FOUND, "no DMS named"),
        (True, True, ErrorCode.CONFLICT, "is revoked"),
    ],
    ids=["no-such-dms", "revoked-dms"],
)
async def test_register_refuses_a_dms_that_cannot_own_it(
    bus: Bus,
    db: asyncpg.Pool,
    device_service: None,
    *,
    known: bool,
    revoked: bool,
    code: ErrorCode,
    reason: str,
) -> None:
    """device register --dms names an existing, unrevoked DMS, or nothing is stored."""
    dms, device_id = unique("dms"), unique("pump")
    if known:
        await known_dms(bus, db, dms, revoked=revoked)
    reply = await call(bus, RegisterDevice(id=device_id, dms=dms))
    assert not reply.ok
    assert reply.error is not None
    assert code is reply.error.code
    assert reason in reply.error.message
    assert dms in reply.error.message
    missing = await call(bus, GetDevice(id=device_id))
    assert missing.error is not None
    assert ErrorCode.NOT_FOUND is missing.error.code


# --- status from certificate events ------------------------------------------------


async def test_enrollment_provisions_and_revocation_warns(
    bus: Bus, events: EventLog, ca: CAView
) -> None:
    """An unknown device is created by its first enrollment; revoking its certificate warns."""
    device_id = unique("sensor")
    certificate = await issue(bus, ca, device_id, dms="plant-7")

    created = await events.wait_for("device.create", f"device/{device_id}")
    assert (PENDING, "plant-7") == (created.data["status"], created.data["dms"])
    identity = await events.wait_for("device.identity.update", f"device/{device_id}")
    assert [] == identity.data["previous"]["slots"]
    provisioned = await status_change(events, device_id, PENDING, FULL)
    device = await get(bus, device_id)
    assert FULL == device.status
    assert [
        SlotView(
            name="default",
            certificate_serial=certificate.serial,
            certificate_status=CertificateStatus.ACTIVE,
            not_after=certificate.not_after,
        )
    ] == device.slots
    assert device == DeviceView.model_validate(provisioned.data["updated"])

    reply = await call(bus, RevokeCertificate(serial=certificate.serial))
    assert reply.ok, reply.error
    await status_change(events, device_id, FULL, WARNINGS)
    device = await get(bus, device_id)
    assert (WARNINGS, CertificateStatus.REVOKED) == (
        device.status,
        device.slots[0].certificate_status,
    )


async def test_registered_slots_must_all_be_filled(
    bus: Bus, events: EventLog, ca: CAView
) -> None:
    """A device registered with two slots is fully provisioned only once both hold one."""
    device_id = unique("gateway")
    assert (await call(bus, RegisterDevice(id=device_id, slots=["default", "tpm"]))).ok

    first = await issue(bus, ca, device_id, slot="tpm")
    await events.wait_for(
        "device.identity.update",
        f"device/{device_id}",
        lambda data: (
            first.serial in {s["certificate_serial"] for s in data["updated"]["slots"]}
        ),
    )
    assert PENDING == (await get(bus, device_id)).status
    await issue(bus, ca, device_id, slot="default")

    await status_change(events, device_id, PENDING, FULL)


async def test_reenrollment_then_decommission(
    bus: Bus, events: EventLog, db: asyncpg.Pool, ca: CAView
) -> None:
    """A renewal takes the slot, the superseded certificate's revocation does not
    degrade the device, and decommissioning revokes the current certificate at the CA.
    """
    device_id = unique("plc")
    subject = f"device/{device_id}"
    old = await issue(bus, ca, device_id)
    await status_change(events, device_id, PENDING, FULL)

    new = await issue(bus, ca, device_id, replaces=old.serial)
    await events.wait_for(
        "device.identity.update",
        subject,
        lambda data: data["updated"]["slots"][0]["certificate_serial"] == new.serial,
    )
    assert (await call(bus, RevokeCertificate(serial=old.serial))).ok
    superseded = await events.wait_for(
        "certificate.status.update", f"certificate/{old.serial}"
    )
    await processed(db, superseded.id)
    device = await get(bus, device_id)
    assert (FULL, new.serial) == (device.status, device.slots[0].certificate_serial)

    reply = await call(bus, DecommissionDevice(id=device_id))
    assert reply.ok, reply.error
    assert DECOMMISSIONED == DeviceView.model_validate(reply.result).status
    await status_change(events, device_id, FULL, DECOMMISSIONED)
    retired = await events.wait_for(DeviceDecommissioned.TYPE, subject)
    assert DECOMMISSIONED == DeviceView.model_validate(retired.data).status
    revocation = await events.wait_for(
        "certificate.status.update", f"certificate/{new.serial}"
    )
    assert ("REVOKED", "cessationOfOperation") == revoked(revocation)
    at_ca = await call(bus, GetCertificate(serial=new.serial))
    assert (
        CertificateStatus.REVOKED == CertificateView.model_validate(at_ca.result).status
    )
    again = await call(bus, DecommissionDevice(id=device_id))
    assert ErrorCode.CONFLICT == again.error.code  # type: ignore[union-attr]

    await processed(db, revocation.id)
    device = await get(bus, device_id)
    assert (DECOMMISSIONED, CertificateStatus.REVOKED) == (
        device.status,
        device.slots[0].certificate_status,
    )
    assert [] == events.matching(
        "device.status.update",
        subject,
        lambda data: (
            DECOMMISSIONED == data["previous"]["status"]
            or WARNINGS == data["updated"]["status"]
        ),
    )


async def test_certificate_for_a_decommissioned_device_is_revoked(
    bus: Bus, events: EventLog, ca: CAView
) -> None:
    """A certificate issued after decommissioning is revoked at once; status stays."""
    device_id = unique("retired")
    assert (await call(bus, RegisterDevice(id=device_id))).ok
    assert (await call(bus, DecommissionDevice(id=device_id))).ok

    late = await issue(bus, ca, device_id)

    revocation = await events.wait_for(
        "certificate.status.update", f"certificate/{late.serial}"
    )
    assert ("REVOKED", "cessationOfOperation") == revoked(revocation)
    assert DECOMMISSIONED == (await get(bus, device_id)).status


async def test_certificates_without_a_device_are_ignored(
    bus: Bus, events: EventLog, db: asyncpg.Pool, ca: CAView
) -> None:
    """A certificate signed outside enrollment is acknowledged and leaves no state."""
    reply = await call(bus, SignCertificate(ca=ca.name, csr_pem=csr_pem("web")))
    serial = CertificateView.model_validate(reply.result).serial
    created = await events.wait_for("certificate.create", f"certificate/{serial}")

    await processed(db, created.id)

    assert 0 == await db.fetchval(
        "SELECT count(*) FROM devices.slots WHERE serial = $1", serial
    )


# --- delivery ------------------------------------------------------------------------


async def test_redelivered_event_changes_nothing(
    events: EventLog, broker: BusSettings
) -> None:
    """The same certificate.create event id delivered twice creates the device once."""
    device_id = unique("twice")
    envelope = raw_envelope(
        type_="certificate.create",
        source="tests",
        subject="certificate/twice",
        data=enrollment_certificate(device_id),
        now=datetime.now(UTC),
    )
    body = envelope.model_dump_json().encode()

    first, second = (
        await publish_raw(broker, "events", "certificate.create", [body, body])
    )[0]

    assert first.ok, first.error
    assert first == second
    await status_change(events, device_id, PENDING, FULL)
    subject = f"device/{device_id}"
    assert (1, 1) == (
        len(events.matching("device.create", subject)),
        len(events.matching("device.identity.update", subject)),
    )


async def test_status_update_overtaking_its_certificate_is_kept(
    bus: Bus, events: EventLog, broker: BusSettings
) -> None:
    """A revocation handled before its certificate.create still binds and warns;
    the late create then changes nothing (one queue is consumed concurrently)."""
    device_id = unique("overtaken")
    active = enrollment_certificate(device_id)
    revoked_view = active.model_copy(update={"status": CertificateStatus.REVOKED})
    update = raw_envelope(
        type_="certificate.status.update",
        source="tests",
        data=CertificateStatusUpdate(previous=active, updated=revoked_view),
        now=datetime.now(UTC),
    )
    created = raw_envelope(
        type_="certificate.create", source="tests", data=active, now=datetime.now(UTC)
    )

    for envelope in (update, created):
        [reply], _ = await publish_raw(
            broker,
            "events",
            envelope.type,
            [envelope.model_dump_json().encode()],
        )
        assert reply.ok, reply.error

    device = await get(bus, device_id)
    assert (WARNINGS, CertificateStatus.REVOKED) == (
        device.status,
        device.slots[0].certificate_status,
    )
    await status_change(events, device_id, PENDING, WARNINGS)


class Malformed(NamedTuple):
    exchange: str  # "" is the default exchange: straight to the queue
    routing_key: str
    body: bytes
    dead_queue: str
    reason: str


MALFORMED = {
    "command not json": Malformed(
        "commands",
        "device.register",
        b"this is not json",
        "devices.commands.dead",
        "not a CloudEvents 1.0 JSON message",
    ),
    "unknown command": Malformed(
        "commands",
        "device.frobnicate",
        envelope_bytes("device.frobnicate", {}),
        "devices.commands.dead",
        "unknown message type 'device.frobnicate'",
    ),
    "command missing a field": Malformed(
        "commands",
        "device.register",
        envelope_bytes("device.register", {"dms": "plant-7"}),
        "devices.commands.dead",
        "invalid device.register: id: Field required",
    ),
    "event not an envelope": Malformed(
        "",
        "devices.events",
        b'{"specversion": "1.0"}',
        "devices.events.dead",
        "not a CloudEvents 1.0 JSON message",
    ),
    "event missing a field": Malformed(
        "",
        "devices.events",
        envelope_bytes("certificate.create", {"device_id": "x"}),
        "devices.events.dead",
        "invalid certificate.create: serial: Field required",
    ),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=list(MALFORMED))
async def test_malformed_messages_are_answered_and_dead_lettered(
    bus: Bus, broker: BusSettings, case: Malformed
) -> None:
    """Garbage on either device queue gets an 'invalid' reply and lands in its DLQ."""
    routing_key = case.routing_key
    if case.exchange == "":
        routing_key = broker.amqp_prefix + routing_key

    [reply], dead = await publish_raw(
        broker, case.exchange, routing_key, [case.body], case.dead_queue
    )

    assert (False, ErrorCode.INVALID) == (reply.ok, reply.error and reply.error.code)
    assert case.reason in reply.error.message  # type: ignore[union-attr]
    assert case.body == dead
    assert (await call(bus, ListDevices(limit=1))).ok
