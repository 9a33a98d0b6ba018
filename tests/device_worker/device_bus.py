"""Test helpers for driving the device worker over the bus: requests, raw publishing,
an event log to await, and certificates for enrollments. Self-contained, so mypy checks
``tests/device_worker`` on its own."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.ca import CAView, CertificateStatus, CertificateView, IssueCertificate
from contracts.devices import DeviceStatus, DeviceView, GetDevice
from contracts.dms import DMSCreated, DMSStatus, DMSView
from contracts.envelope import CloudEvent, new_message
from contracts.errors import Reply
from runtime.bus import Bus
from runtime.settings import BusSettings
from tests.pki import EventLog, call


def csr_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def issue(
    bus: Bus,
    ca: CAView,
    device_id: str,
    *,
    slot: str = "default",
    dms: str | None = None,
    replaces: str | None = None,
) -> CertificateView:
    """Enroll through the CA worker's ``certificate.issue``, as the DMS worker does."""
    request = IssueCertificate(
        ca=ca.name,
        csr_pem=csr_pem(f"{slot}:{device_id}"),
        request_id=secrets.token_hex(32),
        device_id=device_id,
        slot=slot,
        dms=dms,
        replaces=replaces,
    )
    reply = await call(bus, request)
    assert reply.ok, reply.error
    return CertificateView.model_validate(reply.result)


async def get(bus: Bus, device_id: str) -> DeviceView:
    reply = await call(bus, GetDevice(id=device_id))
    assert reply.ok, reply.error
    return DeviceView.model_validate(reply.result)


async def processed(db: asyncpg.Pool, event_id: str) -> None:
    """Wait until the device worker has committed its handling of ``event_id``."""
    async with asyncio.timeout(10):
        while not await db.fetchval(
            "SELECT count(*) FROM devices.inbox WHERE id = $1", event_id
        ):
            await asyncio.sleep(0.05)


async def status_change(
    events: EventLog, device_id: str, previous: DeviceStatus, updated: DeviceStatus
) -> CloudEvent:
    """The ``device.status.update`` of ``device_id`` from ``previous`` to ``updated``."""
    return await events.wait_for(
        "device.status.update",
        f"device/{device_id}",
        lambda data: (
            (data["previous"]["status"], data["updated"]["status"])
            == (previous, updated)
        ),
    )


def enrollment_certificate(device_id: str) -> CertificateView:
    """A throwaway self-signed certificate dressed as an enrollment's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    now = datetime.now(UTC).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return CertificateView(
        serial=format(certificate.serial_number, "x").zfill(40),
        ca="throwaway",
        subject=name.rfc4514_string(),
        issuer=name.rfc4514_string(),
        status=CertificateStatus.ACTIVE,
        not_before=now,
        not_after=now + timedelta(days=30),
        csr_fingerprint="00",
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        device_id=device_id,
        slot="default",
    )


def envelope_bytes(type_: str, data: dict[str, object]) -> bytes:
    """A CloudEvents envelope as raw JSON, so its data can be anything."""
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


async def publish_raw(
    settings: BusSettings,
    exchange: str,
    routing_key: str,
    bodies: list[bytes],
    dead_queue: str | None = None,
) -> tuple[list[Reply], bytes | None]:
    """Publish bodies with reply_to; return the replies and, if asked, a dead-lettered body.

    ``exchange`` is ``commands``, ``events``, or ``""``: the default exchange, which
    routes straight to the queue ``routing_key`` (AMQP 0-9-1 §3.1.3.1).
    """
    prefix = settings.amqp_prefix
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(f"{prefix}lamassu.{exchange}")
        )
        dead_bodies: asyncio.Queue[bytes] = asyncio.Queue()
        if dead_queue is not None:

            async def on_dead(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    await dead_bodies.put(message.body)

            dead = await channel.get_queue(f"{prefix}{dead_queue}")
            await dead.consume(on_dead)
        correlations = [str(uuid.uuid4()) for _ in bodies]
        for body, correlation in zip(bodies, correlations, strict=True):
            await target.publish(
                aio_pika.Message(
                    body, reply_to=replies.name, correlation_id=correlation
                ),
                routing_key=routing_key,
            )
        answered: dict[str, Reply] = {}
        async with asyncio.timeout(10), replies.iterator() as iterator:
            async for message in iterator:
                await message.ack()
                if message.correlation_id in correlations:
                    answered[message.correlation_id] = Reply.model_validate_json(
                        message.body
                    )
                    if len(answered) == len(bodies):
                        break
        dead_body = None
        if dead_queue is not None:
            async with asyncio.timeout(10):
                while (dead_body := await dead_bodies.get()) not in bodies:
                    pass
        return [answered[c] for c in correlations], dead_body


async def known_dms(
    bus: Bus, db: asyncpg.Pool, name: str, *, revoked: bool = False
) -> None:
    """Tell the device worker a DMS exists (the dms.create / dms.update it projects),
    and wait until it has committed it."""
    now = datetime.now(UTC)
    view = DMSView(
        name=name,
        status=DMSStatus.REVOKED if revoked else DMSStatus.ACTIVE,
        authorized_cas=["any"],
        certificate_serial="0a",
        certificate_pem="-",
        created_at=now,
    )
    event = new_message(source="tests", data=DMSCreated.of(view), now=now)
    await bus.publish(bus.topology.events, event)
    await processed(db, event.id)
