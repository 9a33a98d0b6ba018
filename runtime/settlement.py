"""How every delivered message ends: who replies, who acks, what is dead-lettered.

Only the dispatcher acknowledges, and only here (one table, house rule 24):

=========================================  =============================================
a sender not allowed to send its type       reply ``forbidden`` if asked; dead-letter;
(``contracts.senders``, DESIGN §2a)         one audit line (sender, type, id)
malformed body, unknown type, bad data      reply ``invalid`` if asked; dead-letter
handler raises a Failure (not Transient)    its run is undone (to its savepoint, or
                                            the whole transaction) and its messages go
                                            again, each in a savepoint; reply with its
                                            code; ack (the rest of the batch commits)
a transient failure (``runtime.faults``:    the whole batch is rolled back and run
Transient, broker, DB or engine away,       again after a capped, jittered backoff,
deadlock)                                   unsettled meanwhile, for as long as the
                                            failure lasts: it never uses the queue's
                                            delivery limit (5), which is for bugs.
                                            Messages whose channel closed meanwhile
                                            are dropped from the retry: the broker
                                            delivers them again
a bug (any other exception)                 the batch is rolled back and each of its
                                            messages is run again alone; the one that
                                            fails alone gets ``unavailable`` and is
                                            dead-lettered
success                                     commit, wake the relay, reply; ack
success with ``forward``                    publish it keeping reply_to; ack
success of a READ route with events         publish them (confirmed), reply; ack; if
(``Events.DIRECT``)                         they fail, nack with requeue
an id already processed (redelivered, or    re-send the stored reply; ack
twice in one batch)
past its ``deadline`` (a command whose      not applied: reply ``unavailable`` (the
sender has stopped waiting)                 sender is gone); ack
=========================================  =============================================

Replies go to the request's ``reply_to`` on the default exchange; a message with no
``reply_to`` (an event, a fire-and-forget command) is only settled.

A batch whose messages are all acked is acknowledged with one ack of its last delivery
tag (``multiple``) once the batch before it is settled, provided nothing else below that
tag is outstanding on the channel, which only this dispatcher consumes (``Bus.consume``
opens a channel per queue); otherwise each message is settled on its own.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import structlog

from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode, Reply
from runtime.bus import BusUnavailable
from runtime.delivery import (
    CHANNEL_GONE,
    Channel,
    Delivery,
    Incoming,
    Transport,
    bind,
    channel_of,
)
from runtime.errors import Failure
from runtime.routes import Outcome

__all__ = ["Settlement", "Settler", "Verdict", "poison", "refusal", "settled_by"]

log = structlog.get_logger("dispatch")


class Verdict(enum.Enum):
    ACK = "ack"
    REQUEUE = "requeue"  # nack with requeue: the broker delivers it again
    DEAD_LETTER = "dead-letter"  # reject without requeue: to ``<queue>.dead``


@dataclass(frozen=True, slots=True)
class Settlement:
    """What happens to a message once its batch has committed (or failed)."""

    reply: Reply | None = None
    forward: CloudEvent | None = None
    verdict: Verdict = Verdict.ACK
    # A READ route's events and commands: published before the ack (no outbox).
    publish: tuple[tuple[str, CloudEvent], ...] = ()


REQUEUE = Settlement(verdict=Verdict.REQUEUE)


def poison(envelope: CloudEvent) -> Settlement:
    return Settlement(
        reply=Reply.failure(
            ErrorCode.UNAVAILABLE,
            f"internal error; message {envelope.id} was dead-lettered",
        ),
        verdict=Verdict.DEAD_LETTER,
    )


def refusal(exc: Failure) -> Settlement:
    log.info("request_refused", code=str(exc.code), reason=str(exc))
    return Settlement(reply=Reply.failure(exc.code, str(exc)))


def settled_by(outcome: Outcome, *, direct: bool = False) -> Settlement:
    """A handler's outcome as a settlement; ``direct``: its events and commands go
    out before the ack (a READ route's)."""
    if outcome.forward is not None:
        settlement = Settlement(forward=outcome.forward)
    else:
        settlement = Settlement(reply=Reply.success(outcome.result))
    if not direct:
        return settlement
    publish = tuple(("events", e) for e in outcome.events) + tuple(
        ("commands", c) for c in outcome.commands
    )
    return replace(settlement, publish=publish) if publish else settlement


def _word(settlement: Settlement) -> str:
    """A settlement in one word, for ``lamassu_messages_total``."""
    if settlement.verdict is Verdict.REQUEUE:
        return "requeued"
    if settlement.verdict is Verdict.DEAD_LETTER:
        return "dead_lettered"
    if settlement.forward is not None:
        return "forwarded"
    if settlement.reply is not None and not settlement.reply.ok:
        return "refused"
    return "ok"


class Settler:
    """Replies, forwards, direct publishes and acknowledgements of one queue."""

    def __init__(self, bus: Transport, observe: Callable[[str, str], None]) -> None:
        self._bus = bus
        # Told (message type, outcome) of each settled message: the metrics hook.
        self._observe = observe
        # Delivery tags handed over and not yet settled, per consumer channel: what a
        # batch may acknowledge with one ``multiple`` ack (AMQP 0-9-1 §1.8.3.13 acks
        # every tag up to and including it).
        self._outstanding: dict[Channel, set[int]] = {}

    def hand_over(self, message: Incoming) -> None:
        """A message arrived: outstanding until settled."""
        if message.delivery_tag is None:
            return  # consumed without acknowledgements: nothing to settle
        channel = channel_of(message)
        if channel is None:
            return  # closed already: the broker delivers it again
        if channel not in self._outstanding:
            # A new channel (a reconnection): what was outstanding on closed ones
            # the broker delivers again, on this one.
            for gone in [c for c in self._outstanding if c.is_closed]:
                del self._outstanding[gone]
        self._outstanding.setdefault(channel, set()).add(message.delivery_tag)

    async def dead_letter(
        self, message: Incoming, reason: str, code: ErrorCode = ErrorCode.INVALID
    ) -> None:
        if code is ErrorCode.INVALID:  # a refused sender has its audit line already
            log.warning("message_dead_lettered", reason=reason)
        self._observe(message.type or "unknown", "dead_lettered")
        await self._answer(message, Reply.failure(code, reason))
        await self._conclude(message, Verdict.DEAD_LETTER)

    async def settle(self, delivery: Delivery, settlement: Settlement) -> None:
        """One message: answer, then ack, requeue or dead-letter it."""
        if await self._respond(delivery, settlement):
            await self._conclude(delivery.message, settlement.verdict)

    async def settle_direct(
        self, answered: Sequence[tuple[Delivery, Settlement | None]]
    ) -> None:
        """Answer READ messages; the events they caused are published first, all in
        one batch, and a message is acked only once its events are confirmed. A
        message without a settlement is left to the broker to deliver again."""
        kept = [(d, s) for d, s in answered if s is not None]
        settlements = await self._published([s for _, s in kept])
        await asyncio.gather(
            *(self.settle(d, s) for (d, _), s in zip(kept, settlements, strict=True))
        )

    async def settle_batch(
        self,
        batch: Sequence[Delivery],
        settlements: Mapping[str, Settlement],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Answer each message, then acknowledge the batch with one ack when it can."""
        # Published concurrently on one confirming channel, so confirms come together.
        answered = await asyncio.gather(
            *(self._respond(d, settlements[d.id]) for d in batch)
        )
        if previous is not None:
            # In batch order: the previous batch's tags are then no longer outstanding.
            await asyncio.wait([previous])
        verdicts = [settlements[d.id].verdict for d in batch]
        if all(answered) and all(v is Verdict.ACK for v in verdicts):
            last = self._last_of_only_outstanding(batch)
            if last is not None:
                await self._conclude(last, Verdict.ACK, multiple=True)
                self._settled(d.message for d in batch)
                return
        await asyncio.gather(
            *(
                self._conclude(d.message, verdict)
                for d, verdict, ok in zip(batch, verdicts, answered, strict=True)
                if ok
            )
        )

    def _last_of_only_outstanding(self, batch: Sequence[Delivery]) -> Incoming | None:
        """The batch's last message when acking up to it acks the batch and nothing
        else: one channel, and no other tag outstanding below its last one."""
        channel = channel_of(batch[0].message)
        tags = {d.message.delivery_tag for d in batch}
        if channel is None or any(channel_of(d.message) is not channel for d in batch):
            return None
        known = {tag for tag in tags if tag is not None}
        if len(known) != len(tags):
            return None
        last = max(batch, key=lambda d: d.message.delivery_tag or 0).message
        last_tag = max(known)
        others = self._outstanding.get(channel, set()) - known
        if any(tag < last_tag for tag in others):
            return None
        return last

    async def _respond(self, delivery: Delivery, settlement: Settlement) -> bool:
        """Send the reply or the forward; False when the channel went meanwhile."""
        message = delivery.message
        bind(message, delivery.envelope)
        self._observe(delivery.envelope.type, _word(settlement))
        try:
            if settlement.forward is not None:
                await self._forward(message, settlement.forward)
            elif settlement.reply is not None:
                await self._answer(message, settlement.reply)
                if settlement.reply.ok:
                    log.info("message_handled")
        except CHANNEL_GONE as exc:
            # Unacknowledged: the broker delivers it again, and the inbox answers it.
            log.warning("message_unsettled", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def _conclude(
        self, message: Incoming, verdict: Verdict, *, multiple: bool = False
    ) -> None:
        try:
            if verdict is Verdict.ACK:
                await message.ack(multiple=multiple)
            elif verdict is Verdict.REQUEUE:
                await message.nack(requeue=True)
            else:
                await message.reject(requeue=False)
        except CHANNEL_GONE as exc:
            # Unacknowledged: the broker delivers it again, and the inbox answers it.
            log.warning("message_unsettled", error=f"{type(exc).__name__}: {exc}")
        finally:
            if not multiple:
                self._settled([message])

    def _settled(self, messages: Iterable[Incoming]) -> None:
        for message in messages:
            channel = channel_of(message)
            outstanding = None if channel is None else self._outstanding.get(channel)
            if outstanding is not None and message.delivery_tag is not None:
                outstanding.discard(message.delivery_tag)

    async def _forward(self, message: Incoming, forward: CloudEvent) -> None:
        forward = forward.model_copy(update={"correlationid": message.correlation_id})
        try:
            await self._bus.publish(
                self._bus.topology.commands,
                forward,
                reply_to=message.reply_to,
                mandatory=True,
            )
        except BusUnavailable as exc:
            log.warning("forward_failed", to=forward.type, error=str(exc))
            await self._answer(message, Reply.failure(ErrorCode.UNAVAILABLE, str(exc)))
        else:
            log.info("message_forwarded", to=forward.type)

    async def _answer(self, message: Incoming, reply: Reply) -> None:
        if message.reply_to:
            await self._bus.reply(message.reply_to, message.correlation_id, reply)

    async def _published(
        self, settlements: Sequence[Settlement]
    ) -> Sequence[Settlement]:
        """Publish the settlements' events and commands; if that fails, the messages
        that caused them are requeued. Their redelivery publishes them again under
        the same ids (READ handlers make their ids from what they read), which
        consumers absorb by deduplicating on the id."""
        messages = [m for s in settlements for m in s.publish]
        if not messages:
            return settlements
        topology = self._bus.topology
        try:
            await self._bus.publish_batch(
                [
                    (
                        topology.exchange(kind),
                        m.type,
                        m.id,
                        m.model_dump_json().encode(),
                    )
                    for kind, m in messages
                ]
            )
        except (*CHANNEL_GONE, BusUnavailable, OSError) as exc:
            log.warning("events_unpublished", error=f"{type(exc).__name__}: {exc}")
            return [REQUEUE if s.publish else s for s in settlements]
        return settlements
