"""Renewal rules over real HTTPS (issue 14): only the slot's current certificate
re-enrolls, inside the DMS's window, and by default the renewal revokes what it
superseded in the same transaction; decommissioning revokes every certificate a device
was ever issued.

CSRs come from the openssl command; waits are polls and events under deadlines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import (
    CertificateStatus,
    CertificateView,
    GetCertificate,
    RevokeCertificate,
)
from contracts.devices import DecommissionDevice
from contracts.dms import CreateDMS, DMSView, RevokeDMS, UpdateDMSPolicy
from contracts.errors import ErrorCode
from runtime.bus import Bus
from tests.conftest import Gateway
from tests.est_gateway.test_gateway import (
    Identity,
    Stage,
    make_dms_identity,
    new_stage,
    openssl_csr,
    single_certificate,
)
from tests.pki import EventLog, call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def serial_of(certificate: x509.Certificate) -> str:
    text = format(certificate.serial_number, "x")
    return text if len(text) % 2 == 0 else "0" + text


async def policy_stage(
    bus: Bus, gateway: Gateway, directory: Path, **policy: object
) -> Stage:
    """A stage whose DMS has the given policy (CreateDMS fields)."""
    stage = await new_stage(bus, gateway, directory)
    name = unique("dms-policy")
    identity, csr = make_dms_identity(directory, name)
    reply = await call(
        bus,
        CreateDMS.model_validate(
            {"name": name, "authorized_cas": [stage.ca.name], "csr_pem": csr} | policy
        ),
    )
    assert reply.ok, reply.error
    dms = DMSView.model_validate(reply.result)
    identity.cert.write_text(dms.certificate_pem)
    return Stage(stage.ca, dms, identity, directory, stage.est)


async def enroll(stage: Stage, device_id: str) -> tuple[x509.Certificate, Identity]:
    body, key = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    certificate = single_certificate(payload)
    identity = Identity(stage.directory / f"{serial_of(certificate)}.pem", key)
    identity.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate, identity


async def reenroll(
    stage: Stage, device_id: str, identity: Identity, *, rekey: bool = False
) -> tuple[int, str, tuple[x509.Certificate, Identity] | None]:
    """simplereenroll with the same key (or a new one), authenticated by ``identity``."""
    body, _ = openssl_csr(
        stage.directory, device_id, key=None if rekey else identity.key
    )
    status, _, payload = await stage.est.enroll(
        stage.ca.name, body, identity, "simplereenroll"
    )
    if status != 200:
        return status, payload.decode(), None
    certificate = single_certificate(payload)
    renewed = Identity(stage.directory / f"{serial_of(certificate)}.pem", identity.key)
    renewed.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return status, "", (certificate, renewed)


async def certificate(bus: Bus, serial: str) -> CertificateView:
    reply = await call(bus, GetCertificate(serial=serial))
    assert reply.ok, reply.error
    return CertificateView.model_validate(reply.result)


async def count(db: asyncpg.Pool, device_id: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM ca.certificates WHERE device_id = $1", device_id
        )
    )


async def until(probe: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not await probe():
            await asyncio.sleep(0.02)


@pytest.fixture
async def events(bus: Bus) -> EventLog:
    log = EventLog()
    await bus.subscribe("certificate.#", log.on_message)
    return log


async def test_renewal_revokes_the_superseded_certificate(
    bus: Bus, gateway: Gateway, tmp_path: Path, events: EventLog
) -> None:
    """By default a renewal revokes the old certificate (superseded) with the new one
    stored, its event follows the new certificate's, and the old one renews no more."""
    stage = await policy_stage(bus, gateway, tmp_path)
    device_id = unique("renew")
    first, identity = await enroll(stage, device_id)
    status, _, renewed = await reenroll(stage, device_id, identity)
    assert 200 == status
    assert renewed is not None
    old = await certificate(bus, serial_of(first))
    assert (CertificateStatus.REVOKED, "superseded") == (
        old.status,
        old.revocation_reason,
    )
    revoked = await events.wait_for(
        "certificate.status.update", f"certificate/{serial_of(first)}"
    )
    created = await events.wait_for(
        "certificate.create", f"certificate/{serial_of(renewed[0])}"
    )
    assert events.events.index(created) < events.events.index(revoked)
    assert ("REVOKED", "superseded") == (
        revoked.data["updated"]["status"],
        revoked.data["updated"]["revocation_reason"],
    )

    # The same request again is a retry (RFC 7030 §4.2.3): the same certificate.
    status, _, again = await reenroll(stage, device_id, identity)
    assert 200 == status
    assert again is not None
    assert renewed[0] == again[0]
    # Another request with the superseded certificate is refused.
    status, reason, _ = await reenroll(stage, device_id, identity, rekey=True)
    assert 403 == status
    assert "revoked" in reason


async def test_without_revoke_on_reenroll_only_the_current_certificate_renews(
    bus: Bus, gateway: Gateway, tmp_path: Path, db: asyncpg.Pool
) -> None:
    """--no-revoke-on-reenroll keeps the old certificate active, but only the slot's
    current certificate may re-enroll: the old one gets 403 and nothing is issued."""
    stage = await policy_stage(bus, gateway, tmp_path, revoke_on_reenroll=False)
    device_id = unique("keep")
    first, identity = await enroll(stage, device_id)
    status, _, renewed = await reenroll(stage, device_id, identity)
    assert 200 == status
    assert renewed is not None
    assert CertificateStatus.ACTIVE is (await certificate(bus, serial_of(first))).status

    status, reason, _ = await reenroll(stage, device_id, identity, rekey=True)
    assert 403 == status
    assert "only the slot's current certificate may re-enroll" in reason
    assert serial_of(renewed[0]) in reason
    assert 2 == await count(db, device_id)


async def test_reenroll_window(
    bus: Bus, gateway: Gateway, tmp_path: Path, db: asyncpg.Pool
) -> None:
    """Outside the DMS's window (30 days before a 365-day expiry) re-enrollment gets
    403 naming when it opens; once the window is widened past the validity it works."""
    stage = await policy_stage(bus, gateway, tmp_path, reenroll_window_days=30)
    device_id = unique("window")
    _, identity = await enroll(stage, device_id)
    status, reason, _ = await reenroll(stage, device_id, identity)
    assert 403 == status
    assert "re-enrollment opens 30 days before expiry" in reason
    assert stage.dms.name in reason
    assert 1 == await count(db, device_id)

    reply = await call(
        bus, UpdateDMSPolicy(name=stage.dms.name, reenroll_window_days=400)
    )
    assert reply.ok, reply.error
    assert 400 == DMSView.model_validate(reply.result).reenroll_window_days
    status, _, renewed = await reenroll(stage, device_id, identity)
    assert 200 == status
    assert renewed is not None
    assert 2 == await count(db, device_id)


async def test_decommission_revokes_every_certificate_the_device_held(
    bus: Bus, gateway: Gateway, tmp_path: Path, db: asyncpg.Pool
) -> None:
    """Three certificates stay active without revoke-on-reenroll; decommissioning
    revokes all three (cessationOfOperation), not only the slot's."""
    stage = await policy_stage(bus, gateway, tmp_path, revoke_on_reenroll=False)
    device_id = unique("retire")
    first, identity = await enroll(stage, device_id)
    _, _, second = await reenroll(stage, device_id, identity)
    assert second is not None
    _, _, third = await reenroll(stage, device_id, second[1])
    assert third is not None
    serials = [serial_of(c) for c in (first, second[0], third[0])]
    for serial in serials:
        assert CertificateStatus.ACTIVE is (await certificate(bus, serial)).status

    reply = await call(bus, DecommissionDevice(id=device_id))
    assert reply.ok, reply.error

    async def all_revoked() -> bool:
        rows = await db.fetch(
            "SELECT status, revocation_reason FROM ca.certificates"
            " WHERE serial = ANY($1::text[])",
            serials,
        )
        return [("REVOKED", "cessationOfOperation")] * 3 == [
            (row["status"], row["revocation_reason"]) for row in rows
        ]

    await until(all_revoked)


@pytest.mark.parametrize(
    ("target", "code", "reason"),
    [
        ("missing", ErrorCode.NOT_FOUND, "no DMS named"),
        ("revoked", ErrorCode.CONFLICT, "is revoked"),
    ],
    ids=["unknown-dms", "revoked-dms"],
)
async def test_policy_update_refusals(
    bus: Bus,
    gateway: Gateway,
    tmp_path: Path,
    *,
    target: str,
    code: ErrorCode,
    reason: str,
) -> None:
    """A policy update of no DMS, or of a revoked one, is refused with its code."""
    name = unique("missing")
    if target == "revoked":
        stage = await policy_stage(bus, gateway, tmp_path)
        name = stage.dms.name
        assert (await call(bus, RevokeDMS(name=name))).ok
    reply = await call(bus, UpdateDMSPolicy(name=name, allow_replace=True))
    assert reply.error is not None
    assert code is reply.error.code
    assert reason in reply.error.message


async def test_same_request_after_revocation_is_a_new_enrollment(
    bus: Bus, gateway: Gateway, tmp_path: Path, db: asyncpg.Pool
) -> None:
    """A device that kept its key enrolls afresh once its certificate is revoked: the
    request means the same, but a dead answer is no retry, so a new one is issued."""
    stage = await policy_stage(bus, gateway, tmp_path)
    device_id = unique("again")
    body, _ = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    first = single_certificate(payload)
    reply = await call(bus, RevokeCertificate(serial=serial_of(first)))
    assert reply.ok, reply.error

    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    second = single_certificate(payload)
    assert first.serial_number != second.serial_number
    assert first.public_key() == second.public_key()
    assert 2 == await count(db, device_id)
