"""What the broker itself refuses, with the identities ``lamassu bus setup`` makes:
a spoofed ``user_id``, any publish by an observer, a type outside a role's topic
permissions; and what the request/reply client refuses: a reply from a role that
does not own the request's type."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import aio_pika
import aiormq
import pytest
from structlog.testing import capture_logs

from contracts.ca import GetCA
from contracts.envelope import new_message
from contracts.errors import ErrorCode, Reply
from contracts.names import Topology
from runtime.bus import Bus
from tests.conftest import AMQP_URL, Backends
from tests.envelopes import raw_envelope
from tests.trust.conftest import Identities, broker_identities

pytestmark = [pytest.mark.rabbitmq]

PREFIX = f"trust-{uuid.uuid4().hex[:8]}."
TOPOLOGY = Topology(PREFIX)


@pytest.fixture(scope="module")
def identities() -> Iterator[Identities]:
    with broker_identities(PREFIX) as found:
        yield found


@pytest.fixture
async def connect(identities: Identities) -> AsyncIterator[object]:
    """Open raw connections as roles; all closed afterwards."""
    opened: list[aio_pika.abc.AbstractConnection] = []

    async def open_as(role: str) -> aio_pika.abc.AbstractConnection:
        connection = await aio_pika.connect(identities.url(role))
        opened.append(connection)
        return connection

    yield open_as
    for connection in opened:
        await connection.close()


def _body(type_: str) -> bytes:
    return (
        raw_envelope(
            type_=type_, source="/forger", data=GetCA(name="x"), now=datetime.now(UTC)
        )
        .model_dump_json()
        .encode()
    )


async def _publish(
    connection: aio_pika.abc.AbstractConnection,
    exchange: str,
    routing_key: str,
    *,
    user_id: str | None,
) -> None:
    """Publish with confirms; raises what the broker answers a refusal with."""
    channel = await connection.channel(publisher_confirms=True)
    target = (
        channel.default_exchange
        if exchange == ""
        else await channel.get_exchange(exchange, ensure=False)
    )
    await target.publish(
        aio_pika.Message(_body(routing_key), user_id=user_id),
        routing_key=routing_key,
    )


async def test_user_id_spoofing_is_refused_by_the_broker(connect) -> None:
    """A DMS worker publishing a type it may send, but with the CA worker's user_id:
    the broker closes the channel (PRECONDITION_FAILED) and nothing is published."""
    dms = await connect("dms-worker")
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
        await _publish(dms, TOPOLOGY.events, "dms.create", user_id=f"{PREFIX}ca-worker")


async def test_own_user_id_is_accepted(connect) -> None:
    """The same publish under its own user_id and an allowed type goes through."""
    dms = await connect("dms-worker")
    await _publish(dms, TOPOLOGY.events, "dms.create", user_id=f"{PREFIX}dms-worker")


@pytest.mark.parametrize(
    ("exchange", "key"),
    [
        ("events", "ca.create"),
        ("events", "ca.status.update"),
        ("commands", "ca.create"),
        ("commands", "certificate.issue"),
        ("commands", "enrollment.request"),
        ("default", f"{PREFIX}ca.commands"),
    ],
    ids=["ca-event", "ca-status-event", "ca-create", "issue", "enroll", "default"],
)
async def test_an_observer_cannot_publish_anything(connect, exchange, key) -> None:
    """Observers have no write permission on any exchange (ACCESS_REFUSED)."""
    observer = await connect("observer")
    name = "" if exchange == "default" else TOPOLOGY.exchange(exchange)
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _publish(observer, name, key, user_id=f"{PREFIX}observer")


@pytest.mark.parametrize(
    ("role", "exchange", "key"),
    [
        ("admin", "commands", "certificate.issue"),
        ("admin", "commands", "enrollment.request"),
        ("va-worker", "commands", "ca.create"),
        ("dms-worker", "commands", "ca.revoke"),
        ("est-gateway", "commands", "certificate.issue"),
        ("dms-worker", "events", "ca.create"),
        ("device-worker", "events", "ca.status.update"),
        ("ca-worker", "events", "dms.enroll"),
    ],
    ids=str,
)
async def test_topic_permissions_refuse_types_a_role_may_not_send(
    connect, role, exchange, key
) -> None:
    """A role publishing a type it may not send: refused by topic authorisation."""
    connection = await connect(role)
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _publish(
            connection, TOPOLOGY.exchange(exchange), key, user_id=f"{PREFIX}{role}"
        )


async def test_an_observer_cannot_bind_commands(connect) -> None:
    """An observer's queue may follow events but not commands (read permission)."""
    observer = await connect("observer")
    channel = await observer.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(TOPOLOGY.events, routing_key="certificate.#")
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await queue.bind(TOPOLOGY.commands, routing_key="#")


async def test_a_reply_from_a_role_that_does_not_own_the_request_is_ignored(
    identities: Identities, connect
) -> None:
    """An admin asks ca.get; a DMS worker (which may reply: it owns other types)
    answers first through the default exchange; the client believes only the CA
    worker's reply, and logs the forgery."""
    ca = await connect("ca-worker")
    dms = await connect("dms-worker")
    ca_channel = await ca.channel()
    # Stands in for the CA worker: a queue of its own, bound to what it serves.
    decoy = await ca_channel.declare_queue(
        f"{PREFIX}ca.decoy-{uuid.uuid4().hex[:6]}", exclusive=True
    )
    await decoy.bind(TOPOLOGY.commands, routing_key="ca.*")
    admin = await Bus.connect(identities.url("admin"), TOPOLOGY)
    try:
        asked = asyncio.create_task(
            admin.request(
                new_message(
                    source="tests",
                    data=GetCA(name="x"),
                    now=datetime.now(UTC),
                ),
                timeout=15,
            )
        )
        async with asyncio.timeout(15):
            async with decoy.iterator() as messages:
                request = await anext(aiter(messages))
                await request.ack()
        forged = Reply(ok=True, result={"name": "rogue"})
        genuine = Reply.failure(ErrorCode.NOT_FOUND, "no CA x")
        with capture_logs() as logs:
            for connection, reply, role in (
                (dms, forged, "dms-worker"),
                (ca, genuine, "ca-worker"),
            ):
                channel = await connection.channel(publisher_confirms=True)
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(reply.model_dump(mode="json")).encode(),
                        correlation_id=request.correlation_id,
                        user_id=f"{PREFIX}{role}",
                    ),
                    routing_key=request.reply_to or "",
                )
            answer = await asyncio.wait_for(asked, 15)
        assert genuine == answer
        refused = [e for e in logs if e["event"] == "sender_refused"]
        assert [f"{PREFIX}dms-worker"] == [e["sender"] for e in refused]
    finally:
        await admin.close()


async def test_only_an_identity_checks_senders(
    identities: Identities, backends: Backends
) -> None:
    """A bus connected as a deployment identity checks senders; one connected as any
    other user (guest) cannot, and a consuming process says so once."""
    as_admin = await Bus.connect(identities.url("admin"), TOPOLOGY)
    as_guest = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    try:
        assert (as_admin.checks_senders, as_guest.checks_senders) == (True, False)
        with capture_logs() as logs:
            as_admin.warn_if_unchecked()
            as_guest.warn_if_unchecked()
        assert [("sender_check_off", "guest")] == [
            (e["event"], e["user"]) for e in logs
        ]
    finally:
        await as_admin.close()
        await as_guest.close()
