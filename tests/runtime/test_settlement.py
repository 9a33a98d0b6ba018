"""The settlement table (runtime/settlement.py), row by row, without RabbitMQ: the real
dispatcher over runtime.testing's in-memory bus, on PostgreSQL in a transaction that
is rolled back. tests/runtime/test_dispatch.py proves the same on the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import asyncpg
import pytest

from contracts.envelope import CloudEvent, new_message
from contracts.message import Message
from runtime.db import migrate
from runtime.errors import Conflict, Transient
from runtime.routes import Batch, Events, Mode, Outcome, Route, routes
from runtime.testing import Harness, MemoryBus

pytestmark = [pytest.mark.postgres]

SCHEMA = "settle"


class Note(Message):
    TYPE: ClassVar[str] = "test.note"
    text: str


class Noted(Note):
    TYPE: ClassVar[str] = "test.noted"


class Ask(Message):
    """Read-only: answered from what is stored."""

    TYPE: ClassVar[str] = "test.ask"
    text: str


class Pass(Message):
    """Handed on to another worker, which answers the requester."""

    TYPE: ClassVar[str] = "test.pass"
    text: str


@dataclass(frozen=True)
class Ctx:
    conn: asyncpg.Connection
    envelope: CloudEvent
    now: datetime


@dataclass
class Notes:
    """Stores a note and emits an event, or refuses, or fails, by the note's text."""

    flaky: dict[str, int] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)  # batch sizes handled

    async def one(self, note: Note, ctx: Ctx) -> Outcome:
        self.calls.append(1)
        return await self._store(note, ctx)

    async def batch(self, batch: Batch[Note, Ctx]) -> list[Outcome]:
        self.calls.append(len(batch))
        return [await self._store(note, ctx) for note, ctx in batch.items]

    async def _store(self, note: Note, ctx: Ctx) -> Outcome:
        await ctx.conn.execute(f"INSERT INTO {SCHEMA}.notes VALUES ($1)", note.text)
        if note.text.startswith("refuse"):
            raise Conflict(f"{note.text} is refused")
        if note.text.startswith("crash"):
            raise RuntimeError("a bug")
        if self.flaky.get(note.text, 0) > 0:
            self.flaky[note.text] -= 1
            raise Transient("the dependency is down")
        event = new_message(
            source="tests",
            data=Noted.of(note),
            now=ctx.now,
            correlation_id=ctx.envelope.correlationid or ctx.envelope.id,
        )
        return Outcome(result=note, events=[event])


async def ask(question: Ask, ctx: Ctx) -> Outcome:
    found = await ctx.conn.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.notes WHERE text = $1", question.text
    )
    if question.text == "chatty":
        # An event from a READ route that did not declare Events.DIRECT: a bug.
        return Outcome(events=[new_message(source="t", data=question, now=ctx.now)])
    return Outcome(Note(text=f"{question.text}: {found}"))


async def tell(question: Ask, ctx: Ctx) -> Outcome:
    """A READ route that declares its events, published before the ack."""
    noted = Noted(text=question.text)
    return Outcome(events=[new_message(source="t", data=noted, now=ctx.now)])


async def pass_on(request: Pass, ctx: Ctx) -> Outcome:
    onward = new_message(source="t", data=Note(text=request.text), now=ctx.now)
    return Outcome(forward=onward)


@pytest.fixture(scope="module")
async def pool(handler_db: asyncpg.Pool) -> asyncpg.Pool:
    await migrate(handler_db, SCHEMA, [])
    async with handler_db.acquire() as conn:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.notes (text text)")
    return handler_db


def _table(notes: Notes, *, batched: bool = False) -> Any:
    return routes(
        Route(Note, None if batched else notes.one, notes.batch if batched else None),
        Route(Ask, ask, mode=Mode.READ),
        Route(Pass, pass_on, mode=Mode.READ),
    )


@pytest.fixture
async def notes() -> Notes:
    return Notes()


@pytest.fixture
async def harness(pool: asyncpg.Pool, notes: Notes) -> AsyncIterator[Harness]:
    async with Harness.open(
        pool, schema=SCHEMA, routes=_table(notes), context=Ctx
    ) as found:
        yield found


async def stored(harness: Harness) -> list[str]:
    rows = await harness.conn.fetch(f"SELECT text FROM {SCHEMA}.notes ORDER BY 1")
    return [row["text"] for row in rows]


async def test_success_replies_acks_and_writes_its_events(harness: Harness) -> None:
    handled = await harness.send(Note(text="hello"))
    assert handled.ok
    assert handled.reply is not None
    assert {"text": "hello"} == handled.reply.result
    assert "ack" == handled.verdict
    assert [Noted.TYPE] == [e.type for e in handled.events]
    assert ["hello"] == await stored(harness)


async def test_a_refusal_replies_its_code_acks_and_undoes_its_writes(
    harness: Harness,
) -> None:
    handled = await harness.send(Note(text="refuse-me"))
    assert ("conflict", "ack") == (handled.code, handled.verdict)
    assert [] == handled.events
    assert [] == await stored(harness)
    # No inbox row either: a redelivery is judged afresh.
    assert 0 == await harness.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.inbox")


async def test_a_bug_is_answered_unavailable_and_dead_lettered(
    harness: Harness,
) -> None:
    handled = await harness.send(Note(text="crash"))
    assert ("unavailable", "dead-letter") == (handled.code, handled.verdict)
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert "was dead-lettered" in handled.reply.error.message
    assert [] == await stored(harness)


@pytest.mark.parametrize(
    ("body", "type_", "reason"),
    [
        (b"\x00garbage", "test.note", "not a CloudEvents 1.0 JSON message"),
        (b"{}", None, "not a CloudEvents 1.0 JSON message: id: Field required"),
        (b"[1, 2]", "test.note", "not a CloudEvents 1.0 JSON message"),
    ],
)
async def test_garbage_is_refused_invalid_and_dead_lettered(
    harness: Harness, body: bytes, type_: str | None, reason: str
) -> None:
    handled = await harness.deliver(body, type_=type_)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert handled.reply.error.message.startswith(reason)


def _body(type_: str, data: dict[str, Any]) -> bytes:
    return (
        CloudEvent(id="m-1", source="t", type=type_, time=datetime.now(UTC), data=data)
        .model_dump_json()
        .encode()
    )


async def test_bad_data_names_the_type_and_the_field(harness: Harness) -> None:
    handled = await harness.deliver(_body(Note.TYPE, {"text": 7}), type_=Note.TYPE)
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert "invalid test.note: text: Input should be a valid string" == (
        handled.reply.error.message
    )
    assert "dead-letter" == handled.verdict


async def test_bad_data_without_an_amqp_type_names_them_too(harness: Harness) -> None:
    handled = await harness.deliver(_body(Note.TYPE, {}), type_=None)
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert "invalid test.note: text: Field required" == handled.reply.error.message


async def test_an_unknown_type_is_dead_lettered(harness: Harness) -> None:
    handled = await harness.deliver(_body("test.nobody", {}), type_="test.nobody")
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert "unknown message type 'test.nobody'" == handled.reply.error.message
    assert "dead-letter" == handled.verdict


async def test_an_envelope_under_another_amqp_type_is_refused(
    harness: Harness,
) -> None:
    """The route is named by the AMQP type; the envelope must agree with it."""
    handled = await harness.deliver(_body(Ask.TYPE, {"text": "x"}), type_=Note.TYPE)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
    assert [] == await stored(harness)


async def test_a_refused_sender_is_forbidden_before_validation(
    pool: asyncpg.Pool, notes: Notes
) -> None:
    bus = MemoryBus(refuse=lambda message, type_: f"{message.user_id} may not {type_}")
    async with Harness.open(
        pool, schema=SCHEMA, routes=_table(notes), context=Ctx, bus=bus
    ) as harness:
        handled = await harness.deliver(b"not even json", type_=Note.TYPE, sender="x")
        assert ("forbidden", "dead-letter") == (handled.code, handled.verdict)
        assert handled.reply is not None
        assert handled.reply.error is not None
        assert "x may not test.note" == handled.reply.error.message
        assert [] == notes.calls


async def test_a_message_id_seen_before_gets_its_stored_reply(
    harness: Harness, notes: Notes
) -> None:
    first = await harness.send(Note(text="once"), id_="same-id")
    again = await harness.send(Note(text="once"), id_="same-id")
    assert first.reply == again.reply
    assert "ack" == again.verdict
    assert [] == again.events
    assert ["once"] == await stored(harness)
    assert [1] == notes.calls


async def test_a_command_past_its_deadline_is_not_applied(harness: Harness) -> None:
    late = datetime.now(UTC) - timedelta(seconds=1)
    handled = await harness.send(Note(text="late"), deadline=late)
    assert ("unavailable", "ack") == (handled.code, handled.verdict)
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert "deadline" in handled.reply.error.message
    assert [] == await stored(harness)


async def test_a_forward_keeps_the_correlation_and_sends_no_reply(
    harness: Harness,
) -> None:
    handled = await harness.send(Pass(text="onward"))
    assert handled.reply is None
    assert handled.forward is not None
    assert Note.TYPE == handled.forward.type
    assert "ack" == handled.verdict


async def test_a_read_route_answers_without_an_inbox_row(harness: Harness) -> None:
    await harness.send(Note(text="a"))
    handled = await harness.send(Ask(text="a"))
    assert handled.reply is not None
    assert {"text": "a: 1"} == handled.reply.result
    assert 1 == await harness.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.inbox")


async def test_a_read_route_that_sends_undeclared_events_is_a_bug(
    harness: Harness,
) -> None:
    handled = await harness.send(Ask(text="chatty"))
    assert ("unavailable", "dead-letter") == (handled.code, handled.verdict)
    assert [] == handled.events


async def test_a_read_route_s_declared_events_go_out_before_the_ack(
    pool: asyncpg.Pool,
) -> None:
    table = routes(Route(Ask, tell, mode=Mode.READ, events=Events.DIRECT))
    async with Harness.open(pool, schema=SCHEMA, routes=table, context=Ctx) as h:
        handled = await h.send(Ask(text="news"))
        assert handled.ok
        assert [Noted.TYPE] == [e.type for e in handled.events]
        assert 0 == await h.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox")


async def test_a_batch_commits_all_but_the_refused_message(
    harness: Harness,
) -> None:
    first, refused, third = await harness.send_all(
        [Note(text="one"), Note(text="refuse-two"), Note(text="three")]
    )
    assert (True, "conflict", True) == (first.ok, refused.code, third.ok)
    assert ["one", "three"] == await stored(harness)
    assert ([Noted.TYPE], [], [Noted.TYPE]) == tuple(
        [e.type for e in h.events] for h in (first, refused, third)
    )


async def test_a_transient_failure_runs_the_batch_again(
    harness: Harness, notes: Notes
) -> None:
    notes.flaky["flaky"] = 3
    handled = await harness.send(Note(text="flaky"))
    assert handled.ok
    assert ["flaky"] == await stored(harness)
    assert 4 == len(notes.calls)


async def test_a_batch_handler_alone_serves_single_messages_too(
    pool: asyncpg.Pool,
) -> None:
    """The dispatcher derives the per-message handler: a batch of one."""
    notes = Notes()
    table = _table(notes, batched=True)
    async with Harness.open(pool, schema=SCHEMA, routes=table, context=Ctx) as h:
        assert all(r.ok for r in await h.send_all([Note(text="a"), Note(text="b")]))
        refused = await h.send_all([Note(text="c"), Note(text="refuse-d")])
        assert [True, False] == [r.ok for r in refused]
        # [2]: one call for the first batch; [2, 1, 1]: the refused batch, undone,
        # then each message alone through the derived handler.
        assert [2, 2, 1, 1] == notes.calls
        assert ["a", "b", "c"] == await stored(h)


def test_a_route_says_where_its_events_go() -> None:
    with pytest.raises(TypeError, match=r"Events\.DIRECT"):
        Route(Ask, ask, mode=Mode.READ, events=Events.OUTBOX)
    with pytest.raises(TypeError, match="through the outbox"):
        Route(Note, Notes().one, events=Events.DIRECT)
    with pytest.raises(TypeError, match="give handle or handle_batch"):
        Route(Note)
    with pytest.raises(TypeError, match="routed twice"):
        routes(Route(Ask, ask, mode=Mode.READ), Route(Ask, tell, mode=Mode.READ))
