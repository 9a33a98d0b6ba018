"""The adapter between a queue and a worker's routes: decode, check the sender, route,
run, settle. Handlers never see aio-pika.

A message is decoded once, as its route's model: the AMQP ``type`` property (every
producer of ours sets it to the CloudEvents type, which is also the routing key)
names the route, and ``CloudEvent[model]`` validates envelope and data in one pass;
a message without the property, or with one no route knows, is decoded in two steps
so that its error names what is wrong. Then, by the route's ``Mode``:

- ``runtime.batches``: writing routes, in transactions with the inbox and outbox;
- ``runtime.reads``: READ routes, outside any transaction;
- ``runtime.settlement``: how each of them ends (the table), the only place that
  replies, forwards and acknowledges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from pydantic import ValidationError

from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode, first_error
from contracts.message import Message
from runtime.batches import Batches
from runtime.delivery import Delivery, Incoming, Lane, Pool, Transport, bind
from runtime.faults import Backoff
from runtime.outbox import OutboxRelay
from runtime.reads import Reads
from runtime.routes import ContextFactory, Mode, Outcome, Route
from runtime.settlement import Settler

__all__ = ["ContextFactory", "Dispatcher", "Outcome", "Route", "first_error"]

log = structlog.get_logger("dispatch")


def _now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Consumes one queue for one worker schema: READ messages as they come, the
    others in batches, one batch transaction at a time."""

    def __init__(
        self,
        *,
        routes: Mapping[str, Route[Any, Any]],
        pool: Pool | asyncpg.Pool,
        schema: str,
        bus: Transport,
        relay: OutboxRelay | None,
        context: ContextFactory,
        clock: Callable[[], datetime] = _now,
        transient: tuple[type[BaseException], ...] = (),
        backoff: Backoff | None = None,
        observe: Callable[[str, str], None] | None = None,
    ) -> None:
        self._routes = routes
        self._bus = bus
        self._closing = False
        self._settler = Settler(bus, observe or (lambda _type, _outcome: None))
        # Settlements and ALONE batches in flight are held by the lane: so that they
        # are not garbage-collected midway, and so that drain() can wait for them.
        self._lane = Lane(
            pool=pool,
            context=context,
            clock=clock,
            transient=transient,
            backoff=backoff or Backoff(initial=0.2, cap=30.0),
            settler=self._settler,
            closing=lambda: self._closing,
        )
        self._batches = Batches(self._lane, schema=schema, relay=relay)
        self._reads = Reads(self._lane)

    async def __call__(self, message: Incoming) -> None:
        bind(message, None)
        self._settler.hand_over(message)
        delivery = await self._decode(message)
        if delivery is None:
            return
        mode = delivery.route.mode
        if mode is Mode.READ:
            await self._reads.take(delivery)
        elif mode is Mode.ALONE:
            await self._batches.alone(delivery)
        else:
            self._batches.add(delivery)

    def close(self) -> None:
        """Stop retrying: messages waiting out a transient failure are left to the
        broker, which delivers them again once this consumer is gone."""
        self._closing = True

    async def drain(self) -> None:
        """Wait until every message handed over so far is settled (tests, shutdown)."""
        while self._batches.running or self._reads.running or self._lane.settling:
            await asyncio.gather(
                *(
                    task
                    for task in (self._batches.running, self._reads.running)
                    if task is not None
                )
            )
            await asyncio.gather(*self._lane.settling)

    async def _decode(self, message: Incoming) -> Delivery | None:
        """The message as its route's model, or None once it is dead-lettered."""
        route = self._routes.get(message.type or "")
        if route is None:
            return await self._decode_slowly(message)
        # Before anything else: an unauthorized message is not even validated.
        if await self._refused(message, route.model.TYPE, message.message_id):
            return None
        try:
            envelope = route.envelope.model_validate_json(message.body)
        except ValidationError as exc:
            await self._invalid(message, route.model.TYPE, exc)
            return None
        bind(message, envelope)
        if envelope.type != route.model.TYPE:
            await self._settler.dead_letter(
                message,
                f"the envelope's type {envelope.type!r} is not its AMQP type "
                f"{route.model.TYPE!r}",
            )
            return None
        return Delivery(message, envelope, route)

    async def _decode_slowly(self, message: Incoming) -> Delivery | None:
        """A message whose AMQP type names no route: the envelope first, for an error
        that says what is wrong with it, then its data."""
        try:
            bare = CloudEvent.model_validate_json(message.body)
        except ValidationError as exc:
            await self._settler.dead_letter(
                message, f"not a CloudEvents 1.0 JSON message: {first_error(exc)}"
            )
            return None
        bind(message, bare)
        if await self._refused(message, bare.type, bare.id):
            return None
        route = self._routes.get(bare.type)
        if route is None:
            await self._settler.dead_letter(
                message, f"unknown message type {bare.type!r}"
            )
            return None
        try:
            data: Message = route.model.model_validate(bare.data)
        except ValidationError as exc:
            await self._settler.dead_letter(
                message, f"invalid {bare.type}: {first_error(exc)}"
            )
            return None
        return Delivery(message, bare.model_copy(update={"data": data}), route)

    async def _refused(self, message: Incoming, type_: str, id_: str | None) -> bool:
        """Dead-letter a message whose sender may not send its type (DESIGN §2a)."""
        refusal = self._bus.sender_refusal(message, type_)
        if refusal is None:
            return False
        log.warning(
            "sender_refused",
            sender=message.user_id,
            type=type_,
            id=id_,
            reason=refusal,
        )
        await self._settler.dead_letter(message, refusal, ErrorCode.FORBIDDEN)
        return True

    async def _invalid(
        self, message: Incoming, type_: str, exc: ValidationError
    ) -> None:
        """Name what is wrong: the envelope, or the data (as ``invalid <type>``)."""
        err = exc.errors()[0]
        loc = err["loc"]
        if loc and loc[0] == "data":
            where = ".".join(str(part) for part in loc[1:]) or "data"
            reason = f"invalid {type_}: {where}: {err['msg']}"
        else:
            reason = f"not a CloudEvents 1.0 JSON message: {first_error(exc)}"
        await self._settler.dead_letter(message, reason)
