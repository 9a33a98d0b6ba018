"""The adapter between a queue and a worker's handlers: decode, transaction, call,
outbox and inbox, reply, acknowledge. Handlers never see aio-pika.

How each outcome is settled (one table, house rule 24):

=====================================  ========================================
malformed body, unknown type, bad data  reply ``invalid`` if asked; dead-letter
handler raises a Failure (not Transient) reply with its code; ack
handler raises Transient / DB or engine  nack with requeue; the queue's delivery
unavailable                             limit dead-letters it after 5 tries
a bug (any other exception)             reply ``unavailable``; dead-letter
success                                 commit, wake the relay, reply; ack
success with ``forward``                publish it keeping reply_to; ack
a redelivered, already processed id     re-send the stored reply; ack
=====================================  ========================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage
from pydantic import BaseModel, ValidationError

from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode, Reply
from engines.errors import EngineUnavailable
from runtime.bus import Bus, BusUnavailable
from runtime.errors import Failure, Transient
from runtime.outbox import OutboxRelay, write_commands, write_events

__all__ = ["Dispatcher", "Handler", "Outcome", "Route", "first_error"]

log = structlog.get_logger("dispatch")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler did: the reply's result and the events it caused.

    ``forward`` hands the request on to another worker, which answers the original
    requester (reply_to and correlation id are kept): one hop fewer than relaying.
    """

    result: BaseModel | None = None
    events: Sequence[CloudEvent] = field(default_factory=tuple)
    forward: CloudEvent | None = None
    # Fire-and-forget commands (no reply expected), sent through the outbox with the events.
    commands: Sequence[CloudEvent] = field(default_factory=tuple)


Handler = Callable[[Any, Any], Awaitable[Outcome]]
ContextFactory = Callable[[asyncpg.Connection, CloudEvent, datetime], Any]


@dataclass(frozen=True, slots=True)
class Route:
    """A message type's contract model and the handler that takes it.

    ``writes=False`` marks a handler that changes nothing (queries, authorization):
    it runs without a transaction or an inbox row, since repeating it is harmless.
    """

    model: type[BaseModel]
    handler: Handler
    writes: bool = True


def first_error(exc: ValidationError) -> str:
    """One line from a pydantic error: the field path and what is wrong with it."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "message"
    return f"{where}: {err['msg']}"


def _now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Consumes one queue for one worker schema."""

    def __init__(
        self,
        *,
        routes: Mapping[str, Route],
        pool: asyncpg.Pool,
        schema: str,
        bus: Bus,
        relay: OutboxRelay | None,
        context: ContextFactory,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._routes = routes
        self._pool = pool
        self._schema = schema
        self._bus = bus
        self._relay = relay
        self._context = context
        self._clock = clock

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, correlation_id=message.correlation_id
        )
        try:
            envelope = CloudEvent.model_validate_json(message.body)
        except ValidationError as exc:
            await self._dead_letter(
                message, f"not a CloudEvents 1.0 JSON message: {first_error(exc)}"
            )
            return
        structlog.contextvars.bind_contextvars(
            message_type=envelope.type, subject=envelope.subject
        )
        route = self._routes.get(envelope.type)
        if route is None:
            await self._dead_letter(message, f"unknown message type {envelope.type!r}")
            return
        try:
            request = route.model.model_validate(envelope.data)
        except ValidationError as exc:
            await self._dead_letter(
                message, f"invalid {envelope.type}: {first_error(exc)}"
            )
            return
        await self._handle(message, envelope, route, request)

    async def _handle(
        self,
        message: AbstractIncomingMessage,
        envelope: CloudEvent,
        route: Route,
        request: BaseModel,
    ) -> None:
        try:
            if route.writes:
                outcome, reply = await self._run_once(envelope, route, request)
            else:
                async with self._pool.acquire() as conn:
                    ctx = self._context(conn, envelope, self._clock())
                    outcome = await route.handler(request, ctx)
                reply = Reply.success(outcome.result)
        except (
            Transient,
            EngineUnavailable,
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
        ) as exc:
            log.warning(
                "message_retried", error=str(exc), redelivered=message.redelivered
            )
            await message.nack(requeue=True)
            return
        except Failure as exc:
            log.info("request_refused", code=str(exc.code), reason=str(exc))
            await self._answer(message, Reply.failure(exc.code, str(exc)))
            await message.ack()
            return
        except Exception:
            log.exception("handler_crashed")
            await self._answer(
                message,
                Reply.failure(
                    ErrorCode.UNAVAILABLE,
                    f"internal error; message {envelope.id} was dead-lettered",
                ),
            )
            await message.reject(requeue=False)
            return
        if (
            outcome is not None
            and (outcome.events or outcome.commands)
            and self._relay is not None
        ):
            self._relay.wake()
        if outcome is not None and outcome.forward is not None:
            forward = outcome.forward.model_copy(
                update={"correlationid": message.correlation_id}
            )
            try:
                await self._bus.publish(
                    self._bus.topology.commands,
                    forward,
                    reply_to=message.reply_to,
                    mandatory=True,
                )
            except BusUnavailable as exc:
                log.warning("forward_failed", to=forward.type, error=str(exc))
                await self._answer(
                    message, Reply.failure(ErrorCode.UNAVAILABLE, str(exc))
                )
            else:
                log.info("message_forwarded", to=forward.type)
        elif reply is not None:
            await self._answer(message, reply)
            log.info("message_handled")
        await message.ack()

    async def _run_once(
        self, envelope: CloudEvent, route: Route, request: BaseModel
    ) -> tuple[Outcome | None, Reply | None]:
        """Handle in one transaction with an inbox row; a repeat gets the stored reply."""
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchrow(
                f"INSERT INTO {self._schema}.inbox (id) VALUES ($1) "
                "ON CONFLICT (id) DO NOTHING RETURNING id",
                envelope.id,
            )
            if stored is None:
                previous = await conn.fetchval(
                    f"SELECT reply FROM {self._schema}.inbox WHERE id = $1", envelope.id
                )
                log.info("message_duplicate")
                return None, (Reply.model_validate(previous) if previous else None)
            ctx = self._context(conn, envelope, self._clock())
            outcome = await route.handler(request, ctx)
            await write_events(conn, self._schema, outcome.events)
            await write_commands(conn, self._schema, outcome.commands)
            reply = Reply.success(outcome.result)
            await conn.execute(
                f"UPDATE {self._schema}.inbox SET reply = $2 WHERE id = $1",
                envelope.id,
                reply.model_dump(mode="json"),
            )
            return outcome, reply

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        log.warning("message_dead_lettered", reason=reason)
        await self._answer(message, Reply.failure(ErrorCode.INVALID, reason))
        await message.reject(requeue=False)

    async def _answer(self, message: AbstractIncomingMessage, reply: Reply) -> None:
        if message.reply_to:
            await self._bus.reply(message.reply_to, message.correlation_id, reply)
