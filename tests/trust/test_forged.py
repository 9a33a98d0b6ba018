"""The security review's forged messages against the enrollment path running under its
own broker identities: each is refused by the broker or by its consumer, nothing is
issued or changed, the gateway's trust and /cacerts stay as they were, and an audit
line names the sender.

Write permission on the default exchange (every worker has it, to reply) lets a user
put a message into any queue by name, past the topic permissions: these tests use it
to reach each consumer, whose sender check is then the guard.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from collections.abc import Callable, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import aiormq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel
from structlog.testing import capture_logs

from contracts.ca import CAStatusUpdate, CAView, CreateCA, IssueCertificate, RevokeCA
from contracts.devices import DeviceStatus
from contracts.dms import EnrollmentKind, EnrollmentRequest
from contracts.errors import ErrorCode, Reply
from contracts.message import Message
from tests.envelopes import raw_envelope
from tests.est_gateway.test_gateway import (
    device_status,
    new_stage,
    openssl_csr,
    single_certificate,
)
from tests.pki import call, csr_pem, make_csr, unique
from tests.trust.conftest import Stack

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def _rogue_root_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


async def _forge(
    stack: Stack,
    role: str,
    queue: str,
    type_: str,
    data: BaseModel,
    *,
    exchange: str = "",
) -> tuple[str, Reply | None]:
    """Publish as ``role`` straight into ``queue`` (default exchange) or through an
    exchange; wait for the reply when through the default exchange to a worker's
    command queue. Returns the message id and the reply (None for events)."""
    connection = await aio_pika.connect(stack.identities.url(role))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True)
        message = raw_envelope(
            type_=type_, source="/forger", data=data, now=datetime.now(UTC)
        )
        wants_reply = queue.endswith(".commands")
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(
            aio_pika.Message(
                message.model_dump_json().encode(),
                message_id=message.id,
                correlation_id=message.id,
                reply_to=replies.name if wants_reply else None,
                user_id=f"{stack.backends.prefix}{role}",
            ),
            routing_key=queue if exchange == "" else type_,
        )
        if not wants_reply:
            return message.id, None
        async with asyncio.timeout(15), replies.iterator() as incoming:
            answer = await anext(aiter(incoming))
            return message.id, Reply.model_validate_json(answer.body)


async def _count(stack: Stack, table: str) -> int:
    pool = await stack.backends.pool()
    try:
        return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await pool.close()


async def _dead_lettered(stack: Stack, role: str, queue: str, message_id: str) -> bool:
    """Whether ``message_id`` reached ``<queue>.dead`` (deadline 15 s); it is taken."""
    connection = await aio_pika.connect(stack.identities.url(role))
    async with connection, asyncio.timeout(15):
        channel = await connection.channel()
        dead = await channel.get_queue(f"{queue}.dead", ensure=False)
        while True:
            got = await dead.get(fail=False, no_ack=False)
            if got is None:
                await asyncio.sleep(0.05)
                continue
            await got.ack()
            if got.message_id == message_id:
                return True


def _audited(
    logs: Sequence[MutableMapping[str, Any]], sender: str, type_: str, id_: str
) -> bool:
    return any(
        e["event"] == "sender_refused"
        and e.get("sender") == sender
        and e.get("type") == type_
        and e.get("id") == id_
        for e in logs
    )


@pytest.fixture(scope="module")
async def ca_view(stack: Stack) -> CAView:
    """A CA the admin made; the gateway knows it."""
    reply = await call(stack.admin, CreateCA(name=unique("trusted")))
    assert reply.ok, reply.error
    view = CAView.model_validate(reply.result)
    await stack.gateway.knows(view.name)
    return view


async def _cacerts(stack: Stack, label: str) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(stack.gateway.server_certificate))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(f"{stack.gateway.url}/.well-known/est/{label}/cacerts") as got,
    ):
        return got.status, await got.read()


def _issue(ca: CAView) -> BaseModel:
    return IssueCertificate(
        ca=ca.name,
        csr_pem=csr_pem(make_csr("forged-device")[1]),
        request_id=uuid.uuid4().hex * 2,
        device_id="forged-device",
    )


def _enroll(ca: CAView) -> BaseModel:
    # The review's forgery: only a DMS's public certificate as the "client chain".
    return EnrollmentRequest(
        kind=EnrollmentKind.ENROLL,
        label=ca.name,
        csr_pem=csr_pem(make_csr("forged-device")[1]),
        client_certificate_chain_pem=[ca.certificate_pem],
        request_id=uuid.uuid4().hex * 2,
    )


@pytest.mark.parametrize(
    ("role", "worker", "build"),
    [
        ("va-worker", "ca", _issue),
        ("dms-worker", "ca", lambda _ca: CreateCA(name=unique("rogue"))),
        ("device-worker", "ca", lambda ca: RevokeCA(name=ca.name)),
        ("device-worker", "dms", _enroll),
    ],
    ids=["certificate.issue", "ca.create", "ca.revoke", "enrollment.request"],
)
async def test_a_forged_command_is_refused_by_its_consumer(
    stack: Stack,
    ca_view: CAView,
    role: str,
    worker: str,
    build: Callable[[CAView], Message],
) -> None:
    """A command from a role that may not send it, put straight into the worker's
    queue: answered forbidden, dead-lettered, audited; nothing issued or created."""
    queue = stack.backends.prefix + f"{worker}.commands"
    request_ = build(ca_view)
    type_ = request_.TYPE
    before = (
        await _count(stack, "ca.certificates"),
        await _count(stack, "ca.cas"),
    )
    with capture_logs() as logs:
        message_id, reply = await _forge(stack, role, queue, type_, request_)
    assert reply is not None
    assert not reply.ok
    assert reply.error is not None
    assert ErrorCode.FORBIDDEN == reply.error.code
    assert _audited(logs, f"{stack.backends.prefix}{role}", type_, message_id)
    owner = {"ca": "ca-worker", "dms": "dms-worker"}[worker]
    assert await _dead_lettered(stack, owner, queue, message_id)
    after = (
        await _count(stack, "ca.certificates"),
        await _count(stack, "ca.cas"),
    )
    assert before == after
    assert 200 == (await _cacerts(stack, ca_view.name))[0]  # not revoked


@pytest.mark.parametrize(
    ("role", "type_"),
    [
        ("admin", "certificate.issue"),
        ("admin", "enrollment.request"),
        ("dms-worker", "ca.create"),
        ("device-worker", "ca.revoke"),
        ("observer", "ca.create"),
    ],
    ids=str,
)
async def test_a_forged_command_through_the_exchange_is_refused_by_the_broker(
    stack: Stack, role: str, type_: str
) -> None:
    """Through the commands exchange, topic permissions refuse it at the broker."""
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _forge(
            stack,
            role,
            "-",
            type_,
            CreateCA(name="rogue"),
            exchange=stack.backends.prefix + "lamassu.commands",
        )


def _private_queues(stack: Stack) -> list[str]:
    """The vhost's exclusive, client-named queues: the gateway's CA subscription
    among them (an attacker can list names through the management UI)."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", stack.identities.vhost, "name"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return [name for name in listed if name.startswith(("amq_", "amq.gen-"))]


async def test_forged_ca_events_do_not_change_the_gateways_trust(
    stack: Stack, ca_view: CAView
) -> None:
    """A rogue ``ca.create`` and a ``ca.status.update`` swapping a CA's certificate,
    from the DMS worker into every private queue: the gateway refuses both (audit
    lines name the sender), /cacerts is unchanged and the rogue label unknown."""
    rogue_name = unique("rogue")
    rogue = ca_view.model_copy(
        update={"name": rogue_name, "certificate_pem": _rogue_root_pem(rogue_name)}
    )
    swapped = ca_view.model_copy(
        update={"certificate_pem": _rogue_root_pem(ca_view.name)}
    )
    before = await _cacerts(stack, ca_view.name)
    assert 200 == before[0]
    sender = f"{stack.backends.prefix}dms-worker"
    with capture_logs() as logs:
        sent = []
        for queue in _private_queues(stack):
            sent.append(
                (await _forge(stack, "dms-worker", queue, "ca.create", rogue))[0]
            )
            sent.append(
                (
                    await _forge(
                        stack,
                        "dms-worker",
                        queue,
                        CAStatusUpdate.TYPE,
                        CAStatusUpdate(previous=ca_view, updated=swapped),
                    )
                )[0]
            )
        async with asyncio.timeout(15):
            while not (
                any(_audited(logs, sender, "ca.create", i) for i in sent)
                and any(_audited(logs, sender, CAStatusUpdate.TYPE, i) for i in sent)
            ):
                await asyncio.sleep(0.02)
    assert before == await _cacerts(stack, ca_view.name)
    assert 404 == (await _cacerts(stack, rogue_name))[0]


async def test_the_genuine_path_still_works(stack: Stack, ca_view: CAView) -> None:
    """Under the same identities, the admin's and the workers' own messages pass:
    a new CA reaches the gateway through the CA worker's ca.create event."""
    reply = await call(stack.admin, CreateCA(name=unique("genuine")))
    assert reply.ok, reply.error
    await stack.gateway.knows(CAView.model_validate(reply.result).name)
    assert 200 == (await _cacerts(stack, ca_view.name))[0]


async def test_a_device_enrolls_under_the_identities(
    stack: Stack, tmp_path: Path
) -> None:
    """EST enrollment end to end: gateway -> DMS worker -> CA worker, each under its
    own user; the CA worker's reply to the gateway's request (forwarded by the DMS
    worker) is believed, and the device worker records the device."""
    stage = await new_stage(stack.admin, stack.gateway, tmp_path)
    device_id = unique("sensor")
    body, _key = openssl_csr(tmp_path, device_id)
    status, _headers, payload = await stage.est.enroll(
        stage.ca.name, body, stage.dms_identity
    )
    assert 200 == status, payload
    certificate = single_certificate(payload)
    name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert device_id == name[0].value
    await device_status(stack.admin, device_id, DeviceStatus.FULLY_PROVISIONED)
