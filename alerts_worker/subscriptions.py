"""Subscriptions: checking one when it is created, and which of them an event goes to.
Pure: no I/O; ``now`` is passed in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from alerts_worker import conditions, digests, signing
from alerts_worker.errors import InvalidSubscription
from contracts.alerts import AlertDeliveryFailed, Channel, Subscribe, SubscriptionView

__all__ = ["Matcher", "NewDelivery", "Routed", "Subscription", "new_subscription"]

# One address (RFC 5321 §4.1.2 Mailbox, without quoted local parts or literals):
# enough to refuse typos and header injection (no spaces, commas or line breaks).
_MAILBOX = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$"
)


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    event: str
    condition: str | None
    channel: Channel
    target: str
    secret: str | None
    digest: str | None
    created_at: datetime

    def view(self, *, with_secret: bool = False) -> SubscriptionView:
        return SubscriptionView(
            id=self.id,
            event=self.event,
            condition=self.condition,
            channel=self.channel,
            target=self.target,
            digest=self.digest,
            created_at=self.created_at,
            secret=self.secret if with_secret else None,
        )


@dataclass(frozen=True, slots=True)
class NewDelivery:
    subscription_id: str
    message_id: str
    kind: str
    payload: Mapping[str, Any]


def new_subscription(cmd: Subscribe, now: datetime) -> Subscription:
    """A subscription from the command, every part checked; raises InvalidSubscription
    with one line saying what is wrong."""
    try:
        conditions.pattern(cmd.event)
        if cmd.condition is not None and cmd.condition.strip():
            conditions.Condition.compile(cmd.condition)
        if cmd.digest is not None:
            digests.parse_digest(cmd.digest)
        secret = _secret(cmd)
    except (conditions.InvalidCondition, conditions.InvalidPattern) as exc:
        raise InvalidSubscription(str(exc)) from None
    except (digests.InvalidDigest, signing.InvalidSecret) as exc:
        raise InvalidSubscription(str(exc)) from None
    _check_target(cmd.channel, cmd.target)
    return Subscription(
        id=uuid.uuid4().hex[:12],
        event=cmd.event.strip(),
        condition=cmd.condition.strip()
        if cmd.condition and cmd.condition.strip()
        else None,
        channel=cmd.channel,
        target=cmd.target.strip(),
        secret=secret,
        digest=cmd.digest.strip() if cmd.digest else None,
        created_at=now,
    )


def _secret(cmd: Subscribe) -> str | None:
    if cmd.channel is not Channel.WEBHOOK:
        if cmd.secret is not None:
            raise InvalidSubscription("only webhook subscriptions take a secret")
        return None
    if cmd.secret is None:
        return signing.new_secret()
    signing.secret_key(cmd.secret.strip())
    return cmd.secret.strip()


def _check_target(channel: Channel, target: str) -> None:
    target = target.strip()
    if channel is Channel.EMAIL:
        if not _MAILBOX.match(target):
            raise InvalidSubscription(f"{target!r} is not an e-mail address")
        return
    parts = urlsplit(target)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise InvalidSubscription(
            f"the {channel.value} target must be an http(s) URL, not {target[:100]!r}"
        )
    if parts.username or parts.password:
        raise InvalidSubscription(
            f"the {channel.value} URL must not carry a user name or password"
        )


@dataclass(slots=True)
class Routed:
    """Where a batch of events goes: notifications now, and items for digests."""

    deliveries: list[NewDelivery] = field(default_factory=list)
    digest_items: list[tuple[str, str, datetime, Mapping[str, str]]] = field(
        default_factory=list
    )


@dataclass(slots=True)
class Matcher:
    """Matches events against subscriptions; keeps each subscription's compiled
    pattern and condition (compiling CEL costs milliseconds; matching, microseconds)."""

    _compiled: dict[
        tuple[str, str, str | None],
        tuple[tuple[str, ...], conditions.Condition | None],
    ] = field(default_factory=dict)

    def _compile(
        self, sub: Subscription
    ) -> tuple[tuple[str, ...], conditions.Condition | None]:
        key = (sub.id, sub.event, sub.condition)
        found = self._compiled.get(key)
        if found is None:
            condition = (
                conditions.Condition.compile(sub.condition) if sub.condition else None
            )
            found = (conditions.pattern(sub.event), condition)
            self._compiled[key] = found
        return found

    def route(
        self,
        subscriptions: Sequence[Subscription],
        events: Sequence[Mapping[str, Any]],
        now: datetime,
    ) -> Routed:
        """Each event (CloudEvent JSON) to each subscription it matches."""
        live = {(s.id, s.event, s.condition) for s in subscriptions}
        for stale in [k for k in self._compiled if k not in live]:
            del self._compiled[stale]
        compiled = [(s, *self._compile(s)) for s in subscriptions]
        routed = Routed()
        for event in events:
            type_ = str(event.get("type", ""))
            activation: Any = None
            for sub, words, condition in compiled:
                if not conditions.matches_type(words, type_) or _own_failure(
                    sub, event
                ):
                    continue
                if condition is not None:
                    if activation is None:
                        activation = conditions.activation(event)
                    if not condition.holds(event, activation):
                        continue
                if sub.digest is None:
                    routed.deliveries.append(
                        NewDelivery(sub.id, str(event["id"]), "event", event)
                    )
                else:
                    due_at = digests.parse_digest(sub.digest).next_start(now)
                    routed.digest_items.append(
                        (sub.id, str(event["id"]), due_at, digests.item(event))
                    )
        return routed


def _own_failure(sub: Subscription, event: Mapping[str, Any]) -> bool:
    """A subscription is not told that its own notification failed: that one would
    fail too, and fail again a retry period later, for ever."""
    data = event.get("data")
    return (
        event.get("type") == AlertDeliveryFailed.TYPE
        and isinstance(data, Mapping)
        and data.get("subscription_id") == sub.id
    )
