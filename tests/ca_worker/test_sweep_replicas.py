"""Sweeps across CA worker replicas: a replica killed mid-sweep loses no shard and
applies none twice, and a schedule shared by replicas fires once per period."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from ca_worker.expiry import status_at
from contracts.ca import CertificateStatus, CreateCA
from contracts.envelope import CloudEvent
from contracts.names import Topology
from contracts.sweeps import RunSweep, SweepView
from runtime.bus import Bus
from tests.conftest import (
    AMQP_URL,
    Backends,
    isolated_backends,
    wait_until_answered,
)
from tests.pki import call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.timeout(180)]

SHARDS = 16
CERTIFICATES = 20_000
THRESHOLD_DAYS = 30  # CreateCA's default about_to_expire_days
SENTINEL = "test.sweep.sentinel"


@pytest.fixture
def replica_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


def _start_replica(
    backends: Backends, directory: Path, name: str, **extra: str
) -> subprocess.Popen[bytes]:
    # Replicas share the key directory, as replicas sharing a volume would.
    with (directory / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ca_worker"],
            env=backends.env(
                GOPEM_DATA=str(directory / "keys"),
                SWEEP_SHARDS=str(SHARDS),
                # One shard in flight per replica, so the shards spread over both.
                SWEEP_PREFETCH="1",
                **extra,
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@contextlib.contextmanager
def _replicas(
    backends: Backends, directory: Path, count: int, **extra: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``count`` replicas one after the other; stop the survivors afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.extend(
            _start_replica(backends, directory, f"replica-{i}", **extra)
            for i in range(count)
        )
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


@contextlib.asynccontextmanager
async def _database(backends: Backends) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(
        host=backends.pg_host,
        port=backends.pg_port,
        user=backends.pg_user,
        database=backends.database,
    )
    try:
        yield conn
    finally:
        await conn.close()


async def _wait_for_consumers(
    topology: Topology,
    purpose: str,
    count: int,
    replicas: list[subprocess.Popen[bytes]],
) -> None:
    """Wait (deadline 60 s) until ``count`` replicas consume ``ca.<purpose>``."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection, asyncio.timeout(60):
        channel = await connection.channel()
        while True:
            for process in replicas:
                assert process.poll() is None, "a replica exited; see its log"
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                queue = await channel.declare_queue(
                    topology.queue("ca", purpose), passive=True
                )
                if (queue.declaration_result.consumer_count or 0) >= count:
                    return
            if channel.is_closed:
                channel = await connection.channel()
            await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Seeded:
    serial: str
    status: CertificateStatus
    not_after: datetime


def _seed_rows(now: datetime) -> list[Seeded]:
    """Every case of ``status_at``, away from its boundaries so a few seconds between
    seeding and the sweep's ``as_of`` change nothing."""
    rng = random.Random(20_000)
    days = timedelta(days=1)
    cases = [
        # (weight, status, earliest and latest not_after relative to now)
        (30, CertificateStatus.ACTIVE, -900 * days, -1 * days),  # to EXPIRED
        (20, CertificateStatus.ACTIVE, 1 * days, 29 * days),  # to ABOUT_TO_EXPIRE
        (10, CertificateStatus.ABOUT_TO_EXPIRE, -20 * days, -1 * days),  # to EXPIRED
        (5, CertificateStatus.ABOUT_TO_EXPIRE, 1 * days, 29 * days),  # stays
        (25, CertificateStatus.ACTIVE, 31 * days, 900 * days),  # stays
        (5, CertificateStatus.EXPIRED, -900 * days, -1 * days),  # stays
        (5, CertificateStatus.REVOKED, -900 * days, 900 * days),  # stays
    ]
    weights = [c[0] for c in cases]
    rows = []
    for _ in range(CERTIFICATES):
        _weight, status, low, high = rng.choices(cases, weights)[0]
        span = (high - low).total_seconds()
        rows.append(
            Seeded(
                serial=f"{rng.getrandbits(128):032x}",
                status=status,
                not_after=now + low + timedelta(seconds=rng.uniform(0, span)),
            )
        )
    return rows


async def _copy_certificates(
    conn: asyncpg.Connection, ca: str, der: bytes, rows: list[Seeded], now: datetime
) -> None:
    """COPY the rows in; the sweep reads only columns, so one DER serves every row."""
    await conn.copy_records_to_table(
        "certificates",
        schema_name="ca",
        columns=[
            "serial",
            "ca",
            "subject",
            "issuer",
            "status",
            "not_before",
            "not_after",
            "revoked_at",
            "revocation_reason",
            "csr_fingerprint",
            "certificate_der",
        ],
        records=[
            (
                row.serial,
                ca,
                f"CN={row.serial}",
                f"CN={ca}",
                row.status.value,
                row.not_after - timedelta(days=365),
                row.not_after,
                now - timedelta(days=1)
                if row.status is CertificateStatus.REVOKED
                else None,
                "keyCompromise" if row.status is CertificateStatus.REVOKED else None,
                row.serial,
                der,
            )
            for row in rows
        ],
    )


class Collector:
    """Every event on one exclusive queue, and a sentinel that proves it saw them all."""

    def __init__(
        self, topology: Topology, channel: aio_pika.abc.AbstractChannel
    ) -> None:
        self.events: list[CloudEvent] = []
        self._topology = topology
        self._channel = channel
        self._sentinel = asyncio.Event()

    @classmethod
    @contextlib.asynccontextmanager
    async def following(cls, topology: Topology, key: str) -> AsyncIterator[Collector]:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1000)
            collector = cls(topology, channel)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            for routing_key in (key, SENTINEL):
                await queue.bind(topology.events, routing_key=routing_key)
            await queue.consume(collector._on_message, no_ack=True)
            yield collector

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.routing_key == SENTINEL:
            self._sentinel.set()
        else:
            self.events.append(CloudEvent.model_validate_json(message.body))

    async def caught_up(self) -> None:
        """Return once everything published before this call has arrived.

        One queue is FIFO: whatever the relays had confirmed is ahead of the sentinel.
        """
        exchange = await self._channel.get_exchange(self._topology.events)
        await exchange.publish(aio_pika.Message(b"{}"), routing_key=SENTINEL)
        await self._sentinel.wait()


async def _until(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    """Poll until ``sql`` is true (the caller holds the deadline)."""
    while not await conn.fetchval(sql, *args):
        await asyncio.sleep(0.02)


async def _seed(conn: asyncpg.Connection, ca: str) -> list[Seeded]:
    der = await conn.fetchval("SELECT certificate_der FROM ca.cas WHERE name = $1", ca)
    assert THRESHOLD_DAYS == await conn.fetchval(
        "SELECT about_to_expire_days FROM ca.cas WHERE name = $1", ca
    )
    now = datetime.now(UTC)
    rows = _seed_rows(now)
    await _copy_certificates(conn, ca, der, rows, now)
    return rows


async def _kill_mid_sweep(
    conn: asyncpg.Connection, sweep_id: uuid.UUID, replica: subprocess.Popen[bytes]
) -> None:
    """SIGKILL ``replica`` once some shard is done, and check some were not."""
    async with asyncio.timeout(60):
        await _until(
            conn,
            "SELECT count(*) > 0 FROM ca.sweep_shards WHERE sweep_id = $1",
            sweep_id,
        )
    replica.send_signal(signal.SIGKILL)
    replica.wait(30)
    done = await conn.fetchval(
        "SELECT count(*) FROM ca.sweep_shards WHERE sweep_id = $1", sweep_id
    )
    # Otherwise the kill came too late to test anything.
    assert done < SHARDS


async def test_sweep_survives_a_killed_replica(
    replica_backends: Backends, tmp_path: Path
) -> None:
    """SIGKILL one of two replicas mid-sweep: the other finishes, every due certificate
    moves once, and each transition has exactly one event."""
    topology = Topology(replica_backends.prefix)
    bus = await Bus.connect(AMQP_URL, topology)
    try:
        with _replicas(replica_backends, tmp_path, 2, SWEEP_SCHEDULE="off") as replicas:
            await wait_until_answered(bus)
            ca = unique("sweep-ca")
            reply = await call(bus, CreateCA(name=ca))
            assert reply.ok, reply.error
            await _wait_for_consumers(topology, "sweeps", 2, replicas)
            async with (
                _database(replica_backends) as conn,
                Collector.following(topology, "certificate.status.update") as seen,
            ):
                rows = await _seed(conn, ca)
                reply = await call(bus, RunSweep())
                assert reply.ok, reply.error
                assert reply.result is not None
                sweep = SweepView.model_validate(reply.result)
                assert SHARDS == sweep.shards
                sweep_id = uuid.UUID(sweep.id)

                await _kill_mid_sweep(conn, sweep_id, replicas[0])
                async with asyncio.timeout(90):
                    await _until(
                        conn,
                        "SELECT count(*) = $2 FROM ca.sweep_shards WHERE sweep_id = $1",
                        sweep_id,
                        SHARDS,
                    )
                    await _until(conn, "SELECT count(*) = 0 FROM ca.outbox")
                    await seen.caught_up()
                shards = await conn.fetch(
                    "SELECT shard, transitions FROM ca.sweep_shards WHERE sweep_id = $1",
                    sweep_id,
                )
                final = {
                    r["serial"]: CertificateStatus(r["status"])
                    for r in await conn.fetch(
                        "SELECT serial, status FROM ca.certificates WHERE ca = $1", ca
                    )
                }
    finally:
        await bus.close()

    expected = {
        row.serial: status_at(row.status, row.not_after, sweep.as_of, THRESHOLD_DAYS)
        for row in rows
    }
    moved = {row.serial for row in rows if expected[row.serial] is not row.status}
    assert list(range(SHARDS)) == sorted(r["shard"] for r in shards)
    assert len(moved) == sum(r["transitions"] for r in shards)
    assert expected == final

    # The relay may publish an event twice (killed between publish and delete):
    # consumers dedupe on the id, and so does this count.
    ids_by_serial: dict[str, set[str]] = {}
    for event in {e.id: e for e in seen.events}.values():
        assert event.subject is not None
        serial = event.subject.removeprefix("certificate/")
        ids_by_serial.setdefault(serial, set()).add(event.id)
        assert expected[serial].value == event.data["updated"]["status"]
    assert moved == set(ids_by_serial)
    assert all(1 == len(ids) for ids in ids_by_serial.values())


async def test_scheduled_sweep_fires_once_per_period(
    replica_backends: Backends, tmp_path: Path
) -> None:
    """Two replicas on a 1 s schedule: each claimed period has exactly one sweep."""
    topology = Topology(replica_backends.prefix)
    bus = await Bus.connect(AMQP_URL, topology)
    try:
        with _replicas(replica_backends, tmp_path, 2, SWEEP_SCHEDULE="1s") as replicas:
            await wait_until_answered(bus)
            await _wait_for_consumers(topology, "sweeps", 2, replicas)
            async with _database(replica_backends) as conn:
                both_running = await conn.fetchval("SELECT now()")
                async with asyncio.timeout(60):
                    await _until(
                        conn,
                        "SELECT count(*) >= 3 FROM ca.schedule_claims "
                        "WHERE name = 'sweep' AND period > $1",
                        both_running,
                    )
                # One snapshot for both reads: a claim commits with its sweep.
                async with conn.transaction(isolation="repeatable_read"):
                    periods = await conn.fetch(
                        """SELECT c.period, count(s.id) AS sweeps
                           FROM ca.schedule_claims c
                           LEFT JOIN ca.sweeps s ON s.trigger = 'schedule'
                               AND s.as_of >= c.period
                               AND s.as_of < c.period + interval '1 second'
                           WHERE c.name = 'sweep'
                           GROUP BY c.period"""
                    )
                    scheduled = await conn.fetchval(
                        "SELECT count(*) FROM ca.sweeps WHERE trigger = 'schedule'"
                    )
            for process in replicas:
                assert process.poll() is None, "a replica exited; see its log"
    finally:
        await bus.close()

    assert len(periods) >= 3
    assert {p["period"]: 1 for p in periods} == {
        p["period"]: p["sweeps"] for p in periods
    }
    # And no scheduled sweep outside a claimed period.
    assert len(periods) == scheduled
