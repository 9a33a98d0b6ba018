"""Expiry rules: the pure function, and the set-based SQL that must agree with it."""

from __future__ import annotations

import itertools
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca_worker.expiry import shard_bounds, shard_of, status_at
from ca_worker.store import Store
from contracts.ca import CertificateStatus

ACTIVE = CertificateStatus.ACTIVE
ABOUT = CertificateStatus.ABOUT_TO_EXPIRE
EXPIRED = CertificateStatus.EXPIRED
REVOKED = CertificateStatus.REVOKED

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("current", "left", "threshold", "expected"),
    [
        (ACTIVE, 100 * DAY, 30, ACTIVE),
        (ACTIVE, 30 * DAY + timedelta(seconds=1), 30, ACTIVE),
        (ACTIVE, 30 * DAY, 30, ABOUT),  # the threshold's own instant warns
        (ACTIVE, DAY, 30, ABOUT),
        (
            ACTIVE,
            timedelta(0),
            30,
            ABOUT,
        ),  # notAfter is still valid (RFC 5280 §4.1.2.5)
        (ACTIVE, -timedelta(seconds=1), 30, EXPIRED),
        (ACTIVE, 40 * DAY, 45, ABOUT),  # per CA
        (ACTIVE, DAY, 0, ACTIVE),  # 0: no warning period
        (ACTIVE, -DAY, 0, EXPIRED),
        (ABOUT, 10 * DAY, 30, ABOUT),
        (ABOUT, 100 * DAY, 30, ABOUT),  # a shorter threshold never goes back
        (ABOUT, -DAY, 30, EXPIRED),
        (EXPIRED, 100 * DAY, 30, EXPIRED),
        (REVOKED, -DAY, 30, REVOKED),  # revoked stays revoked
        (REVOKED, DAY, 30, REVOKED),
    ],
)
def test_status_at(
    current: CertificateStatus,
    left: timedelta,
    threshold: int,
    expected: CertificateStatus,
) -> None:
    assert expected is status_at(current, NOW + left, NOW, threshold)


def test_shards_cover_every_serial_once_and_spread() -> None:
    serials = [secrets.token_hex(16) for _ in range(4000)]
    counts = [0] * 16
    for serial in serials:
        counts[shard_of(serial, 16)] += 1
    assert 4000 == sum(counts)
    assert min(counts) > 4000 / 16 / 2  # roughly even: no shard starves or floods
    assert 0 == shard_of("00", 16)
    assert 0 == shard_of("010fffffff", 16)  # only the low 32 bits count
    assert 1 == shard_of("0110000000", 16)
    assert 15 == shard_of("ffffffff", 16)


@pytest.mark.parametrize("shards", [1, 3, 16, 1000, 1024])
def test_shard_bounds_cut_the_key_range_into_the_shards_of_shard_of(
    shards: int,
) -> None:
    bounds = [shard_bounds(shard, shards) for shard in range(shards)]
    assert 0 == bounds[0][0]
    assert 1 << 32 == bounds[-1][1]
    assert all(
        a[1] == b[0] for a, b in itertools.pairwise(bounds)
    )  # no gap, no overlap
    for shard, (low, high) in enumerate(bounds):
        assert shard == shard_of(f"{low:08x}", shards)
        assert shard == shard_of(f"{high - 1:08x}", shards)


def _any_der() -> bytes:
    """A real certificate's DER: the sweep reads columns, but views render the DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "any")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


DER = _any_der()


async def _seed_ca(conn: asyncpg.Connection, name: str, threshold: int) -> None:
    await conn.execute(
        """INSERT INTO ca.cas (name, key_type, key_id, engine, serial, subject, status,
               not_before, not_after, about_to_expire_days, certificate_der)
           VALUES ($1, 'ec-p256', 'k', 'gopem', $2, $3, 'ACTIVE', $4, $5, $6, $7)""",
        name,
        secrets.token_hex(16),
        f"CN={name}",
        NOW - 1000 * DAY,
        NOW + 1000 * DAY,
        threshold,
        DER,
    )


async def test_the_sweep_sql_agrees_with_status_at(db: asyncpg.Pool) -> None:
    """Every (status, time left, threshold) case, swept shard by shard in SQL, ends where
    ``status_at`` says, and each certificate is taken by exactly its own shard."""
    store = Store()
    shards = 4
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            thresholds = {f"agree-{uuid.uuid4().hex[:8]}-{t}": t for t in (0, 30, 45)}
            for name, threshold in thresholds.items():
                await _seed_ca(conn, name, threshold)
            lefts = [100, 46, 45, 40, 31, 30, 29, 1, 0, -1, -400]
            cases = [
                (secrets.token_hex(16), name, current, NOW + days_left * DAY)
                for name in thresholds
                for current in (ACTIVE, ABOUT, EXPIRED, REVOKED)
                for days_left in lefts
            ]
            await conn.executemany(
                """INSERT INTO ca.certificates (serial, ca, subject, issuer, status,
                       not_before, not_after, csr_fingerprint, certificate_der)
                   VALUES ($1, $2, 'CN=x', 'CN=y', $3, $4, $5, 'f', $6)""",
                [
                    (s, ca, st.value, NOW - 500 * DAY, na, DER)
                    for s, ca, st, na in cases
                ],
            )
            moved: dict[str, tuple[int, CertificateStatus, CertificateStatus]] = {}
            for shard in range(shards):
                for change in await store.expire_certificates(
                    conn, as_of=NOW, shard=shard, shards=shards
                ):
                    serial = change.updated.serial
                    assert serial not in moved
                    moved[serial] = (
                        shard,
                        change.previous.status,
                        change.updated.status,
                    )
            rows = {
                r["serial"]: CertificateStatus(r["status"])
                for r in await conn.fetch(
                    "SELECT serial, status FROM ca.certificates WHERE serial = ANY($1)",
                    [c[0] for c in cases],
                )
            }
        finally:
            await tx.rollback()
    for serial, ca, current, not_after in cases:
        expected = status_at(current, not_after, NOW, thresholds[ca])
        assert expected is rows[serial], (current, not_after - NOW, thresholds[ca])
        if expected is current:
            assert serial not in moved
        else:
            assert (shard_of(serial, shards), current, expected) == moved[serial]
    assert len(moved) > 20  # the table above does move plenty


async def test_the_ca_sweep_sql_agrees_with_status_at(db: asyncpg.Pool) -> None:
    store = Store()
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            # Earlier tests' CAs are far from expiry; these three are not.
            names = []
            for days_left, threshold in ((10, 30), (-1, 30), (10, 5)):
                name = f"caexp-{uuid.uuid4().hex[:8]}"
                names.append(name)
                await _seed_ca(conn, name, threshold)
                await conn.execute(
                    "UPDATE ca.cas SET not_after = $2 WHERE name = $1",
                    name,
                    NOW + days_left * DAY,
                )
            changes = {
                c.updated.name: (c.previous.status, c.updated.status)
                for c in await store.expire_cas(conn, NOW)
            }
        finally:
            await tx.rollback()
    assert (ACTIVE, ABOUT) == changes[names[0]]
    assert (ACTIVE, EXPIRED) == changes[names[1]]
    assert names[2] not in changes
