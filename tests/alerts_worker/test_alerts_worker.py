"""The alerts worker end to end: real RabbitMQ, PostgreSQL, HTTP receivers and SMTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from pydantic import BaseModel

from alerts_worker import signing
from contracts.alerts import (
    AlertTest,
    DeleteSubscription,
    Deliveries,
    GetSubscription,
    ListDeliveries,
    ListSubscriptions,
    Subscribe,
    Subscriptions,
    SubscriptionView,
)
from contracts.ca import CertificateStatus, CertificateStatusUpdate, CertificateView
from contracts.envelope import CloudEvent, new_message
from contracts.errors import Reply
from contracts.message import Message
from lamassu_cli.client import Client
from runtime.bus import Bus
from tests.alerts_worker.conftest import Alerts
from tests.alerts_worker.receivers import HttpReceiver
from tests.envelopes import raw_envelope

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def call(bus: Bus, request: Message) -> Reply:
    return await bus.request(Client.message(request), timeout=10)


async def subscribe(bus: Bus, **fields: Any) -> SubscriptionView:
    reply = await call(bus, Subscribe(**fields))
    assert reply.ok, reply.error
    return SubscriptionView.model_validate(reply.result)


def certificate(
    serial: str, status: CertificateStatus, ca: str = "factory-ca"
) -> CertificateView:
    now = datetime.now(UTC)
    return CertificateView(
        serial=serial,
        ca=ca,
        subject=f"CN={serial}",
        issuer=f"CN={ca}",
        status=status,
        not_before=now - timedelta(days=300),
        not_after=now + timedelta(days=20),
        csr_fingerprint="00",
        certificate_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        device_id=f"dev-{serial}",
        slot="default",
    )


def status_event(
    serial: str,
    updated: CertificateStatus = CertificateStatus.ABOUT_TO_EXPIRE,
    ca: str = "factory-ca",
) -> CloudEvent:
    return new_message(
        source="tests",
        subject=f"certificate/{serial}",
        data=CertificateStatusUpdate(
            previous=certificate(serial, CertificateStatus.ACTIVE, ca),
            updated=certificate(serial, updated, ca),
        ),
        now=datetime.now(UTC),
    )


async def publish(bus: Bus, *events: CloudEvent) -> None:
    for event in events:
        await bus.publish(bus.topology.events, event)


async def deliveries(bus: Bus, subscription_id: str) -> Deliveries:
    reply = await call(bus, ListDeliveries(id=subscription_id))
    assert reply.ok, reply.error
    return Deliveries.model_validate(reply.result)


@pytest.fixture(autouse=True)
async def _forget_subscriptions(alerts: Alerts) -> Any:
    """Each test sees only its own subscriptions (their deliveries go with them)."""
    yield
    await alerts.db.execute("DELETE FROM alerts.subscriptions")


@pytest.fixture
async def receiver() -> Any:
    found = HttpReceiver()
    await found.start()
    yield found
    await found.stop()


WHERE = (
    'data.updated.status == "ABOUT_TO_EXPIRE" && data.updated.issuer == "CN=factory-ca"'
)


async def test_matching_event_is_posted_signed_and_others_are_not(
    alerts: Alerts, receiver: HttpReceiver
) -> None:
    """A matching event arrives once as a signed CloudEvent; a non-matching one never does."""
    sub = await subscribe(
        alerts.bus,
        event="certificate.status.update",
        condition=WHERE,
        channel="webhook",
        target=receiver.url,
    )
    assert sub.secret is not None
    assert sub.secret.startswith("whsec_")
    other_ca, revoked = (
        status_event("aa01", ca="other-ca"),
        status_event("aa02", CertificateStatus.REVOKED),
    )
    matching = status_event("aa03")
    await publish(alerts.bus, other_ca, revoked, matching)

    [got] = await receiver.wait_for(1)

    assert matching.id == got.headers["webhook-id"]
    assert "application/cloudevents+json" == got.headers["content-type"]
    assert matching.id == json.loads(got.body)["id"]
    now = int(datetime.now(UTC).timestamp())
    assert signing.verify(sub.secret, got.headers, got.body, now)
    tampered = got.body.replace(b"ABOUT_TO_EXPIRE", b"ACTIVE_________")
    assert not signing.verify(sub.secret, got.headers, tampered, now)
    # The two others were consumed before the matching one (one queue, in order).
    found = await deliveries(alerts.bus, sub.id)
    assert [matching.id] == [d.message_id for d in found.items]
    assert 1 == len(receiver.received)


async def test_email_has_plain_text_and_html_that_say_what_to_do(
    alerts: Alerts,
) -> None:
    """An e-mail reaches a real SMTP server with readable text and HTML bodies."""
    await subscribe(
        alerts.bus,
        event="certificate.status.update",
        condition='data.updated.serial == "bb01"',
        channel="email",
        target="pki-admins@example.com",
    )
    before = len(alerts.smtp.mailbox.messages)
    await publish(alerts.bus, status_event("bb01"))

    message = (await alerts.smtp.wait_for(before + 1))[before]

    assert "pki-admins@example.com" == message["To"]
    assert "Certificate bb01 is now ABOUT_TO_EXPIRE" in message["Subject"]
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None
    assert rich is not None
    text, html = plain.get_content(), rich.get_content()
    assert "What to do: Renew it before" in text
    assert "dev-bb01" in text
    assert "factory-ca" in text
    assert "<h2>Certificate bb01 is now ABOUT_TO_EXPIRE</h2>" in html


@pytest.mark.parametrize("channel", ["teams", "slack"])
async def test_chat_formats(
    alerts: Alerts, receiver: HttpReceiver, channel: str
) -> None:
    """Teams gets an Adaptive Card message, Slack a Block Kit message with text."""
    serial = f"cc-{channel}"
    await subscribe(
        alerts.bus,
        event="certificate.#",
        condition=f'subject == "certificate/{serial}"',
        channel=channel,
        target=receiver.url,
    )
    await publish(alerts.bus, status_event(serial))

    [got] = await receiver.wait_for(1)
    body = json.loads(got.body)

    title = f"Certificate {serial} is now ABOUT_TO_EXPIRE"
    if channel == "teams":
        card = body["attachments"][0]
        assert "application/vnd.microsoft.card.adaptive" == card["contentType"]
        assert "AdaptiveCard" == card["content"]["type"]
        assert title == card["content"]["body"][0]["text"]
    else:
        assert title == body["text"]
        assert "header" == body["blocks"][0]["type"]


async def test_receiver_down_for_a_while_gets_everything_once_back(
    alerts: Alerts,
) -> None:
    """Events sent while the receiver is down are all delivered once it is up."""
    receiver = HttpReceiver()  # not started yet: connection refused
    sub = await subscribe(
        alerts.bus,
        event="certificate.status.update",
        condition='data.updated.ca == "down-ca"',
        channel="webhook",
        target=receiver.url,
    )
    events = [status_event(f"dd{i:02}", ca="down-ca") for i in range(20)]
    await publish(alerts.bus, *events)
    async with asyncio.timeout(15):
        while True:
            attempts = await alerts.db.fetchval(
                "SELECT count(*) FROM alerts.attempts a JOIN alerts.deliveries d "
                "ON d.id = a.delivery_id WHERE d.subscription_id = $1 AND NOT a.ok",
                sub.id,
            )
            if attempts >= 40:  # each tried and failed at least twice, on average
                break
            await asyncio.sleep(0.05)
    await receiver.start()
    try:
        got = await receiver.wait_for(20)
        ids = [r.headers["webhook-id"] for r in got]
        assert {e.id for e in events} == set(ids)
        assert len(ids) == len(set(ids))  # none twice
        async with asyncio.timeout(10):  # settled just after the receiver answered
            while True:
                found = await deliveries(alerts.bus, sub.id)
                if all("delivered" == d.status for d in found.items):
                    break
                await asyncio.sleep(0.05)
        assert 20 == len(found.items)
        assert all(
            d.attempts[0].error is not None and not d.attempts[0].ok
            for d in found.items
        )
    finally:
        await receiver.stop()


async def test_permanently_failing_receiver_ends_in_delivery_failed(
    alerts: Alerts, receiver: HttpReceiver
) -> None:
    """After the retry period, the notification is failed and alert.delivery.failed published."""
    receiver.status = 500
    sub = await subscribe(
        alerts.bus,
        event="certificate.status.update",
        condition='data.updated.serial == "ee01"',
        channel="webhook",
        target=receiver.url,
    )
    failures: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_failed(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await failures.put(json.loads(message.body))

    await alerts.bus.subscribe("alert.delivery.failed", on_failed)
    event = status_event("ee01")
    await publish(alerts.bus, event)
    await receiver.wait_for(2)  # tried and retried
    alerts.clock.offset += timedelta(hours=25)  # past the default 24 h retry period
    try:
        async with asyncio.timeout(15):
            while True:
                failed = await failures.get()
                if failed["data"]["subscription_id"] == sub.id:
                    break
    finally:
        alerts.clock.offset -= timedelta(hours=25)

    assert event.id == failed["data"]["message_id"]
    assert "HTTP 500 Internal Server Error" == failed["data"]["last_error"]
    [delivery] = (await deliveries(alerts.bus, sub.id)).items
    assert "failed" == delivery.status
    assert len(delivery.attempts) >= 2
    assert all("HTTP 500 Internal Server Error" == a.error for a in delivery.attempts)


async def test_digest_gathers_a_sweeps_transitions_into_one_message(
    alerts: Alerts, receiver: HttpReceiver
) -> None:
    """Fifty transitions in one period become one webhook with counts and the full list."""
    sub = await subscribe(
        alerts.bus,
        event="certificate.status.update",
        condition='data.updated.ca in ["sweep-a", "sweep-b"]',
        channel="webhook",
        target=receiver.url,
        digest="1h",
    )
    events = [
        status_event(f"ff{i:02}", ca="sweep-a" if i % 5 else "sweep-b")
        for i in range(50)
    ]
    # Just past an hour boundary on the worker's clock, so the period cannot end midway.
    now = alerts.clock()
    shift = now.replace(minute=0, second=1, microsecond=0) + timedelta(hours=1) - now
    alerts.clock.offset += shift
    await publish(alerts.bus, *events)
    async with asyncio.timeout(15):
        while await alerts.db.fetchval(
            "SELECT count(*) FROM alerts.digest_items WHERE subscription_id = $1",
            sub.id,
        ) < len(events):
            await asyncio.sleep(0.05)
    assert [] == receiver.received  # nothing until the period ends
    alerts.clock.offset += timedelta(hours=1)
    try:
        [got] = await receiver.wait_for(1)
    finally:
        alerts.clock.offset -= timedelta(hours=1) + shift

    digest = json.loads(got.body)
    assert "alert.digest" == digest["type"]
    assert digest["id"] == got.headers["webhook-id"]
    data = digest["data"]
    assert 50 == data["total"]
    assert [
        {"ca": "sweep-a", "status": "ABOUT_TO_EXPIRE", "count": 40},
        {"ca": "sweep-b", "status": "ABOUT_TO_EXPIRE", "count": 10},
    ] == data["counts"]
    assert [e.id for e in events] == [i["event_id"] for i in data["items"]]
    assert 20 == len(data["first"])
    assert 1 == len(receiver.received)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"condition": "data.updated.status === 'X'"}, "condition is not valid CEL"),
        ({"condition": "data.x == "}, "condition is not valid CEL"),
        ({"event": "certificate..update"}, "event"),
        ({"target": "ftp://example.com/x"}, "must be an http(s) URL"),
        ({"digest": "fortnightly"}, "is not a period"),
        ({"digest": "1s"}, "the period must be"),
        ({"secret": "hunter2"}, "starts with 'whsec_'"),
        (
            {"channel": "email", "target": "a@b.c\r\nBcc: x@y.z"},
            "is not an e-mail address",
        ),
        ({"channel": "pager"}, "channel"),
    ],
    ids=[
        "cel-operator",
        "cel-incomplete",
        "pattern",
        "url",
        "digest",
        "digest-short",
        "secret",
        "mail-injection",
        "channel",
    ],
)
async def test_bad_subscriptions_are_refused_with_one_line(
    alerts: Alerts, fields: dict[str, str], reason: str
) -> None:
    """A bad expression (or any bad part) is refused at subscribe time; nothing is stored."""
    before = await alerts.db.fetchval("SELECT count(*) FROM alerts.subscriptions")
    request = {
        "event": "certificate.status.update",
        "channel": "webhook",
        "target": "http://127.0.0.1:9/hook",
        **fields,
    }
    body = raw_envelope(
        type_="alert.subscribe",
        source="tests",
        data=_Raw(request),
        now=datetime.now(UTC),
    )
    reply = await alerts.bus.request(body, timeout=10)

    assert not reply.ok
    assert reply.error is not None
    assert "invalid" == reply.error.code
    assert reason in reply.error.message
    assert "\n" not in reply.error.message
    assert before == await alerts.db.fetchval(
        "SELECT count(*) FROM alerts.subscriptions"
    )


class _Raw(BaseModel):
    """Whatever fields a test sends, unchecked by the contract (garbage in)."""

    model_config = {"extra": "allow"}

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(**values)


async def test_list_show_test_deliveries_delete(
    alerts: Alerts, receiver: HttpReceiver
) -> None:
    """The subscription commands: the secret is shown once, test sends a sample now."""
    sub = await subscribe(
        alerts.bus, event="device.#", channel="webhook", target=receiver.url
    )
    listed = Subscriptions.model_validate(
        (await call(alerts.bus, ListSubscriptions())).result
    )
    assert [sub.id] == [s.id for s in listed.items]
    assert [None] == [s.secret for s in listed.items]
    shown = await call(alerts.bus, GetSubscription(id=sub.id))
    assert SubscriptionView.model_validate(shown.result).secret is None

    tested = await call(alerts.bus, AlertTest(id=sub.id))
    assert tested.ok, tested.error
    [got] = await receiver.wait_for(1)
    assert "alert.test" == json.loads(got.body)["type"]
    assert signing.verify(
        sub.secret or "", got.headers, got.body, int(datetime.now(UTC).timestamp())
    )
    async with asyncio.timeout(10):
        while (await deliveries(alerts.bus, sub.id)).items[0].status != "delivered":
            await asyncio.sleep(0.05)
    [delivery] = (await deliveries(alerts.bus, sub.id)).items
    assert [True] == [a.ok for a in delivery.attempts]

    deleted = await call(alerts.bus, DeleteSubscription(id=sub.id))
    assert deleted.ok
    for request in (
        GetSubscription(id=sub.id),
        DeleteSubscription(id=sub.id),
        ListDeliveries(id=sub.id),
    ):
        missing = await call(alerts.bus, request)
        assert missing.error is not None
        assert "not_found" == missing.error.code


async def test_garbage_event_is_dead_lettered_and_the_worker_goes_on(
    alerts: Alerts, receiver: HttpReceiver
) -> None:
    """An event whose data breaks its contract is dead-lettered; the next one is delivered."""
    sub_id = (
        await subscribe(
            alerts.bus,
            event="certificate.status.update",
            condition='data.updated.serial == "gg01"',
            channel="webhook",
            target=receiver.url,
        )
    ).id
    garbage = CloudEvent(
        id=str(uuid.uuid4()),
        source="tests",
        type="certificate.status.update",
        time=datetime.now(UTC),
        data={"updated": "not a certificate"},
    )
    await publish(alerts.bus, garbage, status_event("gg01"))
    [got] = await receiver.wait_for(1)
    assert "gg01" in got.body.decode()
    assert 1 == len((await deliveries(alerts.bus, sub_id)).items)


async def test_a_notification_that_cannot_be_rendered_is_retried_and_the_rest_go_on(
    alerts: Alerts, receiver: HttpReceiver
) -> None:
    """A row that crashes its rendering is recorded as a failed attempt; others deliver."""
    mail = await subscribe(
        alerts.bus, event="ca.#", channel="email", target="ops@example.com"
    )
    hook = await subscribe(
        alerts.bus,
        event="certificate.status.update",
        condition='data.updated.serial == "hh01"',
        channel="webhook",
        target=receiver.url,
    )
    broken = {
        "type": "alert.digest",
        "id": "broken",
        "data": {"counts": [{"no": "ca"}]},
    }
    await alerts.db.execute(
        "INSERT INTO alerts.deliveries (subscription_id, message_id, kind, payload, "
        "created_at, next_attempt_at) VALUES ($1, 'broken', 'digest', $2::jsonb, now(), now())",
        mail.id,
        json.dumps(broken),
    )
    await publish(alerts.bus, status_event("hh01"))

    [got] = await receiver.wait_for(1)
    assert "hh01" in got.body.decode()
    async with asyncio.timeout(10):
        while not (found := await deliveries(alerts.bus, mail.id)).items[0].attempts:
            await asyncio.sleep(0.05)
    assert "internal error: KeyError" == found.items[0].attempts[0].error
    assert "pending" == found.items[0].status
    assert hook.id != mail.id


async def test_email_digest_lists_the_first_items_and_attaches_them_all_as_csv(
    alerts: Alerts,
) -> None:
    """A digest by e-mail: counts and first items in the body, every item in a CSV."""
    sub = await subscribe(
        alerts.bus,
        event="certificate.status.update",
        condition='data.updated.ca == "mail-digest"',
        channel="email",
        target="night-shift@example.com",
        digest="daily at 08:00 UTC",
    )
    events = [status_event(f"ii{i:02}", ca="mail-digest") for i in range(25)]
    now = alerts.clock()
    # Just past 08:00 on the worker's clock, so the period cannot end midway.
    shift = (
        now.replace(hour=8, minute=0, second=1, microsecond=0) + timedelta(days=1) - now
    )
    alerts.clock.offset += shift
    moved = shift
    before = len(alerts.smtp.mailbox.messages)
    try:
        await publish(alerts.bus, *events)
        async with asyncio.timeout(15):
            while await alerts.db.fetchval(
                "SELECT count(*) FROM alerts.digest_items WHERE subscription_id = $1",
                sub.id,
            ) < len(events):
                await asyncio.sleep(0.05)
        alerts.clock.offset += timedelta(days=1)
        moved += timedelta(days=1)
        message = (await alerts.smtp.wait_for(before + 1))[before]
    finally:
        alerts.clock.offset -= moved

    assert "Digest: 25 events" in message["Subject"]
    plain = message.get_body(("plain",))
    assert plain is not None
    text = plain.get_content()
    assert "CA mail-digest, ABOUT_TO_EXPIRE  25" in text
    assert "and 5 more" in text  # the first 20 are listed
    [attachment] = list(message.iter_attachments())
    assert "alerts.csv" == attachment.get_filename()
    rows = attachment.get_content().strip().splitlines()
    assert 26 == len(rows)  # a header and every item
    assert {e.id for e in events} == {row.split(",")[-1] for row in rows[1:]}
