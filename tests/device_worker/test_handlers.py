"""The device worker's routes without RabbitMQ: its command and event tables through the
real dispatcher (runtime.testing), on PostgreSQL in a transaction rolled back after each
test. test_device_worker.py proves the same over the broker, with the CA worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from contracts.ca import (
    CertificateCreated,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    RevocationReason,
    RevokeCertificate,
    RevokeDeviceCertificates,
)
from contracts.devices import (
    DecommissionDevice,
    DeviceCreated,
    DeviceDecommissioned,
    DeviceIdentityUpdate,
    Devices,
    DeviceStatus,
    DeviceStatusUpdate,
    DeviceView,
    GetDevice,
    ListDevices,
    RegisterDevice,
)
from contracts.dms import (
    DeviceOwnershipUpdate,
    DMSCreated,
    DMSStatus,
    DMSUpdate,
    DMSView,
)
from contracts.envelope import CloudEvent
from device_worker.handlers import (
    COMMAND_HANDLERS,
    EVENT_HANDLERS,
    DeviceContext,
    DeviceDeps,
)
from device_worker.store import SCHEMA, Store
from runtime.db import discover_migrations, migrate
from runtime.routes import merged
from runtime.testing import Handled, Harness
from tests.device_worker.device_bus import enrollment_certificate, envelope_bytes

pytestmark = [pytest.mark.postgres]

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def pool(handler_db: asyncpg.Pool) -> asyncpg.Pool:
    await migrate(handler_db, SCHEMA, discover_migrations("device_worker"))
    return handler_db


@pytest.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    # One table for both queues: which queue a type arrives on is the broker's part.
    async with Harness.open(
        pool,
        schema=SCHEMA,
        routes=merged(COMMAND_HANDLERS, EVENT_HANDLERS),
        context=DeviceContext.factory(DeviceDeps(store=Store())),
        clock=lambda: NOW,
    ) as found:
        yield found


def dms_view(name: str, status: DMSStatus = DMSStatus.ACTIVE) -> DMSView:
    return DMSView(
        name=name,
        status=status,
        authorized_cas=["factory-ca"],
        certificate_serial="0a",
        certificate_pem="-",
        created_at=NOW,
    )


async def known_dms(harness: Harness, name: str) -> None:
    """The dms.create this worker projects, so devices may be registered for it."""
    assert (await harness.send(DMSCreated.of(dms_view(name)))).ok


def device(handled: Handled) -> DeviceView:
    assert handled.reply is not None
    assert handled.ok, handled.reply.error
    return DeviceView.model_validate(handled.reply.result)


async def in_inbox(harness: Harness, message_id: str) -> bool:
    found: bool = await harness.conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.inbox WHERE id = $1)", message_id
    )
    return found


async def slot_serials(harness: Harness, device_id: str) -> dict[str, str | None]:
    rows = await harness.conn.fetch(
        f"SELECT name, serial FROM {SCHEMA}.slots WHERE device_id = $1", device_id
    )
    return {row["name"]: row["serial"] for row in rows}


async def enrolled(harness: Harness, device_id: str) -> CertificateView:
    """A device created by its first enrollment certificate (certificate.create)."""
    certificate = enrollment_certificate(device_id)
    assert (await harness.send(CertificateCreated.of(certificate))).ok
    return certificate


def status_update(
    certificate: CertificateView, status: CertificateStatus
) -> CertificateStatusUpdate:
    updated = certificate.model_copy(update={"status": status})
    return CertificateStatusUpdate(previous=certificate, updated=updated)


def statuses(event: CloudEvent) -> tuple[str, str]:
    change = DeviceStatusUpdate.model_validate(event.data)
    return change.previous.status, change.updated.status


# --- device.register -----------------------------------------------------------------


async def test_register_creates_the_device_with_empty_slots(harness: Harness) -> None:
    handled = await harness.send(
        RegisterDevice(id="dev-1", slots=["default", "backup"]), id_="register-1"
    )
    view = device(handled)
    assert ("dev-1", None, DeviceStatus.PENDING_PROVISIONING) == (
        view.id,
        view.dms,
        view.status,
    )
    assert ["backup", "default"] == [slot.name for slot in view.slots]
    assert NOW == view.created_at
    assert "ack" == handled.verdict
    (created,) = handled.events
    assert (DeviceCreated.TYPE, "device/dev-1") == (created.type, created.subject)
    # Its events name the request that caused them.
    assert "register-1" == created.correlationid
    assert view == DeviceView.model_validate(created.data)
    assert {"default": None, "backup": None} == await slot_serials(harness, "dev-1")
    assert await in_inbox(harness, "register-1")


async def test_register_for_a_dms_announces_its_ownership(harness: Harness) -> None:
    await known_dms(harness, "factory")
    handled = await harness.send(RegisterDevice(id="dev-2", dms="factory"))
    assert "factory" == device(handled).dms
    assert [DeviceCreated.TYPE, DeviceOwnershipUpdate.TYPE] == [
        e.type for e in handled.events
    ]
    ownership = DeviceOwnershipUpdate.model_validate(handled.events[1].data)
    assert ownership.previous is None
    assert ("dev-2", "factory", NOW) == (
        ownership.updated.device_id,
        ownership.updated.dms,
        ownership.updated.since,
    )


async def test_register_needs_a_known_dms_that_is_not_revoked(
    harness: Harness,
) -> None:
    unknown = await harness.send(RegisterDevice(id="dev-3", dms="nobody"))
    assert ("not_found", "ack") == (unknown.code, unknown.verdict)
    await known_dms(harness, "retired")
    revoked = DMSUpdate(
        previous=dms_view("retired"), updated=dms_view("retired", DMSStatus.REVOKED)
    )
    assert (await harness.send(revoked)).ok
    refused = await harness.send(RegisterDevice(id="dev-3", dms="retired"))
    assert "conflict" == refused.code
    assert [] == unknown.events + refused.events
    assert None is await harness.conn.fetchval(
        f"SELECT id FROM {SCHEMA}.devices WHERE id = 'dev-3'"
    )


async def test_register_twice_is_a_conflict(harness: Harness) -> None:
    assert (await harness.send(RegisterDevice(id="dev-4"))).ok
    again = await harness.send(RegisterDevice(id="dev-4", slots=["other"]))
    assert ("conflict", "ack") == (again.code, again.verdict)
    assert again.reply is not None
    assert again.reply.error is not None
    assert "a device with id 'dev-4' already exists" == again.reply.error.message
    assert [] == again.events
    # The first registration stands: its slots, not the refused one's.
    assert {"default": None} == await slot_serials(harness, "dev-4")


# --- device.decommission -------------------------------------------------------------


async def test_decommission_announces_it_and_revokes_every_certificate(
    harness: Harness,
) -> None:
    await enrolled(harness, "dev-5")
    handled = await harness.send(DecommissionDevice(id="dev-5"), id_="retire-5")
    view = device(handled)
    assert (DeviceStatus.DECOMMISSIONED, NOW) == (view.status, view.decommissioned_at)
    assert [DeviceStatusUpdate.TYPE, DeviceDecommissioned.TYPE] == [
        e.type for e in handled.events
    ]
    assert {"device/dev-5"} == {e.subject for e in handled.events}
    assert (
        DeviceStatus.FULLY_PROVISIONED,
        DeviceStatus.DECOMMISSIONED,
    ) == statuses(handled.events[0])
    # Every certificate it was ever issued: the CA worker knows them, not this worker.
    (revoke,) = handled.commands
    assert (RevokeDeviceCertificates.TYPE, "device/dev-5", "retire-5") == (
        revoke.type,
        revoke.subject,
        revoke.correlationid,
    )
    command = RevokeDeviceCertificates.model_validate(revoke.data)
    assert ("dev-5", RevocationReason.CESSATION_OF_OPERATION) == (
        command.device_id,
        command.reason,
    )
    again = await harness.send(DecommissionDevice(id="dev-5"))
    assert ("conflict", [], []) == (again.code, again.events, again.commands)
    missing = await harness.send(DecommissionDevice(id="dev-none"))
    assert "not_found" == missing.code


async def test_a_decommissioned_device_s_new_certificate_is_revoked(
    harness: Harness,
) -> None:
    """DESIGN §4: a decommissioned device keeps no live certificate, even one whose
    certificate.create arrives after the decommission."""
    assert (await harness.send(RegisterDevice(id="dev-6"))).ok
    assert (await harness.send(DecommissionDevice(id="dev-6"))).ok
    late = enrollment_certificate("dev-6")
    handled = await harness.send(CertificateCreated.of(late))
    assert handled.ok
    assert [DeviceIdentityUpdate.TYPE] == [e.type for e in handled.events]
    (revoke,) = handled.commands
    assert (RevokeCertificate.TYPE, f"certificate/{late.serial}") == (
        revoke.type,
        revoke.subject,
    )
    assert RevocationReason.CESSATION_OF_OPERATION == (
        RevokeCertificate.model_validate(revoke.data).reason
    )


# --- device.get and device.list ------------------------------------------------------


async def test_get_and_list_are_read_without_an_inbox_row(harness: Harness) -> None:
    for device_id in ("dev-a", "dev-b", "dev-c"):
        assert (await harness.send(RegisterDevice(id=device_id))).ok
    await enrolled(harness, "dev-b")
    got = await harness.send(GetDevice(id="dev-b"), id_="get-b")
    assert DeviceStatus.FULLY_PROVISIONED == device(got).status
    assert ([], "ack") == (got.events, got.verdict)
    listed = await harness.send(
        ListDevices(status=DeviceStatus.PENDING_PROVISIONING, after="dev-a", limit=5),
        id_="list-pending",
    )
    assert listed.reply is not None
    items = Devices.model_validate(listed.reply.result).items
    assert ["dev-c"] == [d.id for d in items]
    missing = await harness.send(GetDevice(id="dev-none"), id_="get-none")
    assert ("not_found", "ack") == (missing.code, missing.verdict)
    for query in ("get-b", "list-pending", "get-none"):
        assert not await in_inbox(harness, query)


# --- certificate.create and certificate.status.update -------------------------------


async def test_an_enrollment_certificate_fills_its_device_s_slot(
    harness: Harness,
) -> None:
    certificate = enrollment_certificate("dev-7")
    handled = await harness.send(CertificateCreated.of(certificate), id_="created-7")
    assert handled.ok
    # The device did not exist: its first certificate creates it.
    assert [
        DeviceCreated.TYPE,
        DeviceIdentityUpdate.TYPE,
        DeviceStatusUpdate.TYPE,
    ] == [e.type for e in handled.events]
    assert {"device/dev-7"} == {e.subject for e in handled.events}
    assert (
        DeviceStatus.PENDING_PROVISIONING,
        DeviceStatus.FULLY_PROVISIONED,
    ) == statuses(handled.events[2])
    identity = DeviceIdentityUpdate.model_validate(handled.events[1].data)
    assert [certificate.serial] == [
        s.certificate_serial for s in identity.updated.slots
    ]
    assert {"default": certificate.serial} == await slot_serials(harness, "dev-7")
    assert await in_inbox(harness, "created-7")
    # The same certificate again (another delivery of its event) changes nothing.
    again = await harness.send(CertificateCreated.of(certificate))
    assert (True, []) == (again.ok, again.events)


async def test_a_certificate_naming_no_device_changes_nothing(
    harness: Harness,
) -> None:
    certificate = enrollment_certificate("dev-8").model_copy(
        update={"device_id": None, "slot": None}
    )
    handled = await harness.send(CertificateCreated.of(certificate))
    assert (True, [], []) == (handled.ok, handled.events, handled.commands)
    assert 0 == await harness.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.devices")


async def test_a_batch_of_status_updates_moves_each_device(harness: Harness) -> None:
    first = await enrolled(harness, "dev-x")
    second = await enrolled(harness, "dev-y")
    stranger = enrollment_certificate("dev-z").model_copy(update={"device_id": None})
    handled = await harness.send_all(
        [
            status_update(first, CertificateStatus.ABOUT_TO_EXPIRE),
            status_update(second, CertificateStatus.REVOKED),
            status_update(stranger, CertificateStatus.EXPIRED),
        ]
    )
    assert [True, True, True] == [h.ok for h in handled]
    assert ["ack"] * 3 == [h.verdict for h in handled]
    moved = {e.subject: statuses(e) for h in handled for e in h.events}
    assert {
        "device/dev-x": (
            DeviceStatus.FULLY_PROVISIONED,
            DeviceStatus.REQUIRES_ACTION,
        ),
        "device/dev-y": (
            DeviceStatus.FULLY_PROVISIONED,
            DeviceStatus.PROVISIONED_WITH_WARNINGS,
        ),
    } == moved
    assert {DeviceStatusUpdate.TYPE} == {e.type for h in handled for e in h.events}
    assert [] == handled[2].events  # a certificate no device holds changes nothing
    rows = await harness.conn.fetch(
        f"SELECT d.id, d.status, s.certificate_status FROM {SCHEMA}.devices AS d"
        f" JOIN {SCHEMA}.slots AS s ON s.device_id = d.id ORDER BY d.id"
    )
    assert [
        ("dev-x", "REQUIRES_ACTION", "ABOUT_TO_EXPIRE"),
        ("dev-y", "PROVISIONED_WITH_WARNINGS", "REVOKED"),
    ] == [tuple(row) for row in rows]


# --- what is not a device message ----------------------------------------------------


async def test_garbage_is_refused_invalid_and_dead_lettered(harness: Harness) -> None:
    handled = await harness.deliver(b"\xffnot json", type_=RegisterDevice.TYPE)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
    # A CN holds ``slot:device-id``: a colon in a device id is refused by the contract.
    bad = await harness.deliver(
        envelope_bytes(RegisterDevice.TYPE, {"id": "slot:dev"}),
        type_=RegisterDevice.TYPE,
    )
    assert ("invalid", "dead-letter") == (bad.code, bad.verdict)
    assert bad.reply is not None
    assert bad.reply.error is not None
    assert bad.reply.error.message.startswith("invalid device.register: id:")
    assert 0 == await harness.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.devices")
