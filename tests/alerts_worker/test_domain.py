"""Pure parts of the alerts worker: patterns, CEL conditions, digests, signatures,
notices, retry delays, subscription checks. No I/O."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts_worker import conditions, digests, notices, signing
from alerts_worker.delivery import retry_delay
from alerts_worker.errors import InvalidSubscription
from alerts_worker.subscriptions import Matcher, Subscription, new_subscription
from contracts.alerts import Channel, Subscribe

NOW = datetime(2026, 12, 6, 14, 30, tzinfo=UTC)


def event(**updated: Any) -> dict[str, Any]:
    return {
        "id": "e1",
        "type": "certificate.status.update",
        "source": "/ca_worker",
        "subject": "certificate/ab01",
        "time": NOW.isoformat(),
        "data": {
            "previous": {"status": "ACTIVE", "ca": "factory-ca"},
            "updated": {
                "serial": "ab01",
                "status": "ABOUT_TO_EXPIRE",
                "ca": "factory-ca",
                "device_id": "plc-7",
                "not_after": "2027-01-01T00:00:00+00:00",
                **updated,
            },
        },
    }


@pytest.mark.parametrize(
    ("pattern", "type_", "expected"),
    [
        ("certificate.status.update", "certificate.status.update", True),
        ("certificate.status.update", "certificate.create", False),
        ("device.*", "device.create", True),
        ("device.*", "device.status.update", False),
        ("device.#", "device.status.update", True),
        ("#", "ca.create", True),
        ("*.status.update", "ca.status.update", True),
        ("#.update", "dms.update", True),
    ],
)
def test_patterns_match_as_amqp_topics(
    pattern: str, type_: str, expected: bool
) -> None:
    """``*`` is one word and ``#`` any number, as on the bus itself."""
    assert expected == conditions.matches_type(conditions.pattern(pattern), type_)


@pytest.mark.parametrize("text", ["", "a..b", "Device.*", "a.b c", "a.#x"])
def test_bad_patterns_are_refused(text: str) -> None:
    with pytest.raises(conditions.InvalidPattern, match="is not dot-separated"):
        conditions.pattern(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'data.updated.status == "ABOUT_TO_EXPIRE" && data.updated.ca == "factory-ca"',
            True,
        ),
        (
            'data.updated.status == "ABOUT_TO_EXPIRE" && data.updated.ca == "other"',
            False,
        ),
        ('"factory-ca" == data.updated.ca', True),
        (
            'subject.startsWith("certificate/") && type == "certificate.status.update"',
            True,
        ),
        ('data.updated.status in ["EXPIRED", "REVOKED"]', False),
        ("data.previous.status != data.updated.status", True),
        ("data.updated.missing == 1", False),  # an error is no match
        ('data.updated.status == "ABOUT_TO_EXPIRE" || data.nothing.here', True),
        ("1 + 1", False),  # not a boolean
        ('data.updated.device_id.matches("^plc-[0-9]+$")', True),
    ],
    ids=[
        "and",
        "and-false",
        "reversed",
        "functions",
        "in",
        "compare-fields",
        "missing",
        "or",
        "not-bool",
        "regex",
    ],
)
def test_conditions_are_cel_over_the_cloudevent(text: str, expected: bool) -> None:
    """The CloudEvent's attributes are the variables; only a boolean true matches."""
    condition = conditions.Condition.compile(text)
    found = event()
    assert expected == condition.holds(found, conditions.activation(found))


def test_equality_shortcut_agrees_with_cel() -> None:
    """The ``path == "literal"`` conjuncts are found, and skip CEL only when false."""
    condition = conditions.Condition.compile(
        'data.updated.ca == "factory-ca" && data.updated.serial.size() > 2 && type == "x"'
    )
    assert (
        (("type",), "x"),
        (("data", "updated", "ca"), "factory-ca"),
    ) == tuple(sorted(condition.equalities, key=len))
    found = event()
    assert not condition.holds(found, conditions.activation(found))


@pytest.mark.parametrize("text", ["data.x ==", "data.x === 1", "(a", "a &&", '"open'])
def test_bad_conditions_are_refused_with_one_line(text: str) -> None:
    with pytest.raises(conditions.InvalidCondition, match="not valid CEL") as caught:
        conditions.Condition.compile(text)
    assert "\n" not in str(caught.value)


def test_digest_periods() -> None:
    """Intervals end on epoch multiples; a daily time ends at that time, in UTC."""
    assert datetime(2026, 12, 6, 15, tzinfo=UTC) == digests.parse_digest(
        "1h"
    ).next_start(NOW)
    assert datetime(2026, 12, 7, 8, tzinfo=UTC) == digests.parse_digest(
        "daily at 08:00 UTC"
    ).next_start(NOW)
    for bad in ("5s", "2d", "daily at 25:00", "weekly", ""):
        with pytest.raises(digests.InvalidDigest):
            digests.parse_digest(bad)


def test_digest_counts_by_ca_and_status_and_lists_all() -> None:
    items = [digests.item(event(ca=ca, serial=str(i))) for i, ca in enumerate("aab")]
    data = digests.digest_data("s1", NOW, items, first=2)
    assert [
        {"ca": "a", "status": "ABOUT_TO_EXPIRE", "count": 2},
        {"ca": "b", "status": "ABOUT_TO_EXPIRE", "count": 1},
    ] == data["counts"]
    assert (3, 2, 3) == (data["total"], len(data["first"]), len(data["items"]))
    csv = digests.to_csv(items)
    assert csv.startswith("time,type,subject,ca,status,previous_status,event_id\r\n")
    assert 4 == csv.count("\r\n")


SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_signature_verifies_and_a_tampered_body_does_not() -> None:
    """Standard Webhooks: HMAC-SHA256 of id.timestamp.body, base64, prefixed v1."""
    sent = signing.headers(SECRET, "msg_1", 1_700_000_000, b'{"a":1}')
    assert signing.verify(SECRET, sent, b'{"a":1}', 1_700_000_010)
    assert not signing.verify(SECRET, sent, b'{"a":2}', 1_700_000_010)
    assert not signing.verify(SECRET, sent, b'{"a":1}', 1_700_000_000 + 301)  # replay
    other = "whsec_" + base64.b64encode(b"j" * 32).decode()
    assert not signing.verify(other, sent, b'{"a":1}', 1_700_000_010)


def test_signature_matches_the_specs_example() -> None:
    """The example of the Standard Webhooks spec (its reference libraries' test)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - the spec's test vector
    body = b'{"test": 2432232314}'
    assert "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" == signing.sign(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body
    )


@pytest.mark.parametrize("secret", ["hunter2", "whsec_***", "whsec_" + "QUFB"])
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(signing.InvalidSecret):
        signing.secret_key(secret)


def test_notice_says_what_happened_and_what_to_do() -> None:
    notice = notices.event_notice(event())
    assert "Certificate ab01 is now ABOUT_TO_EXPIRE" == notice.title
    assert notice.action.startswith("Renew it before 2027-01-01")
    assert "plc-7" in notice.action
    assert ("Status", "ACTIVE -> ABOUT_TO_EXPIRE") in notice.facts
    text = notices.text_body(notice)
    assert "What to do: Renew it before" in text
    hostile = notices.html_body(notices.event_notice(event(serial="<script>")))
    assert "<script>" not in hostile
    assert "&lt;script&gt;" in hostile


def test_chat_formats() -> None:
    notice = notices.event_notice(event(ca="<b>&"))
    card = notices.teams(notice)["attachments"][0]
    assert "application/vnd.microsoft.card.adaptive" == card["contentType"]
    assert "1.4" == card["content"]["version"]
    message = notices.slack(notice)
    assert notice.title == message["text"]
    assert "&lt;b&gt;&amp;" in str(message["blocks"])


def test_retry_delays_grow_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    delays = [retry_delay(n, 5, 3600, rng) for n in range(1, 15)]
    assert 2.5 <= delays[0] <= 5
    assert 5 <= delays[1] <= 10
    assert all(1800 <= d <= 3600 for d in delays[-3:])
    assert len(set(delays)) == len(delays)


def subscribe(**fields: Any) -> Subscribe:
    values = {"event": "#", "channel": "webhook", "target": "https://hooks.example/x"}
    return Subscribe.model_validate(values | fields)


def test_new_subscription_makes_a_secret_for_webhooks_only() -> None:
    made = new_subscription(subscribe(), NOW)
    assert made.secret is not None
    assert made.secret.startswith("whsec_")
    mail = new_subscription(subscribe(channel="email", target="ops@example.com"), NOW)
    assert mail.secret is None
    with pytest.raises(InvalidSubscription, match="only webhook"):
        new_subscription(subscribe(channel="slack", secret=SECRET), NOW)
    with pytest.raises(InvalidSubscription, match="user name or password"):
        new_subscription(subscribe(target="https://u:p@hooks.example/x"), NOW)


def sub(
    id_: str, condition: str | None = None, digest: str | None = None
) -> Subscription:
    return Subscription(
        id_, "certificate.#", condition, Channel.WEBHOOK, "https://x", None, digest, NOW
    )


def test_matcher_routes_events_to_deliveries_and_digests() -> None:
    """Each match is a delivery, or an item due at the end of its digest period."""
    subs = [
        sub("all"),
        sub("other-ca", 'data.updated.ca == "other"'),
        sub("daily", digest="daily at 08:00 UTC"),
    ]
    routed = Matcher().route(subs, [event(), {**event(), "type": "ca.create"}], NOW)
    assert [("all", "e1")] == [
        (d.subscription_id, d.message_id) for d in routed.deliveries
    ]
    assert [("daily", "e1", datetime(2026, 12, 7, 8, tzinfo=UTC))] == [
        (s, e, due) for s, e, due, _ in routed.digest_items
    ]


def test_a_subscription_is_not_told_of_its_own_failures() -> None:
    failed = {
        "id": "f1",
        "type": "alert.delivery.failed",
        "data": {"subscription_id": "watcher"},
        "time": NOW.isoformat(),
    }
    subs = [sub("watcher"), sub("other")]
    subs = [
        Subscription(
            s.id, "alert.#", None, Channel.WEBHOOK, "https://x", None, None, NOW
        )
        for s in subs
    ]
    routed = Matcher().route(subs, [failed], NOW + timedelta(seconds=1))
    assert ["other"] == [d.subscription_id for d in routed.deliveries]
