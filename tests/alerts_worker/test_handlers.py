"""The alerts worker's routes without RabbitMQ: its command and event tables through the
real dispatcher (runtime.testing), on PostgreSQL in a transaction rolled back after each
test. Handlers only queue notifications and digest items; sending them is the delivery
loop's part (test_alerts_worker.py, with its receivers), so nothing is sent here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from alerts_worker.handlers import (
    COMMAND_HANDLERS,
    EVENT_HANDLERS,
    AlertsContext,
    AlertsDeps,
)
from alerts_worker.store import SCHEMA, Store
from alerts_worker.subscriptions import Matcher
from contracts.alerts import (
    AlertDeliveryFailed,
    AlertTest,
    Channel,
    DeleteSubscription,
    Deliveries,
    DeliveryStatus,
    DeliveryView,
    GetSubscription,
    ListDeliveries,
    ListSubscriptions,
    Subscribe,
    Subscriptions,
    SubscriptionView,
)
from contracts.ca import CertificateStatus, CertificateStatusUpdate, CertificateView
from contracts.devices import DeviceCreated, DeviceStatus
from contracts.dms import DMSCreated, DMSStatus
from contracts.message import Message
from runtime.db import discover_migrations, migrate
from runtime.routes import merged
from runtime.testing import Handled, Harness
from tests.device_worker.device_bus import envelope_bytes

pytestmark = [pytest.mark.postgres]

# Twenty past: a ``1h`` digest's period ends on the hour, at 13:00.
NOW = datetime(2030, 6, 1, 12, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
async def pool(handler_db: asyncpg.Pool) -> asyncpg.Pool:
    await migrate(handler_db, SCHEMA, discover_migrations("alerts_worker"))
    return handler_db


@pytest.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    # One table for both queues: which queue a type arrives on is the broker's part.
    async with Harness.open(
        pool,
        schema=SCHEMA,
        routes=merged(COMMAND_HANDLERS, EVENT_HANDLERS),
        context=AlertsContext.factory(AlertsDeps(store=Store(), matcher=Matcher())),
        clock=lambda: NOW,
    ) as found:
        yield found


async def subscribed(harness: Harness, **fields: str) -> SubscriptionView:
    handled = await harness.send(Subscribe.model_validate(fields))
    return SubscriptionView.model_validate(handled.result)


def refusal(handled: Handled) -> tuple[str | None, str]:
    assert handled.reply is not None
    assert handled.reply.error is not None
    return handled.code, handled.reply.error.message


async def in_inbox(harness: Harness, message_id: str) -> bool:
    found: bool = await harness.conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.inbox WHERE id = $1)", message_id
    )
    return found


async def subscription_ids(harness: Harness) -> list[str]:
    rows = await harness.conn.fetch(f"SELECT id FROM {SCHEMA}.subscriptions")
    return sorted(row["id"] for row in rows)


# --- alert.subscribe, alert.list, alert.get, alert.delete ---------------------------


async def test_subscribe_stores_it_and_shows_the_secret_once(
    harness: Harness,
) -> None:
    handled = await harness.send(
        Subscribe(
            event="certificate.*",
            condition=' data.updated.status == "REVOKED" ',
            channel=Channel.WEBHOOK,
            target="https://hooks.example/pki",
        ),
        id_="subscribe-1",
    )
    view = SubscriptionView.model_validate(handled.result)
    assert ("certificate.*", 'data.updated.status == "REVOKED"', NOW) == (
        view.event,
        view.condition,
        view.created_at,
    )
    # A webhook without a secret gets one made (Standard Webhooks' whsec_ form).
    assert view.secret is not None
    assert view.secret.startswith("whsec_")
    assert ([], "ack") == (handled.events, handled.verdict)
    assert await in_inbox(harness, "subscribe-1")
    row = await harness.conn.fetchrow(
        f"SELECT channel, target, secret FROM {SCHEMA}.subscriptions WHERE id = $1",
        view.id,
    )
    assert row is not None
    assert ("webhook", "https://hooks.example/pki", view.secret) == tuple(row)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"event": "device.*", "channel": "email", "target": "ops at example"},
            "'ops at example' is not an e-mail address",
        ),
        (
            {
                "event": "device.*",
                "channel": "email",
                "target": "ops@example.com",
                "secret": "whsec_AAAA",
            },
            "only webhook subscriptions take a secret",
        ),
        (
            {"event": "dms.*", "channel": "slack", "target": "ftp://chat.example"},
            "the slack target must be an http(s) URL, not 'ftp://chat.example'",
        ),
        (
            {
                "event": "dms.*",
                "channel": "teams",
                "target": "https://teams.example/hook",
                "digest": "every now and then",
            },
            "digest 'every now and then'",
        ),
    ],
)
async def test_a_subscription_that_cannot_work_is_refused(
    harness: Harness, fields: dict[str, str], reason: str
) -> None:
    handled = await harness.send(Subscribe.model_validate(fields))
    code, message = refusal(handled)
    assert ("invalid", "ack") == (code, handled.verdict)
    assert message.startswith(reason)
    assert [] == await subscription_ids(harness)


async def test_a_condition_that_is_not_cel_is_refused(harness: Harness) -> None:
    handled = await harness.send(
        Subscribe(
            event="#",
            condition="data.(",
            channel=Channel.EMAIL,
            target="ops@example.com",
        )
    )
    assert "invalid" == handled.code
    assert [] == await subscription_ids(harness)


async def test_list_and_get_are_read_without_an_inbox_row(harness: Harness) -> None:
    first = await subscribed(
        harness, event="ca.#", channel="webhook", target="https://a.example/"
    )
    second = await subscribed(
        harness, event="dms.*", channel="email", target="ops@example.com"
    )
    listed = await harness.send(ListSubscriptions(), id_="list-1")
    items = Subscriptions.model_validate(listed.result).items
    # Oldest first, then by id: both were made at NOW.
    assert sorted([first.id, second.id]) == [s.id for s in items]
    # The secret is shown only in the reply to alert.subscribe.
    assert [None, None] == [s.secret for s in items]
    got = await harness.send(GetSubscription(id=first.id), id_="get-1")
    assert first.model_copy(update={"secret": None}) == SubscriptionView.model_validate(
        got.result
    )
    missing = await harness.send(GetSubscription(id="nothing"), id_="get-none")
    assert ("not_found", "no subscription with id 'nothing'") == refusal(missing)
    assert "ack" == missing.verdict
    for query in ("list-1", "get-1", "get-none"):
        assert not await in_inbox(harness, query)


async def test_delete_removes_the_subscription(harness: Harness) -> None:
    kept = await subscribed(
        harness, event="dms.*", channel="email", target="ops@example.com"
    )
    gone = await subscribed(
        harness, event="ca.*", channel="email", target="ca@example.com"
    )
    handled = await harness.send(DeleteSubscription(id=gone.id), id_="delete-1")
    assert gone.id == SubscriptionView.model_validate(handled.result).id
    assert await in_inbox(harness, "delete-1")
    assert [kept.id] == await subscription_ids(harness)
    again = await harness.send(DeleteSubscription(id=gone.id))
    assert ("not_found", "ack") == (again.code, again.verdict)


async def test_alert_test_queues_a_sample_to_send_now(harness: Harness) -> None:
    sub = await subscribed(
        harness, event="#", channel="email", target="ops@example.com", digest="1h"
    )
    handled = await harness.send(AlertTest(id=sub.id), id_="try-1")
    delivery = DeliveryView.model_validate(handled.result)
    # Now, not at the digest's end; under an id of its own, made from the request's.
    assert (sub.id, "test-try-1", "test", DeliveryStatus.PENDING, NOW) == (
        delivery.subscription_id,
        delivery.message_id,
        delivery.kind,
        delivery.status,
        delivery.next_attempt_at,
    )
    listed = await harness.send(ListDeliveries(id=sub.id), id_="deliveries-1")
    assert [delivery] == Deliveries.model_validate(listed.result).items
    assert not await in_inbox(harness, "deliveries-1")
    assert "not_found" == (await harness.send(AlertTest(id="nothing"))).code


# --- events --------------------------------------------------------------------------


def certificate(serial: str, status: CertificateStatus) -> CertificateView:
    return CertificateView(
        serial=serial,
        ca="factory-ca",
        subject="CN=dev-1",
        issuer="CN=factory-ca",
        status=status,
        not_before=NOW - timedelta(days=300),
        not_after=NOW + timedelta(days=65),
        csr_fingerprint="00",
        certificate_pem="-",
    )


def moved(serial: str, status: CertificateStatus) -> CertificateStatusUpdate:
    return CertificateStatusUpdate(
        previous=certificate(serial, CertificateStatus.ACTIVE),
        updated=certificate(serial, status),
    )


def device_created(device_id: str) -> DeviceCreated:
    return DeviceCreated(
        id=device_id,
        dms="factory",
        status=DeviceStatus.PENDING_PROVISIONING,
        slots=[],
        created_at=NOW,
    )


def dms_created(name: str) -> DMSCreated:
    return DMSCreated(
        name=name,
        status=DMSStatus.ACTIVE,
        authorized_cas=["factory-ca"],
        certificate_serial="0a",
        certificate_pem="-",
        created_at=NOW,
    )


async def test_a_batch_of_events_goes_to_the_subscriptions_it_matches(
    harness: Harness,
) -> None:
    revoked = await subscribed(
        harness,
        event="certificate.#",
        condition='data.updated.status == "REVOKED"',
        channel="webhook",
        target="https://hooks.example/revoked",
    )
    devices = await subscribed(
        harness, event="device.*", channel="email", target="ops@example.com"
    )
    digest = await subscribed(
        harness,
        event="dms.*",
        channel="slack",
        target="https://chat.example/hook",
        digest="1h",
    )
    await subscribed(
        harness, event="ca.create", channel="email", target="ca@example.com"
    )
    events: list[Message] = [
        moved("0a01", CertificateStatus.REVOKED),
        moved("0a02", CertificateStatus.ABOUT_TO_EXPIRE),  # fails the condition
        device_created("dev-1"),
        dms_created("factory"),
        dms_created("plant"),
    ]
    handled = await harness.send_all(events)
    assert [True] * 5 == [h.ok for h in handled]
    assert ["ack"] * 5 == [h.verdict for h in handled]
    assert [] == [e for h in handled for e in h.events + h.commands]
    deliveries = await harness.conn.fetch(
        f"""SELECT subscription_id, kind, status, next_attempt_at,
                   payload->>'type' AS type, payload->>'id' = message_id AS keyed,
                   payload #>> '{{data,updated,serial}}' AS serial
            FROM {SCHEMA}.deliveries ORDER BY id"""
    )
    # One notification each, due now, keyed by its event's id (what receivers see).
    assert [
        (revoked.id, "event", "pending", NOW, CertificateStatusUpdate.TYPE, True),
        (devices.id, "event", "pending", NOW, DeviceCreated.TYPE, True),
    ] == [tuple(row)[:6] for row in deliveries]
    assert "0a01" == deliveries[0]["serial"]
    items = await harness.conn.fetch(
        f"""SELECT subscription_id, due_at, item->>'type' AS type,
                   item->>'subject' AS subject, item->>'status' AS status
            FROM {SCHEMA}.digest_items ORDER BY seq"""
    )
    end_of_hour = datetime(2030, 6, 1, 13, 0, tzinfo=UTC)
    assert [
        (digest.id, end_of_hour, DMSCreated.TYPE, "", "ACTIVE"),
        (digest.id, end_of_hour, DMSCreated.TYPE, "", "ACTIVE"),
    ] == [tuple(row) for row in items]


async def test_a_subscription_is_not_told_of_its_own_failure(
    harness: Harness,
) -> None:
    """Its notification of that failure would fail too, for ever."""
    failing = await subscribed(
        harness, event="alert.#", channel="webhook", target="https://down.example/"
    )
    watcher = await subscribed(
        harness, event="alert.#", channel="email", target="ops@example.com"
    )
    failure = AlertDeliveryFailed(
        subscription_id=failing.id,
        delivery_id=7,
        message_id="event-7",
        channel=Channel.WEBHOOK,
        attempts=12,
        first_attempt_at=NOW - timedelta(days=1),
        last_error="connection refused",
    )
    assert (await harness.send(failure)).ok
    rows = await harness.conn.fetch(f"SELECT subscription_id FROM {SCHEMA}.deliveries")
    assert [watcher.id] == [row["subscription_id"] for row in rows]


async def test_garbage_is_refused_invalid_and_dead_lettered(harness: Harness) -> None:
    handled = await harness.deliver(b"\x00", type_=DeviceCreated.TYPE)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
    # An event is validated by its contract before it is matched.
    bad = await harness.deliver(
        envelope_bytes(DeviceCreated.TYPE, {"id": "dev-1"}), type_=DeviceCreated.TYPE
    )
    assert ("invalid", "dead-letter") == (bad.code, bad.verdict)
    assert refusal(bad)[1].startswith("invalid device.create:")
    unknown = await harness.deliver(
        envelope_bytes("nobody.knows", {}), type_="nobody.knows"
    )
    assert ("invalid", "dead-letter") == (unknown.code, unknown.verdict)
    assert 0 == await harness.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.deliveries")
