"""The requester's side of request/reply: one exclusive reply queue per connection,
a future per pending request (by correlation id), and replies believed only from the
worker that owns the request's type (DESIGN §2a)."""

from __future__ import annotations

import asyncio

import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from contracts.errors import ErrorCode, Reply
from contracts.names import Topology
from contracts.senders import answerers, role_of

__all__ = ["Replies"]

log = structlog.get_logger("bus")


class Replies:
    """Pending requests and the queue their replies come to."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        *,
        checks_senders: bool,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._checks_senders = checks_senders
        self._queue: AbstractQueue | None = None
        self._pending: dict[str, tuple[asyncio.Future[Reply], str]] = {}
        self._lock = asyncio.Lock()

    def expect(self, correlation_id: str, type_: str) -> asyncio.Future[Reply]:
        """A future for the reply to a request of ``type_``; ``forget`` it after."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = (future, type_)
        return future

    def forget(self, correlation_id: str) -> None:
        self._pending.pop(correlation_id, None)

    def cancel(self) -> None:
        """Closing: nobody waits for a reply any more."""
        for future, _type in self._pending.values():
            future.cancel()

    async def queue(self) -> str:
        """The reply queue's name (declared on first use)."""
        async with self._lock:
            if self._queue is None:
                channel = await self._connection.channel()
                queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                await queue.consume(self._on_reply, no_ack=True)
                self._queue = queue
            return self._queue.name

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        pending = self._pending.get(message.correlation_id or "")
        if pending is None or pending[0].done():
            return  # a late reply to a request that already timed out
        future, type_ = pending
        if self._checks_senders:
            role = role_of(message.user_id, self._topology.prefix)
            if role not in answerers(type_):
                # Anyone who may reply at all can route to this queue through the
                # default exchange: only the worker that owns the request is believed.
                log.warning(
                    "sender_refused",
                    sender=message.user_id,
                    type=f"reply to {type_}",
                    id=message.correlation_id,
                )
                return
        try:
            future.set_result(Reply.model_validate_json(message.body))
        except ValidationError:
            future.set_result(
                Reply.failure(
                    ErrorCode.UNAVAILABLE, "the worker sent a malformed reply"
                )
            )
