"""AWS IoT Core sync through the cloud proxy, against the same calls made directly.

Starts a local AWS IoT endpoint (moto server, in this process), a fresh database with
the ``cloud`` schema and fresh bus names, connects one CA in ``sni-only`` mode (no
verification round trip to a CA worker) and loads ``--count`` device certificates
into the projection for each of (a) and (b). It then times:

(a) the anchor: what an event-driven connector (the original's) does per enrolled
    device, one after the other: register the certificate, create the thing, attach the
    certificate and the policy, through the same provider;
(b) the proxy: the certificates' items made due (one statement, as an event batch
    does), then the syncer until every item is synced: it describes the certificate
    and the thing first, which is what makes each step idempotent and repeatable;
(c) a reconciliation pass over every item, all in step: one listing of the account and
    a comparison, nothing repaired.

(b)/(a) is the price of idempotence and bookkeeping per device; (c) is what healing a
lost event costs per device when there is nothing to heal. The endpoint is moto
(Python), so absolute rates are the emulator's; the ratios are what carries over.

    .venv/bin/python bench/cloud.py [--count 200] [--concurrency 4]
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer

from cloud_proxy.aws import AwsIotProvider
from cloud_proxy.items import Items
from cloud_proxy.store import Store
from cloud_proxy.syncer import Syncer, Timing
from contracts.names import Topology
from runtime.bus import Bus
from runtime.db import discover_migrations, migrate
from runtime.log import configure_logging
from runtime.topology import remove_topology

PG = os.environ.get("PKI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("PKI_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CONNECTOR = "bench"
POLICY = "bench-policy"


def certificates(count: int, prefix: str) -> list[str]:
    """Self-signed certificates: AWS without a CA only looks at their bytes."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    found = []
    for index in range(count):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix}-{index}")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        found.append(certificate.public_bytes(serialization.Encoding.PEM).decode())
    return found


async def anchor(provider: AwsIotProvider, pems: list[str]) -> float:
    started = time.perf_counter()
    for index, pem in enumerate(pems):
        remote = await provider.register_certificate(pem, ca_pem=None, status="ACTIVE")
        await provider.ensure_thing(f"anchor-{index}", None)
        await provider.attach_principal(f"anchor-{index}", remote.arn)
        await provider.attach_policy(POLICY, remote.arn)
    return time.perf_counter() - started


async def load(conn: asyncpg.Connection, pems: list[str]) -> list[str]:
    serials = [
        format(x509.load_pem_x509_certificate(p.encode()).serial_number, "x")
        for p in pems
    ]
    await conn.executemany(
        "INSERT INTO cloud.certificates (serial, ca, device_id, slot, status, certificate_pem) "
        "VALUES ($1, 'bench-ca', $2, 'default', 'ACTIVE', $3)",
        [
            (s, f"proxy-{i}", p)
            for i, (s, p) in enumerate(zip(serials, pems, strict=True))
        ],
    )
    return serials


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    configure_logging("warning", "console")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log

    # The emulator takes any credentials; these only keep the AWS chain from looking further.
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")  # noqa: S106
    default_user_config["iot"] = {"use_valid_cert": True}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    run = uuid.uuid4().hex[:8]
    database, prefix = f"lamassu_bench_cloud_{run}", f"bench-{run}."
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{database}"')
    provider = await AwsIotProvider.open(
        region="eu-west-1", endpoint_url=f"http://{host}:{port}", max_attempts=1
    )
    bus = await Bus.connect(AMQP, Topology(prefix))
    pool = await asyncpg.create_pool(
        dsn=PG.rsplit("/", 1)[0] + f"/{database}", min_size=2, max_size=4
    )
    try:
        if pool is None:
            raise SystemExit("bench: no database pool")
        await migrate(pool, "cloud", discover_migrations("cloud_proxy"))
        store, items = Store(), Items()
        now = datetime.now(UTC)
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO cloud.connections (ca, connector, mode, policy, created_at, backfilled_at) "
                "VALUES ('bench-ca', $1, 'sni-only', $2, $3, $3)",
                CONNECTOR,
                POLICY,
                now,
            )
            await conn.execute(
                "INSERT INTO cloud.cas (name, certificate_pem, status) VALUES ('bench-ca', $1, 'ACTIVE')",
                certificates(1, "bench-ca")[0],
            )
        provider_client = provider._client  # noqa: SLF001 - the bench's own policy
        await provider_client.create_policy(policyName=POLICY, policyDocument="{}")

        a = await anchor(provider, certificates(args.count, "anchor"))

        syncer = Syncer(
            pool=pool,
            store=store,
            items=items,
            bus=bus,
            providers={CONNECTOR: provider},
            clock=lambda: datetime.now(UTC),
            timing=Timing(batch=50, concurrency=args.concurrency),
        )
        async with pool.acquire() as conn:
            serials = await load(conn, certificates(args.count, "proxy"))
        started = time.perf_counter()
        async with pool.acquire() as conn:
            await items.touch(
                conn, datetime.now(UTC), cas=["bench-ca"], serials=serials
            )
        while await syncer.sync_due(lambda: None):
            pass
        b = time.perf_counter() - started
        async with pool.acquire() as conn:
            synced = await conn.fetchval(
                "SELECT count(*) FROM cloud.items WHERE state = 'synced'"
            )

        async with pool.acquire() as conn:
            await items.request_reconciliation(conn, [CONNECTOR], datetime.now(UTC))
        started = time.perf_counter()
        await syncer.reconcile_next()
        c = time.perf_counter() - started
        async with pool.acquire() as conn:
            due = await conn.fetchval(
                "SELECT count(*) FROM cloud.items WHERE state <> 'synced'"
            )

        n = args.count
        print(f"devices: {n} per run; endpoint: moto server on 127.0.0.1:{port}")
        print(
            f"(a) anchor, direct calls per device:      {a:7.2f} s  {n / a:8.1f} devices/s"
        )
        print(
            f"(b) proxy, items due -> synced ({synced - 1} + CA): {b:7.2f} s  {n / b:8.1f} devices/s  (b)/(a) = {b / a:.2f}"
        )
        print(
            f"(c) reconciliation, all in step:          {c:7.2f} s  {n / c:8.1f} devices/s  out of step after: {due}"
        )
    finally:
        await pool.close()
        await provider.close()
        await bus.close()
        await remove_topology(AMQP, Topology(prefix), [])
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
