"""The cloud proxy's routes through the real dispatcher, without RabbitMQ or a cloud:
runtime.testing's in-memory bus, PostgreSQL in a transaction that is rolled back, a
fixed clock. Its handlers only write the projection and the items the syncer works
on (the syncer talks to AWS, outside any message: test_sync.py, test_aws.py), so the
whole route table runs here; test_handlers.py calls the same handlers one by one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from cloud_proxy.handlers import (
    COMMAND_HANDLERS,
    EVENT_HANDLERS,
    CloudContext,
    CloudDeps,
)
from cloud_proxy.items import Items
from cloud_proxy.store import Store
from contracts.ca import (
    CACreated,
    CAStatusUpdate,
    CertificateCreated,
    CertificateStatus,
    CertificateStatusUpdate,
)
from contracts.cloud import (
    CloudStatus,
    ConnectCA,
    ConnectionMode,
    ConnectionView,
    GetCloudStatus,
    Reconcile,
)
from contracts.devices import DeviceDecommissioned, DeviceStatus, DeviceView
from contracts.message import Message
from runtime.db import discover_migrations, migrate
from runtime.routes import merged
from runtime.testing import Handled, Harness
from tests.ca_worker.in_memory import result
from tests.cloud_proxy.test_handlers import NOW, ca_view, certificate

pytestmark = [pytest.mark.postgres]

DEPS = CloudDeps(
    store=Store(), items=Items(), connectors=frozenset({"aws-main", "aws-backup"})
)
ROLE = "arn:aws:iam::123456789012:role/provisioning"


@pytest.fixture(scope="module")
async def pool(handler_db: asyncpg.Pool) -> asyncpg.Pool:
    await migrate(handler_db, "cloud", discover_migrations("cloud_proxy"))
    return handler_db


@pytest.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    # Both queues' routes (events and commands) in one table, on a fixed clock.
    table = merged(EVENT_HANDLERS, COMMAND_HANDLERS)
    async with Harness.open(
        pool,
        schema="cloud",
        routes=table,
        context=CloudContext.factory(DEPS),
        clock=lambda: NOW,
    ) as found:
        yield found


async def items(harness: Harness) -> dict[tuple[str, str, str], tuple[str, int]]:
    rows = await harness.conn.fetch(
        "SELECT connector, kind, key, state, version FROM cloud.items"
    )
    return {
        (r["connector"], r["kind"], r["key"]): (r["state"], r["version"]) for r in rows
    }


async def count(harness: Harness, table: str) -> int:
    return int(await harness.conn.fetchval(f"SELECT count(*) FROM cloud.{table}"))


async def projected(harness: Harness, *messages: Message) -> None:
    """Events applied as the events queue delivers them: acked, answered nothing
    but success, sending nothing."""
    for message in messages:
        handled = await harness.send(message)
        assert (True, "ack") == (handled.ok, handled.verdict), handled.reply
        assert [] == handled.events + handled.commands


async def test_connecting_a_ca_makes_it_and_its_device_certificates_due(
    harness: Harness,
) -> None:
    await projected(
        harness,
        CACreated.of(ca_view()),
        CertificateCreated.of(certificate()),
        CertificateCreated.of(certificate("0b", device_id=None)),  # not a device's
    )
    assert {} == await items(harness)  # nothing is connected yet
    handled = await harness.send(ConnectCA(ca="root", connector="aws-main"))
    view = ConnectionView.model_validate(result(handled))
    assert ("root", "aws-main", ConnectionMode.REGISTER, NOW) == (
        view.ca,
        view.connector,
        view.mode,
        view.created_at,
    )
    assert ("ack", []) == (handled.verdict, handled.events)
    assert {
        ("aws-main", "ca", "root"): ("pending", 1),
        ("aws-main", "certificate", "0a"): ("pending", 1),
    } == await items(harness)
    due = await harness.conn.fetchval("SELECT min(next_attempt_at) FROM cloud.items")
    assert NOW == due


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (ConnectCA(ca="root", connector="aws-elsewhere"), "no connector"),
        (
            ConnectCA(ca="root", connector="aws-main", provisioning_role_arn=ROLE),
            "only a jitp connection",
        ),
        (Reconcile(connector="aws-elsewhere"), "no connector"),
        (GetCloudStatus(connector="aws-elsewhere"), "no connector"),
    ],
    ids=["connect-unknown", "role-without-jitp", "reconcile-unknown", "status-unknown"],
)
async def test_refusals_are_invalid_and_write_nothing(
    harness: Harness, request_: Message, reason: str
) -> None:
    await projected(harness, CACreated.of(ca_view()))
    handled = await harness.send(request_)
    assert ("invalid", "ack") == (handled.code, handled.verdict)
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert reason in handled.reply.error.message
    assert (0, 0, 0) == (
        await count(harness, "connections"),
        await count(harness, "items"),
        await count(harness, "reconciliations"),
    )


async def test_a_jitp_connection_keeps_its_role(harness: Harness) -> None:
    request = ConnectCA(
        ca="root",
        connector="aws-main",
        mode=ConnectionMode.JITP,
        provisioning_role_arn=ROLE,
    )
    view = ConnectionView.model_validate(result(await harness.send(request)))
    assert (ConnectionMode.JITP, ROLE) == (view.mode, view.provisioning_role_arn)


async def test_status_is_a_read_route_with_counts(harness: Harness) -> None:
    await projected(
        harness, CACreated.of(ca_view()), CertificateCreated.of(certificate())
    )
    await harness.send(ConnectCA(ca="root", connector="aws-main"))
    inbox = await count(harness, "inbox")
    handled = await harness.send(GetCloudStatus())
    status = CloudStatus.model_validate(result(handled))
    found = {s.connector: s for s in status.items}
    assert ["aws-backup", "aws-main"] == sorted(found)
    main = found["aws-main"]
    assert (True, ["root"], 0, 2, 0) == (
        main.configured,
        [c.ca for c in main.connections],
        main.synced,
        main.pending,
        main.failed,
    )
    assert 0 == found["aws-backup"].pending
    one = CloudStatus.model_validate(
        result(await harness.send(GetCloudStatus(connector="aws-backup")))
    )
    assert ["aws-backup"] == [s.connector for s in one.items]
    assert inbox == await count(harness, "inbox")  # READ: no inbox row


async def test_a_reconciliation_is_asked_for_every_connector(
    harness: Harness,
) -> None:
    handled = await harness.send(Reconcile())
    status = CloudStatus.model_validate(result(handled))
    assert ["aws-backup", "aws-main"] == sorted(s.connector for s in status.items)
    rows = await harness.conn.fetch(
        "SELECT connector, requested_at FROM cloud.reconciliations ORDER BY 1"
    )
    assert [("aws-backup", NOW), ("aws-main", NOW)] == [tuple(r) for r in rows]


async def test_statuses_only_move_forward(harness: Harness) -> None:
    """A late certificate.create does not take a revoked certificate back."""
    revoked = certificate(status=CertificateStatus.REVOKED)
    await projected(
        harness,
        CACreated.of(ca_view()),
        CertificateCreated.of(certificate()),
        CertificateStatusUpdate(previous=certificate(), updated=revoked),
        CertificateCreated.of(certificate()),
    )
    status = await harness.conn.fetchval(
        "SELECT status FROM cloud.certificates WHERE serial = '0a'"
    )
    assert "REVOKED" == status


async def test_events_make_connected_items_due_again(harness: Harness) -> None:
    await projected(
        harness, CACreated.of(ca_view()), CertificateCreated.of(certificate())
    )
    await harness.send(ConnectCA(ca="root", connector="aws-main"))
    revoked_ca = ca_view(CertificateStatus.REVOKED)
    await projected(
        harness,
        CAStatusUpdate(previous=ca_view(), updated=revoked_ca),
        CertificateCreated.of(certificate("0c", replaces="0a")),  # a re-enrollment
    )
    found = await items(harness)
    assert ("pending", 2) == found[("aws-main", "ca", "root")]
    assert ("pending", 2) == found[("aws-main", "certificate", "0a")]  # replaced
    assert ("pending", 1) == found[("aws-main", "certificate", "0c")]
    ca_status = await harness.conn.fetchval(
        "SELECT status FROM cloud.cas WHERE name = 'root'"
    )
    assert "REVOKED" == ca_status

    device = DeviceView(
        id="sensor.1",
        dms=None,
        status=DeviceStatus.DECOMMISSIONED,
        slots=[],
        created_at=NOW - timedelta(days=1),
        decommissioned_at=NOW,
    )
    await projected(harness, DeviceDecommissioned.of(device))
    found = await items(harness)
    assert (3, 2) == (
        found[("aws-main", "certificate", "0a")][1],
        found[("aws-main", "certificate", "0c")][1],
    )
    at = await harness.conn.fetchval(
        "SELECT decommissioned_at FROM cloud.decommissioned_devices WHERE id = $1",
        "sensor.1",
    )
    assert NOW == at


async def test_a_redelivered_event_is_applied_once(harness: Harness) -> None:
    """The same message id again (the broker redelivered it): its stored reply, and
    the item's version is not bumped a second time."""
    await projected(
        harness, CACreated.of(ca_view()), CertificateCreated.of(certificate())
    )
    await harness.send(ConnectCA(ca="root", connector="aws-main"))
    event = CertificateCreated.of(certificate(status=CertificateStatus.EXPIRED))
    first = await harness.send(event, id_="certificate-0a-expired")
    again = await harness.send(event, id_="certificate-0a-expired")
    assert (first.reply, "ack") == (again.reply, again.verdict)
    assert ("pending", 2) == (await items(harness))[("aws-main", "certificate", "0a")]


async def test_a_batch_of_events_commits_together(harness: Harness) -> None:
    await projected(harness, CACreated.of(ca_view()))
    await harness.send(ConnectCA(ca="root", connector="aws-main"))
    handled: list[Handled] = await harness.send_all(
        [CertificateCreated.of(certificate(f"0{n}")) for n in "abc"]
    )
    assert [(True, "ack")] * 3 == [(h.ok, h.verdict) for h in handled]
    assert {"0a", "0b", "0c"} == {
        key for (_, kind, key) in await items(harness) if kind == "certificate"
    }


@pytest.mark.parametrize(
    ("body", "type_"),
    [
        (b"\x00garbage", CertificateCreated.TYPE),
        (b'{"not": "an envelope"}', ConnectCA.TYPE),
    ],
)
async def test_garbage_is_invalid_and_dead_lettered(
    harness: Harness, body: bytes, type_: str
) -> None:
    handled = await harness.deliver(body, type_=type_)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
    assert 0 == await count(harness, "certificates")
