"""Commands, queries, results and events of the alerts service (subscriptions to events).

The alerts service only observes the PKI: its commands manage subscriptions and its one
event, ``alert.delivery.failed``, says that a notification could not be delivered.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from pydantic import AwareDatetime, Field

from contracts.message import Message, Model

__all__ = [
    "ALERT_DIGEST",
    "ALERT_TEST",
    "AlertDeliveryFailed",
    "AlertTest",
    "Channel",
    "DeleteSubscription",
    "Deliveries",
    "DeliveryAttempt",
    "DeliveryStatus",
    "DeliveryView",
    "GetSubscription",
    "ListDeliveries",
    "ListSubscriptions",
    "Subscribe",
    "SubscriptionView",
    "Subscriptions",
]

# Sent to a subscription's target only, never on the bus: a digest, and ``alert test``.
ALERT_DIGEST = "alert.digest"
ALERT_TEST = "alert.test"
# An AMQP topic pattern (AMQP 0-9-1 topic exchange): dot-separated words, ``*`` one
# word, ``#`` zero or more.
_PATTERN = r"^(#|\*|[a-z0-9][a-z0-9\-]*)(\.(#|\*|[a-z0-9][a-z0-9\-]*))*$"


class Channel(enum.StrEnum):
    """Where a subscription's notifications go."""

    WEBHOOK = "webhook"
    EMAIL = "email"
    TEAMS = "teams"
    SLACK = "slack"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Subscribe(Message):
    """``alert.subscribe``: notify ``target`` of events matching the pattern and condition.

    ``condition`` is a CEL expression over the CloudEvent (``type``, ``subject``,
    ``source``, ``id``, ``time``, ``data``); ``digest`` batches, e.g. ``1h`` or
    ``daily at 08:00 UTC``. ``secret`` (webhooks: ``whsec_<base64>``) is made by the
    service when absent, and shown once, in this command's reply.
    """

    TYPE: ClassVar[str] = "alert.subscribe"
    event: str = Field(min_length=1, max_length=200, pattern=_PATTERN)
    condition: str | None = Field(default=None, max_length=2000)
    channel: Channel
    target: str = Field(min_length=1, max_length=2000)
    secret: str | None = Field(default=None, max_length=200)
    digest: str | None = Field(default=None, max_length=100)


class ListSubscriptions(Message):
    TYPE: ClassVar[str] = "alert.list"


class GetSubscription(Message):
    TYPE: ClassVar[str] = "alert.get"
    id: str = Field(min_length=1, max_length=100)


class DeleteSubscription(Message):
    TYPE: ClassVar[str] = "alert.delete"
    id: str = Field(min_length=1, max_length=100)


class AlertTest(Message):
    """``alert.test``: queue a sample notification to the subscription's target now."""

    TYPE: ClassVar[str] = "alert.test"
    id: str = Field(min_length=1, max_length=100)


class ListDeliveries(Message):
    TYPE: ClassVar[str] = "alert.deliveries"
    id: str = Field(min_length=1, max_length=100)
    limit: int = Field(default=50, ge=1, le=1000)


class SubscriptionView(Model):
    """A subscription; ``secret`` is only ever set in the reply to ``alert.subscribe``."""

    id: str
    event: str
    condition: str | None
    channel: Channel
    target: str
    digest: str | None
    created_at: AwareDatetime
    secret: str | None = None


class Subscriptions(Model):
    items: list[SubscriptionView]


class DeliveryAttempt(Model):
    number: int
    at: AwareDatetime
    ok: bool
    error: str | None = None


class DeliveryView(Model):
    """One notification and its attempts; ``message_id`` is the idempotency key."""

    id: int
    subscription_id: str
    message_id: str
    kind: str
    status: DeliveryStatus
    created_at: AwareDatetime
    next_attempt_at: AwareDatetime | None
    attempts: list[DeliveryAttempt]


class Deliveries(Model):
    items: list[DeliveryView]


class AlertDeliveryFailed(Message):
    """``alert.delivery.failed``: a notification was given up after its retry period."""

    TYPE: ClassVar[str] = "alert.delivery.failed"
    subscription_id: str
    delivery_id: int
    message_id: str
    channel: Channel
    attempts: int
    first_attempt_at: AwareDatetime
    last_error: str
