"""The VA's background work: renewing delegated responder certificates and CRLs before
they end (walked forward with an injected ``now``, never waited for), and catching up
with what was issued before it existed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from contracts.ca import RevokeCertificate
from engines import PemFileEngine
from runtime.bus import Bus
from tests.pki import call
from tests.va_worker.conftest import (
    VA,
    ask,
    new_ca,
    new_leaf,
    ocsp_request,
    wait_crl,
    wait_status,
)
from va_worker.catch_up import CatchUp
from va_worker.served import Served
from va_worker.store import Store
from va_worker.upkeep import Upkeep

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_responder_and_crls_are_renewed_before_they_end(
    bus: Bus, va: VA, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """Within VA_RESPONDER_RENEW_HOURS of its end, a new key is made in VA_KEYS and the
    CA worker issues its certificate; answers are then signed with it. CRLs with a
    quarter of their validity left are signed again (before nextUpdate)."""
    ca, _ = await new_ca(bus, tmp_path)
    full = await wait_crl(va.url, ca.name)
    number = full.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    first = await wait_status(
        va.url, leaf.certificate, issuer, ocsp.OCSPCertStatus.GOOD
    )
    [old] = first.certificates
    settings = va.settings
    upkeep = Upkeep(
        pool=db,
        store=Store(),
        engine=PemFileEngine(settings.va_keys),  # the VA's own key directory
        clock=lambda: datetime.now(UTC),
        interval=settings.va_upkeep_seconds,
        crl_validity_hours=settings.va_crl_validity_hours,
        delta_crl_validity_hours=settings.va_delta_crl_validity_hours,
        responder_validity_hours=settings.va_responder_validity_hours,
        responder_renew=timedelta(hours=settings.va_responder_renew_hours),
    )
    soon = old.not_valid_after_utc - timedelta(hours=1)
    assert await upkeep.round(soon) >= 1
    assert 0 == await upkeep.round(soon)  # asked already: nothing new is due

    body = ocsp_request(leaf.certificate, issuer)
    async with asyncio.timeout(15):
        while True:
            [current] = (await ask(va.url, body)).certificates
            if current.serial_number != old.serial_number:
                break
            await asyncio.sleep(0.02)
    current.verify_directly_issued_by(issuer)
    assert current.public_key() != old.public_key()
    assert current.not_valid_after_utc > old.not_valid_after_utc
    # The hot copy changes in the handler, its commit follows: wait for the row.
    async with asyncio.timeout(10):
        while await db.fetchval(
            "SELECT pending_key_id FROM va.responders WHERE ca = $1", ca.name
        ):
            await asyncio.sleep(0.02)
    assert full.next_update_utc is not None
    assert (
        soon > full.next_update_utc - (full.next_update_utc - full.last_update_utc) / 4
    )
    renewed = await wait_crl(va.url, ca.name, at_least=number + 1)
    assert renewed.last_update_utc > full.last_update_utc
    key_files = list(settings.va_keys.glob("*.pem"))
    assert all(0o600 == f.stat().st_mode & 0o777 for f in key_files)


async def test_catch_up_learns_what_was_issued_before_the_va(
    bus: Bus, va: VA, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """A VA that never saw a CA's events (its queue did not exist yet) learns the CA
    from ca.list and its certificates, with their statuses, from certificate.list."""
    ca, _ = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    good = await new_leaf(bus, ca.name, tmp_path)
    revoked = await new_leaf(bus, ca.name, tmp_path)
    assert (await call(bus, RevokeCertificate(serial=revoked.view.serial))).ok
    await wait_status(va.url, revoked.certificate, issuer, ocsp.OCSPCertStatus.REVOKED)
    # Forget them, as a VA deployed after they were issued would not know them.
    await db.execute("DELETE FROM va.certificates WHERE ca = $1", ca.name)

    served = Served(validity=timedelta(hours=1), lookup=_nothing)
    catch_up = CatchUp(
        bus=bus, pool=db, store=Store(), served=served, clock=lambda: datetime.now(UTC)
    )
    await catch_up.run(lambda: None)
    assert issuer == served.ca_certificate(ca.name)
    assert served.ca_certificate("LAMASSU-DMS-MANAGER") is not None
    rows = await db.fetch(
        "SELECT serial, status FROM va.certificates WHERE ca = $1", ca.name
    )
    statuses = {row["serial"]: row["status"] for row in rows}
    assert "ACTIVE" == statuses[good.view.serial]
    assert "REVOKED" == statuses[revoked.view.serial]


async def _nothing(_ca: str, _serial: int) -> None:
    return None


async def test_a_new_responder_request_replaces_the_pending_one(
    va: VA, db: asyncpg.Pool
) -> None:
    """The key of a request that never got its certificate is handed back to be
    deleted when the next request replaces it; a certificate for it is then ignored."""
    del va  # its migrations made schema va
    store, now = Store(), datetime.now(UTC)
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            assert (
                await store.responder_requested(conn, "ca-x", "k1", "f1", now) is None
            )
            assert "k1" == await store.responder_requested(
                conn, "ca-x", "k2", "f2", now
            )
            assert await store.responder_issued(conn, "ca-x", "f1", b"0", now) is None
            assert "k2" == await store.responder_issued(conn, "ca-x", "f2", b"0", now)
        finally:
            await transaction.rollback()
