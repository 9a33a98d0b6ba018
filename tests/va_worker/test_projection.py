"""The VA's projection under at-least-once delivery: a redelivered or reordered event
never turns revoked back to good; garbage is dead-lettered and the VA keeps serving;
requests it cannot answer get their error code and reason."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca_worker.settings import Settings as CaSettings
from contracts.ca import (
    CertificateStatusUpdate,
    CertificateView,
    RevocationReason,
    RevokeCA,
    RevokeCertificate,
)
from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode
from contracts.va import GetCRL, IssueResponderCertificate, SignCRL
from runtime.bus import Bus
from tests.device_worker.device_bus import envelope_bytes, publish_raw
from tests.envelopes import raw_envelope
from tests.pki import call, unique
from tests.va_worker.conftest import (
    VA,
    ask,
    new_ca,
    new_leaf,
    ocsp_request,
    wait_status,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED


def event(type_: str, data: CertificateView | CertificateStatusUpdate) -> CloudEvent:
    return raw_envelope(type_=type_, source="tests", data=data, now=datetime.now(UTC))


async def processed(db: asyncpg.Pool, ids: list[str]) -> None:
    """Wait until the VA has committed its handling of every id."""
    async with asyncio.timeout(10):
        while await db.fetchval(
            "SELECT count(*) FROM va.inbox WHERE id = ANY($1::text[])", ids
        ) < len(set(ids)):
            await asyncio.sleep(0.02)


async def test_redelivered_or_reordered_events_never_unrevoke(
    bus: Bus, va: VA, db: asyncpg.Pool, tmp_path: Path
) -> None:
    ca, _ = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, GOOD)
    reply = await call(
        bus,
        RevokeCertificate(
            serial=leaf.view.serial, reason=RevocationReason.KEY_COMPROMISE
        ),
    )
    assert reply.ok, reply.error
    revoked = CertificateView.model_validate(reply.result)
    await wait_status(va.url, leaf.certificate, issuer, REVOKED)

    # Late arrivals: the creation again (a new id), an update back to ACTIVE, and a
    # redelivery of one of them (same id).
    stale_create = event("certificate.create", leaf.view)
    back_to_good = event(
        CertificateStatusUpdate.TYPE,
        CertificateStatusUpdate(previous=revoked, updated=leaf.view),
    )
    for message in (stale_create, back_to_good, stale_create):
        await bus.publish(bus.topology.events, message)
    await processed(db, [stale_create.id, back_to_good.id])

    nonce = os.urandom(16)
    for body in (
        ocsp_request(leaf.certificate, issuer),
        ocsp_request(leaf.certificate, issuer, nonce=nonce),
    ):
        response = await ask(va.url, body)
        assert REVOKED == response.certificate_status
        assert x509.ReasonFlags.key_compromise == response.revocation_reason
    assert "REVOKED" == await db.fetchval(
        "SELECT status FROM va.certificates WHERE serial = $1", leaf.view.serial
    )

    # Reordered for a certificate the VA has not seen: revoked first, created after.
    serial = secrets.token_hex(16)
    ghost = leaf.view.model_copy(update={"serial": serial})
    ghost_revoked = revoked.model_copy(update={"serial": serial})
    first = event(
        CertificateStatusUpdate.TYPE,
        CertificateStatusUpdate(previous=ghost, updated=ghost_revoked),
    )
    second = event("certificate.create", ghost)
    for message in (first, second):
        await bus.publish(bus.topology.events, message)
    await processed(db, [first.id, second.id])
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            issuer_name_hash=_sha1(issuer.subject.public_bytes()),
            issuer_key_hash=_sha1(
                issuer.public_key().public_bytes(
                    serialization.Encoding.X962,
                    serialization.PublicFormat.UncompressedPoint,
                )
            ),
            serial_number=int(serial, 16),
            algorithm=hashes.SHA1(),  # noqa: S303 - RFC 5019 §2.1.1
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    response = await ask(va.url, request)
    assert REVOKED == response.certificate_status


def _sha1(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - RFC 5019 §2.1.1
    digest.update(data)
    return digest.finalize()


async def test_garbage_events_are_dead_lettered_and_serving_goes_on(
    bus: Bus, va: VA, ca_service: CaSettings, tmp_path: Path
) -> None:
    """An undecodable body and a certificate.create whose data is not a certificate
    are refused as invalid and dead-lettered; the VA answers the next request."""
    bodies = [
        b"not json at all",
        envelope_bytes("certificate.create", {"serial": 5, "ca": []}),
        envelope_bytes("crl.create", {"ca": "x", "number": "1", "crl_der_b64": "!"}),
    ]
    replies, dead = await publish_raw(
        ca_service, "events", "certificate.create", bodies[:2], "va.events.dead"
    )
    assert [ErrorCode.INVALID] * 2 == [r.error.code for r in replies if r.error]
    assert dead in bodies
    replies, _ = await publish_raw(ca_service, "events", "crl.create", bodies[2:])
    assert [ErrorCode.INVALID] == [r.error.code for r in replies if r.error]
    commands = [
        envelope_bytes("crl.get", {"ca": ""}),
        envelope_bytes("crl.get", {"ca": "x", "delta": "maybe"}),
        envelope_bytes("crl.sign", {"ca": "x", "scope": "partial"}),
        envelope_bytes("ocsp.responder.issue", {"ca": "no spaces allowed"}),
    ]
    for body in commands:
        type_ = json.loads(body)["type"]
        replies, _ = await publish_raw(ca_service, "commands", type_, [body])
        assert [ErrorCode.INVALID] == [r.error.code for r in replies if r.error], type_

    ca, _ = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, GOOD)


async def test_refusals_name_their_reason(bus: Bus, va: VA, tmp_path: Path) -> None:
    """crl.get, crl.sign and ocsp.responder.issue refuse what they cannot do."""
    del va
    ghost = unique("no-such-ca")
    revoked_ca, _ = await new_ca(bus, tmp_path)
    assert (await call(bus, RevokeCA(name=revoked_ca.name))).ok
    cases = [
        (GetCRL(ca=ghost), ErrorCode.NOT_FOUND, f"no CRL for CA {ghost!r}"),
        (GetCRL(ca=ghost, delta=True), ErrorCode.NOT_FOUND, "no delta CRL"),
        (SignCRL(ca=ghost), ErrorCode.NOT_FOUND, f"no CA named {ghost!r}"),
        (SignCRL(ca=revoked_ca.name), ErrorCode.CONFLICT, "cannot sign: it is revoked"),
        (
            IssueResponderCertificate(ca=revoked_ca.name, csr_pem="garbage"),
            ErrorCode.INVALID,
            "not a PKCS#10 request",
        ),
    ]
    for request, code, reason in cases:
        reply = await call(bus, request)
        assert reply.error is not None, request
        assert code == reply.error.code, reply.error
        assert reason in reply.error.message
        assert "\n" not in reply.error.message
