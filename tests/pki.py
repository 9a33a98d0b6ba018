"""Test helpers: throwaway keys and CSRs built in memory, a bus call shortcut, and an
event log that tests await on (with a deadline, never a sleep)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.envelope import CloudEvent, new_message
from contracts.errors import Reply
from contracts.message import Message
from runtime.bus import Bus


def make_csr(
    common_name: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    dns_names: tuple[str, ...] = (),
    extra_extensions: tuple[x509.ExtensionType, ...] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
            critical=False,
        )
    for extension in extra_extensions:
        builder = builder.add_extension(extension, critical=False)
    return key, builder.sign(key, hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def tampered_csr_pem(common_name: str) -> str:
    """A well-formed CSR whose signature does not verify (one signature byte flipped)."""
    _, csr = make_csr(common_name)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    return (
        x509.load_der_x509_csr(bytes(der))
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


async def call(bus: Bus, request: Message, timeout: float = 15) -> Reply:
    message = new_message(
        source="tests",
        data=request,
        now=datetime.now(UTC),
    )
    return await bus.request(message, timeout=timeout)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


Where = Callable[[dict[str, Any]], bool]


class EventLog:
    """Collects events from a temporary subscription; tests await what they expect."""

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []
        self._changed = asyncio.Condition()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            # Logged before the first await (the ack): aio-pika runs each delivery in
            # a task of its own, so only then is the log's order the delivery order.
            self.events.append(CloudEvent.model_validate_json(message.body))
        async with self._changed:
            self._changed.notify_all()

    def matching(
        self, type_: str, subject: str, where: Where | None = None
    ) -> list[CloudEvent]:
        return [
            e
            for e in self.events
            if (e.type, e.subject) == (type_, subject)
            and (where is None or where(e.data))
        ]

    async def wait_for(
        self, type_: str, subject: str, where: Where | None = None, timeout: float = 10
    ) -> CloudEvent:
        return (await self.wait_for_all(type_, subject, where, 1, timeout))[0]

    async def wait_for_all(
        self,
        type_: str,
        subject: str,
        where: Where | None = None,
        count: int = 1,
        timeout: float = 10,
    ) -> list[CloudEvent]:
        """At least ``count`` matching events, once they have arrived."""
        async with asyncio.timeout(timeout), self._changed:
            while len(found := self.matching(type_, subject, where)) < count:
                await self._changed.wait()
            return found


class Clock:
    """An injectable ``now``: real time plus an offset a test moves (never a sleep)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset
