"""How a worker says which handler takes which message, and what a handler returns.

A route binds a message model to a handler that takes one message (``handle``) or a
run of them (``handle_batch``); the dispatcher derives the other, so a worker writes
whichever suits it: a batch handler where one statement per batch beats one per
message (enrollments, certificate events), a per-message one elsewhere.

Each route also says how it runs (``Mode``) and where its events go (``Events``):

- ``BATCHED`` (the default): in one transaction with whatever else arrived, with the
  inbox and the outbox (``Events.OUTBOX``): its events commit with its changes.
- ``ALONE``: in a transaction of its own, beside the others (a message that is itself
  a large set-based unit of work, like a sweep shard). Events through the outbox.
- ``READ``: no transaction, no inbox row, each statement committed on its own: for a
  handler whose effects are idempotent, so that running it again (a redelivery, a
  refused batch run again one by one) changes nothing more: a query, an authorization
  (the DMS worker's claims an unowned device with one idempotent upsert), an event
  made from an event. Its events can only be published directly before the ack
  (``Events.DIRECT``): a redelivery publishes them again, so their ids must come from
  what the handler read. The route has to say so.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg

from contracts.envelope import CloudEvent, envelope_of
from contracts.message import Message, Model

__all__ = [
    "Batch",
    "BatchHandler",
    "Context",
    "ContextFactory",
    "Events",
    "Handler",
    "Mode",
    "Outcome",
    "Route",
    "merged",
    "routes",
]

M = TypeVar("M", bound=Message)
C = TypeVar("C")
D = TypeVar("D")

# A worker's handler context from the connection, the message's envelope and the clock.
ContextFactory = Callable[[asyncpg.Connection, CloudEvent, datetime], Any]


# Not slots: called through its alias (``CaContext = Context[CaDeps]``), typing sets
# ``__orig_class__``, which a frozen slots dataclass answers with a TypeError.
@dataclass(frozen=True)
class Context(Generic[D]):
    """What a handler is given with its message: the connection (in the batch's
    transaction, for a writing route), the clock reading, the id of the request that
    caused it (the correlation id of what it sends), and the worker's dependencies."""

    conn: asyncpg.Connection
    now: datetime
    correlation_id: str | None
    deps: D

    @classmethod
    def factory(cls, deps: D) -> ContextFactory:
        """How the dispatcher makes one per message: a message's cause is the
        request it correlates with, or itself."""

        def made(conn: asyncpg.Connection, envelope: CloudEvent, now: datetime) -> Any:
            return cls(conn, now, envelope.correlationid or envelope.id, deps)

        return made


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler did: the reply's result and the messages it caused.

    ``forward`` hands the request on to another worker, which answers the original
    requester (reply_to and correlation id are kept): one hop fewer than relaying.
    ``commands`` are fire-and-forget (nobody replies), sent with the events.
    """

    result: Model | None = None
    events: Sequence[CloudEvent] = field(default_factory=tuple)
    forward: CloudEvent | None = None
    commands: Sequence[CloudEvent] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Batch(Generic[M, C]):
    """A run of consecutive messages of one type, each with its context, in arrival
    order. Every context of a batch shares one connection (in one transaction, for a
    writing route) and one clock reading; ``ctx`` is the one to use for the batch's
    own statements, each item's for what is the item's (its events' correlation)."""

    items: Sequence[tuple[M, C]]

    @property
    def ctx(self) -> C:
        return self.items[0][1]

    def __len__(self) -> int:
        return len(self.items)


Handler = Callable[[M, C], Awaitable[Outcome]]
# An outcome per message of the batch, in its order.
BatchHandler = Callable[[Batch[M, C]], Awaitable[Sequence[Outcome]]]


class Mode(enum.Enum):
    BATCHED = "batched"
    ALONE = "alone"
    READ = "read"


class Events(enum.Enum):
    OUTBOX = "outbox"  # written in the handler's transaction, relayed after commit
    DIRECT = "direct"  # published (confirmed) before the message is acked
    NONE = "none"  # the handler sends nothing: an outcome with messages is a bug


@dataclass(frozen=True, slots=True)
class Route(Generic[M, C]):
    """A message model and its handler: ``handle``, ``handle_batch``, or both."""

    model: type[M]
    handle: Handler[M, C] | None = None
    handle_batch: BatchHandler[M, C] | None = None
    mode: Mode = Mode.BATCHED
    # Where its events and commands go; by default the outbox, and nowhere for a
    # READ route (a query), which must say Events.DIRECT to send any.
    events: Events | None = None
    # The envelope of this route's messages, data typed: decoded in one pass.
    envelope: type[CloudEvent[M]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "envelope", envelope_of(self.model))
        name = self.model.TYPE
        if self.handle is None and self.handle_batch is None:
            raise TypeError(f"route {name}: give handle or handle_batch")
        read = self.mode is Mode.READ
        events = self.events or (Events.NONE if read else Events.OUTBOX)
        object.__setattr__(self, "events", events)
        if read and events is Events.OUTBOX:
            raise TypeError(
                f"route {name}: a READ route has no transaction to write an outbox "
                "in: its events are Events.DIRECT, with ids derived from what it read"
            )
        if not read and events is Events.DIRECT:
            raise TypeError(
                f"route {name}: a writing route's events commit with its changes, "
                "through the outbox (Events.OUTBOX)"
            )

    def sends(self, outcome: Outcome) -> Outcome:
        """``outcome`` once checked against ``events``: a route declared to send
        nothing that sends something is a bug (caught before anything is sent)."""
        if self.events is Events.NONE and (outcome.events or outcome.commands):
            raise RuntimeError(
                f"route {self.model.TYPE} sent messages but declares none: give it "
                "events=Events.DIRECT, and derive their ids from what it read"
            )
        return outcome

    @property
    def batches(self) -> bool:
        """Whether runs of this type go to a batch handler (else one by one)."""
        return self.handle_batch is not None

    async def one(self, message: M, ctx: C) -> Outcome:
        """One message: ``handle``, or ``handle_batch`` with a batch of one."""
        if self.handle is not None:
            return await self.handle(message, ctx)
        return (await self.many([(message, ctx)]))[0]

    async def many(self, items: Sequence[tuple[M, C]]) -> list[Outcome]:
        """A run: ``handle_batch``, or ``handle`` for each message in turn."""
        if self.handle_batch is None:
            return [await self.one(message, ctx) for message, ctx in items]
        outcomes = list(await self.handle_batch(Batch(items)))
        if len(outcomes) != len(items):
            raise RuntimeError(
                f"{self.model.TYPE}: {len(outcomes)} outcomes for {len(items)} messages"
            )
        return outcomes


def routes(*table: Route[Any, C]) -> Mapping[str, Route[Any, C]]:
    """A route table keyed by each model's type; a type routed twice is a bug."""
    found: dict[str, Route[Any, C]] = {}
    for route in table:
        if route.model.TYPE in found:
            raise TypeError(f"{route.model.TYPE} is routed twice")
        found[route.model.TYPE] = route
    return found


def merged(*tables: Mapping[str, Route[Any, C]]) -> Mapping[str, Route[Any, C]]:
    """Several route tables as one (a worker's capabilities); a type twice is a bug."""
    return routes(*(route for table in tables for route in table.values()))
