"""The CA worker over a real RabbitMQ and PostgreSQL: commands, queries, events, bad input."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from cryptography import x509

from contracts.ca import (
    CAView,
    CertificateStatus,
    CertificateView,
    CreateCA,
    GetCA,
    IssueCertificate,
    ListCAs,
    RevocationReason,
    RevokeCA,
    RevokeCertificate,
    SignCertificate,
)
from contracts.errors import ErrorCode, Reply
from contracts.message import Message
from runtime.bus import Bus
from tests.conftest import Backends
from tests.envelopes import raw_envelope
from tests.pki import EventLog, call, csr_pem, make_csr, tampered_csr_pem, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
async def events(bus: Bus) -> AsyncIterator[EventLog]:
    log = EventLog()
    await bus.subscribe("#", log.on_message)
    yield log


async def create_ca(bus: Bus, name: str, parent: str | None = None) -> CAView:
    reply = await call(bus, CreateCA(name=name, parent=parent))
    assert reply.ok, reply.error
    return CAView.model_validate(reply.result)


async def test_internal_ca_exists_after_start(bus: Bus) -> None:
    """The internal CA LAMASSU-DMS-MANAGER is created on first start."""
    reply = await call(bus, GetCA(name="LAMASSU-DMS-MANAGER"))
    assert reply.ok
    assert CAView.model_validate(reply.result).internal


async def test_sign_gives_certificate_openssl_verifies_and_event(
    bus: Bus, events: EventLog, tmp_path: Path
) -> None:
    """A signed CSR chains to its CA under openssl, and a certificate.create event follows."""
    ca = await create_ca(bus, unique("factory-root"))
    _, csr = make_csr("device-42")
    reply = await call(bus, SignCertificate(ca=ca.name, csr_pem=csr_pem(csr)))
    assert reply.ok, reply.error
    cert = CertificateView.model_validate(reply.result)
    (tmp_path / "ca.pem").write_text(ca.certificate_pem)
    (tmp_path / "leaf.pem").write_text(cert.certificate_pem)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "leaf.pem"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == verify.returncode, verify.stderr
    event = await events.wait_for("certificate.create", f"certificate/{cert.serial}")
    assert cert.serial == event.data["serial"]
    await events.wait_for("ca.create", f"ca/{ca.name}")


async def test_subordinate_ca_chains_to_root(bus: Bus, tmp_path: Path) -> None:
    """A subordinate CA's leaf verifies through the chain root -> sub -> leaf."""
    root = await create_ca(bus, unique("root"))
    sub = await create_ca(bus, unique("sub"), parent=root.name)
    _, csr = make_csr("device-sub")
    reply = await call(bus, SignCertificate(ca=sub.name, csr_pem=csr_pem(csr)))
    assert reply.ok, reply.error
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "sub.pem").write_text(sub.certificate_pem)
    (tmp_path / "leaf.pem").write_text(reply.result["certificate_pem"])  # type: ignore[index,call-overload]
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            tmp_path / "root.pem",
            "-untrusted",
            tmp_path / "sub.pem",
            tmp_path / "leaf.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == verify.returncode, verify.stderr


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (
            SignCertificate(ca="no-such-ca", csr_pem=csr_pem(make_csr("d")[1])),
            ErrorCode.NOT_FOUND,
            "no CA named",
        ),
        (
            CreateCA(name="x-orphan", parent="no-such-parent"),
            ErrorCode.NOT_FOUND,
            "no CA named",
        ),
        (
            SignCertificate(ca="LAMASSU-DMS-MANAGER", csr_pem="garbage"),
            ErrorCode.INVALID,
            "not a PKCS#10",
        ),
        (
            SignCertificate(ca="LAMASSU-DMS-MANAGER", csr_pem=tampered_csr_pem("d")),
            ErrorCode.INVALID,
            "signature does not verify",
        ),
        (CreateCA(name="LAMASSU-DMS-MANAGER"), ErrorCode.CONFLICT, "already exists"),
        (RevokeCertificate(serial="00ff"), ErrorCode.NOT_FOUND, "no certificate"),
    ],
    ids=[
        "unknown-ca",
        "unknown-parent",
        "garbage-csr",
        "bad-signature-csr",
        "duplicate-ca",
        "unknown-serial",
    ],
)
async def test_refusals_name_their_code_and_reason(
    bus: Bus, request_: Message, code: ErrorCode, reason: str
) -> None:
    """Each business refusal is a typed error reply with a one-line reason."""
    reply = await call(bus, request_)
    assert (False, code) == (reply.ok, reply.error and reply.error.code)
    assert reason in reply.error.message  # type: ignore[union-attr]
    assert "\n" not in reply.error.message  # type: ignore[union-attr]


async def _raw_request(
    bus_prefix: str, amqp_url: str, routing_key: str, body: bytes
) -> tuple[Reply, bytes]:
    """Publish raw bytes as a command; return the reply and the dead-lettered body."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(f"{bus_prefix}lamassu.commands")
        dead = await channel.get_queue(f"{bus_prefix}ca.commands.dead")
        dead_bodies: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_dead(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                await dead_bodies.put(message.body)

        await dead.consume(on_dead)
        correlation = str(uuid.uuid4())
        await exchange.publish(
            aio_pika.Message(body, reply_to=replies.name, correlation_id=correlation),
            routing_key=routing_key,
        )
        async with asyncio.timeout(10), replies.iterator() as iterator:
            async for message in iterator:
                await message.ack()
                if message.correlation_id == correlation:
                    reply = Reply.model_validate_json(message.body)
                    break
        async with asyncio.timeout(10):
            while (dead_body := await dead_bodies.get()) != body:
                pass
        return reply, dead_body


def _envelope(type_: str, data: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "tests",
            "type": type_,
            "time": datetime.now(UTC).isoformat(),
            "data": data,
        }
    ).encode()


@pytest.mark.parametrize(
    ("routing_key", "body", "reason"),
    [
        ("ca.create", b"this is not json", "not a CloudEvents 1.0 JSON message"),
        ("ca.create", b'{"specversion": "1.0"}', "not a CloudEvents 1.0 JSON message"),
        (
            "ca.frobnicate",
            _envelope("ca.frobnicate", {}),
            "unknown message type 'ca.frobnicate'",
        ),
        (
            "ca.create",
            _envelope("ca.create", {"key_type": "ec-p256"}),
            "invalid ca.create: name: Field required",
        ),
        (
            "ca.create",
            _envelope("ca.create", {"name": "ok-name", "key_type": "dsa-1024"}),
            "key_type",
        ),
    ],
    ids=["not-json", "not-an-envelope", "unknown-type", "missing-field", "bad-enum"],
)
async def test_malformed_messages_are_answered_and_dead_lettered(
    backends: Backends, bus: Bus, routing_key: str, body: bytes, reason: str
) -> None:
    """Malformed or unknown messages get an 'invalid' reply and land in the DLQ; the worker goes on."""
    from tests.conftest import AMQP_URL

    reply, dead = await _raw_request(backends.prefix, AMQP_URL, routing_key, body)
    assert (False, ErrorCode.INVALID) == (reply.ok, reply.error and reply.error.code)
    assert reason in reply.error.message  # type: ignore[union-attr]
    assert body == dead
    assert (await call(bus, ListCAs())).ok


async def test_redelivered_command_is_processed_once(
    bus: Bus, db: asyncpg.Pool
) -> None:
    """The same command id sent twice creates one CA and gets the same reply twice."""
    name = unique("twice")
    message = raw_envelope(
        type_="ca.create",
        source="tests",
        data=CreateCA(name=name),
        now=datetime.now(UTC),
    )
    first = await bus.request(message, timeout=15)
    second = await bus.request(
        message.model_copy(update={"correlationid": str(uuid.uuid4())}), timeout=15
    )
    assert first.ok
    assert first == second
    assert 1 == await db.fetchval("SELECT count(*) FROM ca.cas WHERE name = $1", name)


async def test_revoking_a_ca_revokes_its_tree(bus: Bus, events: EventLog) -> None:
    """Revoking a root revokes its subordinate and every certificate both issued, with events."""
    root = await create_ca(bus, unique("tree-root"))
    sub = await create_ca(bus, unique("tree-sub"), parent=root.name)
    serials = []
    for ca in (root, sub):
        reply = await call(
            bus, SignCertificate(ca=ca.name, csr_pem=csr_pem(make_csr("dev")[1]))
        )
        serials.append(reply.result["serial"])  # type: ignore[index,call-overload]
    reply = await call(
        bus, RevokeCA(name=root.name, reason=RevocationReason.CA_COMPROMISE)
    )
    assert CertificateStatus.REVOKED == CAView.model_validate(reply.result).status
    for serial in serials:
        event = await events.wait_for(
            "certificate.status.update", f"certificate/{serial}"
        )
        assert ("ACTIVE", "REVOKED") == (
            event.data["previous"]["status"],
            event.data["updated"]["status"],
        )
        assert "cACompromise" == event.data["updated"]["revocation_reason"]
    await events.wait_for("ca.status.update", f"ca/{sub.name}")
    refused = await call(
        bus, SignCertificate(ca=sub.name, csr_pem=csr_pem(make_csr("late")[1]))
    )
    assert ErrorCode.CONFLICT == refused.error.code  # type: ignore[union-attr]
    again = await call(bus, RevokeCA(name=root.name))
    assert ErrorCode.CONFLICT == again.error.code  # type: ignore[union-attr]


async def test_revoked_certificate_reports_reason(bus: Bus) -> None:
    """Revoking a certificate records the RFC 5280 reason; a second revoke conflicts."""
    ca = await create_ca(bus, unique("rev"))
    signed = await call(
        bus, SignCertificate(ca=ca.name, csr_pem=csr_pem(make_csr("r")[1]))
    )
    serial = signed.result["serial"]  # type: ignore[index,call-overload]
    reply = await call(
        bus, RevokeCertificate(serial=serial, reason=RevocationReason.KEY_COMPROMISE)
    )
    view = CertificateView.model_validate(reply.result)
    assert (CertificateStatus.REVOKED, RevocationReason.KEY_COMPROMISE) == (
        view.status,
        view.revocation_reason,
    )
    x509.load_pem_x509_certificate(view.certificate_pem.encode())
    again = await call(bus, RevokeCertificate(serial=serial))
    assert ErrorCode.CONFLICT == again.error.code  # type: ignore[union-attr]


def _enrollment(ca: CAView, device_id: str, **fields: object) -> IssueCertificate:
    _, csr = make_csr(f"default:{device_id}")
    return IssueCertificate.model_validate(
        {
            "ca": ca.name,
            "csr_pem": csr_pem(csr),
            "request_id": secrets.token_hex(32),
            "device_id": device_id,
            "slot": "default",
            "dms": "dms-a",
        }
        | fields
    )


async def test_enrollments_sent_together_are_each_answered_once(
    bus: Bus, events: EventLog, db: asyncpg.Pool
) -> None:
    """Enrollments that arrive together (a batch, when the worker is busy): a request
    sent twice is signed once; a bad CSR or a refused renewal is refused alone."""
    ca = await create_ca(bus, unique("batch-ca"))
    twice = _enrollment(ca, unique("twice"))
    good = [_enrollment(ca, unique("dev")) for _ in range(4)]
    replies = await asyncio.gather(*(call(bus, r) for r in [*good, twice, twice]))
    assert all(r.ok for r in replies), [r.error for r in replies]
    views = [CertificateView.model_validate(r.result) for r in replies]
    assert views[-1] == views[-2]
    assert 1 == await db.fetchval(
        "SELECT count(*) FROM ca.certificates WHERE request_id = $1", twice.request_id
    )
    # Asked again later, the request is answered with its first certificate.
    again = await call(bus, twice)
    assert views[-1] == CertificateView.model_validate(again.result)

    revoked = views[0]
    assert (await call(bus, RevokeCertificate(serial=revoked.serial))).ok
    refused = [
        _enrollment(ca, unique("bad"), csr_pem=tampered_csr_pem("default:bad")),
        _enrollment(ca, revoked.device_id or "", replaces=revoked.serial, dms=None),
    ]
    fine = [_enrollment(ca, unique("dev")) for _ in range(3)]
    replies = await asyncio.gather(
        *(call(bus, r) for r in [fine[0], *refused, *fine[1:]])
    )
    assert [True, False, False, True, True] == [r.ok for r in replies]
    assert [ErrorCode.INVALID, ErrorCode.FORBIDDEN] == [
        r.error.code for r in replies if r.error is not None
    ]
    for request in refused:
        assert 0 == await db.fetchval(
            "SELECT count(*) FROM ca.certificates WHERE request_id = $1",
            request.request_id,
        )
    issued = [CertificateView.model_validate(r.result) for r in replies if r.ok]
    for view in [*views[:-1], *issued]:
        await events.wait_for("certificate.create", f"certificate/{view.serial}")
    # Written before the later ones, a second event would have been relayed by now.
    assert 1 == len(
        events.matching("certificate.create", f"certificate/{views[-1].serial}")
    )
