"""One function per alerts message type, plus the routing tables at the bottom.

Commands manage subscriptions. Every event on the bus comes to ``route_events``, which
queues a notification (or a digest item) for each subscription it matches, in the
batch's transaction; the delivery loop (``delivery.py``) sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pydantic import BaseModel

from alerts_worker.errors import SubscriptionNotFound
from alerts_worker.store import Store
from alerts_worker.subscriptions import Matcher, NewDelivery, new_subscription
from contracts.alerts import (
    ALERT_TEST,
    AlertTest,
    DeleteSubscription,
    Deliveries,
    GetSubscription,
    ListDeliveries,
    ListSubscriptions,
    Subscribe,
    Subscriptions,
)
from contracts.catalog import EVENTS
from contracts.envelope import CloudEvent
from contracts.message import Message
from contracts.names import Source
from runtime.routes import Batch, ContextFactory, Mode, Outcome, Route, routes

__all__ = ["COMMAND_HANDLERS", "EVENT_HANDLERS", "AlertsContext", "AlertsDeps"]

SOURCE = Source.ALERTS


@dataclass(frozen=True, slots=True)
class AlertsDeps:
    """What every alerts handler may use, built once in ``__main__``."""

    store: Store
    matcher: Matcher


@dataclass(frozen=True, slots=True)
class AlertsContext:
    """Per message: the connection, the clock reading, the envelope as it came."""

    conn: asyncpg.Connection
    now: datetime
    envelope: CloudEvent
    deps: AlertsDeps

    @classmethod
    def factory(cls, deps: AlertsDeps) -> ContextFactory:
        """How the dispatcher makes one per message (``runtime.routes``)."""

        def made(
            conn: asyncpg.Connection, envelope: CloudEvent, now: datetime
        ) -> AlertsContext:
            return cls(conn, now, envelope, deps)

        return made


async def subscribe(cmd: Subscribe, ctx: AlertsContext) -> Outcome:
    sub = new_subscription(cmd, ctx.now)
    await ctx.deps.store.insert_subscription(ctx.conn, sub)
    # The only time the secret is shown: the subscriber configures its receiver with it.
    return Outcome(sub.view(with_secret=True))


async def list_subscriptions(_cmd: ListSubscriptions, ctx: AlertsContext) -> Outcome:
    subs = await ctx.deps.store.subscriptions(ctx.conn)
    return Outcome(Subscriptions(items=[s.view() for s in subs]))


async def get_subscription(cmd: GetSubscription, ctx: AlertsContext) -> Outcome:
    sub = await ctx.deps.store.subscription(ctx.conn, cmd.id)
    if sub is None:
        raise SubscriptionNotFound(cmd.id)
    return Outcome(sub.view())


async def delete_subscription(cmd: DeleteSubscription, ctx: AlertsContext) -> Outcome:
    sub = await ctx.deps.store.delete_subscription(ctx.conn, cmd.id)
    if sub is None:
        raise SubscriptionNotFound(cmd.id)
    return Outcome(sub.view())


class _Sample(BaseModel):
    subscription_id: str
    message: str
    action: str


async def send_test(cmd: AlertTest, ctx: AlertsContext) -> Outcome:
    """Queue a sample notification now (digest or not), with its own id."""
    sub = await ctx.deps.store.subscription(ctx.conn, cmd.id)
    if sub is None:
        raise SubscriptionNotFound(cmd.id)
    sample = CloudEvent(
        id=f"test-{ctx.envelope.id}",
        source=SOURCE,
        type=ALERT_TEST,
        subject=f"subscription/{sub.id}",
        time=ctx.now,
        data=_Sample(
            subscription_id=sub.id,
            message=f"a test of subscription {sub.id} to {sub.event!r}",
            action="None: this notification checks that the channel works.",
        ).model_dump(),
    )
    await ctx.deps.store.add_deliveries(
        ctx.conn,
        [NewDelivery(sub.id, sample.id, "test", sample.model_dump(mode="json"))],
        ctx.now,
    )
    found = await ctx.deps.store.deliveries(ctx.conn, sub.id, 1)
    return Outcome(found[0])


async def list_deliveries(cmd: ListDeliveries, ctx: AlertsContext) -> Outcome:
    if await ctx.deps.store.subscription(ctx.conn, cmd.id) is None:
        raise SubscriptionNotFound(cmd.id)
    items = await ctx.deps.store.deliveries(ctx.conn, cmd.id, cmd.limit)
    return Outcome(Deliveries(items=items))


async def route_events(batch: Batch[Message, AlertsContext]) -> list[Outcome]:
    """A batch of events (one connection, one transaction) to the subscriptions they
    match: one read of the subscriptions, one insert of what they cause."""
    ctx = batch.ctx
    store = ctx.deps.store
    subs = await store.subscriptions(ctx.conn)
    events = [c.envelope.model_dump(mode="json") for _, c in batch.items]
    routed = ctx.deps.matcher.route(subs, events, ctx.now)
    await store.add_deliveries(ctx.conn, routed.deliveries, ctx.now)
    await store.add_digest_items(ctx.conn, routed.digest_items)
    return [Outcome() for _ in batch.items]


COMMAND_HANDLERS = routes(
    Route(Subscribe, subscribe),
    Route(ListSubscriptions, list_subscriptions, mode=Mode.READ),
    Route(GetSubscription, get_subscription, mode=Mode.READ),
    Route(DeleteSubscription, delete_subscription),
    Route(AlertTest, send_test),
    Route(ListDeliveries, list_deliveries, mode=Mode.READ),
)

# Every event type of the catalog, validated by its contract before it is matched.
EVENT_HANDLERS = routes(
    *(Route(model, handle_batch=route_events) for model in EVENTS.values())
)
