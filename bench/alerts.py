"""Alerts: delivery latency under load, a sweep's warnings as one digest or as 10,000
webhooks.

Starts its own alerts worker (a subprocess, fresh database and bus names) and an HTTP
receiver in this process, then publishes ``certificate.status.update`` events straight
onto the events exchange (as the CA worker's outbox relay would after a sweep):

(a) ``--subscriptions`` webhook subscriptions (each ``data.updated.ca == "ca-N"``, so
    each event matches one) and ``--rate`` events/s for ``--seconds``: latency from
    publish to the receiver, p50/p99 (target p99 <= 1 s);
(a') the anchor: the same load through the original's design, in this process: a
    consumer that POSTs each event as it comes (no rows, no retries, nothing kept);
(b) ``--count`` ABOUT_TO_EXPIRE transitions with one digest subscription
    (``--digest``): time until the single digest arrives, and until every event is
    recorded for it;
(c) the same transitions without a digest: time until every webhook has arrived.

    .venv/bin/python bench/alerts.py [--subscriptions 100] [--rate 200] [--seconds 30]
        [--count 10000] [--digest 30s] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/alerts.py`` puts bench/ first on sys.path, where bench/engines.py would
# shadow the ``engines`` package: drop that entry before importing the project.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from alerts_worker.digests import parse_digest
from contracts.alerts import DeleteSubscription, ListSubscriptions, Subscribe
from contracts.ca import CertificateStatus, CertificateStatusUpdate, CertificateView
from contracts.envelope import CloudEvent, new_message
from contracts.names import Topology
from runtime.bus import Bus, BusUnavailable, RequestTimeout
from runtime.topology import remove_topology

ROOT = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN = os.environ.get(
    "PKI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A certificate PEM of a P-256 device certificate's size (~700 bytes), so events weigh
# what a sweep's do.
PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    + base64.encodebytes(os.urandom(520)).decode()
    + "-----END CERTIFICATE-----\n"
)


@dataclass
class Receiver:
    """Records when each webhook-id first arrived (and how many arrived in all)."""

    arrived: dict[str, float] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)
    total: int = 0
    keep_bodies: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.total += 1
        self.arrived.setdefault(request.headers["webhook-id"], time.time())
        if self.keep_bodies:
            self.bodies.append(body)
        self.changed.set()
        return web.Response(status=204)

    async def until(self, count: int, timeout: float) -> None:  # noqa: ASYNC109 - a bench's deadline
        async with asyncio.timeout(timeout):
            while len(self.arrived) < count:
                self.changed.clear()
                await self.changed.wait()

    def reset(self) -> None:
        self.arrived.clear()
        self.bodies.clear()
        self.total = 0


def certificate(serial: str, ca: str, status: CertificateStatus) -> CertificateView:
    now = datetime.now(UTC)
    return CertificateView(
        serial=serial,
        ca=ca,
        subject=f"CN=device-{serial}",
        issuer=f"CN={ca}",
        status=status,
        not_before=now - timedelta(days=340),
        not_after=now + timedelta(days=25),
        csr_fingerprint="00" * 32,
        certificate_pem=PEM,
        device_id=f"device-{serial}",
        slot="default",
    )


def transition(serial: str, ca: str) -> CloudEvent:
    return new_message(
        source="/ca_worker",
        subject=f"certificate/{serial}",
        data=CertificateStatusUpdate(
            previous=certificate(serial, ca, CertificateStatus.ACTIVE),
            updated=certificate(serial, ca, CertificateStatus.ABOUT_TO_EXPIRE),
        ),
        now=datetime.now(UTC),
    )


async def call(
    bus: Bus, request: Subscribe | ListSubscriptions | DeleteSubscription
) -> dict[str, object]:
    message = new_message(source="bench", data=request, now=datetime.now(UTC))
    reply = await bus.request(message, timeout=30)
    if not reply.ok or not isinstance(reply.result, dict):
        raise RuntimeError(f"{request.TYPE} failed: {reply.error}")
    return reply.result


@contextlib.asynccontextmanager
async def stack(
    workdir: Path, keep: bool
) -> AsyncIterator[tuple[Bus, asyncpg.Pool, Topology]]:
    """Fresh database and bus names and an alerts worker."""
    run = uuid.uuid4().hex[:8]
    database = f"lamassu_bench_alerts_{run}"
    topology = Topology(f"bench-alerts-{run}.")
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    env = dict(os.environ)
    env.update(
        POSTGRES_DATABASE=database,
        AMQP_URL=AMQP_URL,
        AMQP_PREFIX=topology.prefix,
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warning"),
        LOG_FORMAT="json",
    )
    log = (workdir / "alerts_worker.log").open("ab")
    child = subprocess.Popen(
        [sys.executable, "-m", "alerts_worker"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    bus: Bus | None = None
    pool: asyncpg.Pool | None = None
    try:
        bus = await Bus.connect(AMQP_URL, topology)
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(BusUnavailable, RequestTimeout):
                    await call(bus, ListSubscriptions())
                    break
                await asyncio.sleep(0.1)
        pool = await asyncpg.create_pool(
            PG_ADMIN.rsplit("/", 1)[0] + f"/{database}", min_size=1, max_size=2
        )
        if pool is None:
            raise RuntimeError("asyncpg returned no pool")
        yield bus, pool, topology
    finally:
        if pool is not None:
            await pool.close()
        if bus is not None:
            await bus.close()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
        log.close()
        if keep:
            print(
                f"# kept database {database}, prefix {topology.prefix}", file=sys.stderr
            )
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await remove_topology(AMQP_URL, topology, topology.worker_queues())
        await admin.close()


async def paced(bus: Bus, rate: int, seconds: float, cas: int) -> dict[str, float]:
    """Publish ``rate`` events a second for ``seconds``; when each was sent."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        event = transition(f"{n:08x}", f"ca-{n % cas}")
        sent[event.id] = time.time()
        await bus.publish(bus.topology.events, event)
    return sent


def percentiles(
    sent: dict[str, float], arrived: dict[str, float]
) -> tuple[float, float, float]:
    latencies = sorted(arrived[i] - t for i, t in sent.items() if i in arrived)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98], latencies[-1]


async def latency(
    bus: Bus, receiver: Receiver, url: str, args: argparse.Namespace
) -> tuple[float, float, float]:
    ids = [
        str(
            (
                await call(
                    bus,
                    Subscribe(
                        event=CertificateStatusUpdate.TYPE,
                        condition=f'data.updated.ca == "ca-{i}"',
                        channel="webhook",
                        target=url,
                    ),
                )
            )["id"]
        )
        for i in range(args.subscriptions)
    ]
    sent = await paced(bus, args.rate, args.seconds, args.subscriptions)
    await receiver.until(len(sent), 120)
    for subscription_id in ids:
        await call(bus, DeleteSubscription(id=subscription_id))
    return percentiles(sent, receiver.arrived)


async def anchor(
    bus: Bus, receiver: Receiver, url: str, args: argparse.Namespace
) -> tuple[tuple[float, float, float], int]:
    """The original's design: consume each event and POST it, nothing kept; the
    latencies, and how many events a failed POST lost."""
    lost = 0
    async with aiohttp.ClientSession() as session:

        async def forward(message: AbstractIncomingMessage) -> None:
            nonlocal lost
            async with message.process(requeue=False):
                event = json.loads(message.body)
                try:
                    async with session.post(
                        url, data=message.body, headers={"webhook-id": event["id"]}
                    ) as response:
                        await response.read()
                except aiohttp.ClientError:
                    lost += 1  # as in the original: a failed delivery is gone

        await bus.subscribe(CertificateStatusUpdate.TYPE, forward, prefetch=100)
        sent = await paced(bus, args.rate, args.seconds, args.subscriptions)
        async with asyncio.timeout(120):
            while len(receiver.arrived) + lost < len(sent):
                receiver.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        await receiver.changed.wait()
    return percentiles(sent, receiver.arrived), lost


async def sweep(bus: Bus, count: int) -> float:
    """Publish ``count`` transitions in batches, as the outbox relay does; seconds."""
    started = time.time()
    for first in range(0, count, 500):
        batch = [
            transition(f"{n:08x}", f"ca-{n % 4}")
            for n in range(first, min(count, first + 500))
        ]
        await bus.publish_batch(
            [
                (bus.topology.events, e.type, e.id, e.model_dump_json().encode())
                for e in batch
            ]
        )
    return started


async def digest(
    bus: Bus, pool: asyncpg.Pool, receiver: Receiver, url: str, args: argparse.Namespace
) -> tuple[float, float, float, int]:
    """(b): seconds until every event is recorded, until the digest arrives, the
    period's share of that wait, and the digest's total."""
    made = await call(
        bus,
        Subscribe(
            event=CertificateStatusUpdate.TYPE,
            condition='data.updated.status == "ABOUT_TO_EXPIRE"',
            channel="webhook",
            target=url,
            digest=args.digest,
        ),
    )
    receiver.keep_bodies = True
    # Start just after a period begins, so that the sweep falls in one period.
    schedule = parse_digest(args.digest)
    boundary = schedule.next_start(datetime.now(UTC))
    await asyncio.sleep((boundary - datetime.now(UTC)).total_seconds() + 0.2)
    period_end = schedule.next_start(datetime.now(UTC)).timestamp()
    started = await sweep(bus, args.count)
    async with asyncio.timeout(120):
        while (  # noqa: ASYNC110 - polls a table: no event says when it is full
            await pool.fetchval("SELECT count(*) FROM alerts.digest_items") < args.count
        ):
            await asyncio.sleep(0.05)
    recorded = time.time() - started
    await receiver.until(1, 120)
    arrived = next(iter(receiver.arrived.values())) - started
    total = json.loads(receiver.bodies[0])["data"]["total"]
    await call(bus, DeleteSubscription(id=str(made["id"])))
    return recorded, arrived, period_end - started, int(total)


async def fan_out(bus: Bus, receiver: Receiver, url: str, count: int) -> float:
    made = await call(
        bus,
        Subscribe(
            event=CertificateStatusUpdate.TYPE,
            condition='data.updated.status == "ABOUT_TO_EXPIRE"',
            channel="webhook",
            target=url,
        ),
    )
    started = await sweep(bus, count)
    await receiver.until(count, 600)
    await call(bus, DeleteSubscription(id=str(made["id"])))
    return max(receiver.arrived.values()) - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--rate", type=int, default=200, help="events per second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--count", type=int, default=10_000, help="a sweep's transitions"
    )
    parser.add_argument("--digest", default="30s", help="digest period of (b)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    receiver = Receiver()
    # A digest of 10,000 items is a few megabytes of JSON; aiohttp refuses over 1 MB.
    app = web.Application(client_max_size=256 * 1024**2)
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/hook"
    workdir = Path(tempfile.mkdtemp(prefix="lamassu-bench-alerts-"))
    print(f"# work directory {workdir}", file=sys.stderr)
    try:
        async with stack(workdir, args.keep) as (bus, pool, _):
            print("# (a) latency", file=sys.stderr)
            ours = await latency(bus, receiver, url, args)
            extra = receiver.total - len(receiver.arrived)
            receiver.reset()
            print("# (b) digest", file=sys.stderr)
            recorded, digested, period, total = await digest(
                bus, pool, receiver, url, args
            )
            digests_received = receiver.total
            receiver.reset()
            receiver.keep_bodies = False
            print("# (c) one webhook per transition", file=sys.stderr)
            fanned = await fan_out(bus, receiver, url, args.count)
            fan_extra = receiver.total - len(receiver.arrived)
            receiver.reset()
            print("# (a') anchor: POST each event as it comes", file=sys.stderr)
            direct, lost = await anchor(bus, receiver, url, args)
    finally:
        await runner.cleanup()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    events = int(args.rate * args.seconds)
    print(
        f"\nalerts: {args.subscriptions} subscriptions, {args.rate} events/s for "
        f"{args.seconds:g} s ({events:,} events), sweep of {args.count:,}; "
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}"
    )
    print(f"\n{'measurement':<58}{'p50 s':>8}{'p99 s':>8}{'max s':>8}   target")
    p99_ok = "met" if ours[1] <= 1 else "MISSED"
    print(
        f"{'(a)  publish -> webhook, through rows and retries':<58}{ours[0]:8.3f}{ours[1]:8.3f}{ours[2]:8.3f}   p99 <= 1 s {p99_ok}"
    )
    print(
        f"{'(a`) anchor: consume and POST, nothing kept':<58}{direct[0]:8.3f}{direct[1]:8.3f}{direct[2]:8.3f}"
    )
    print(
        f"{'     ratio (a) / (a`)':<58}{ours[0] / direct[0]:8.1f}{ours[1] / direct[1]:8.1f}"
    )
    print(
        f"     duplicates received in (a): {extra}; events the anchor lost "
        f"(a failed POST): {lost}"
    )
    print(f"\n{'measurement':<58}{'seconds':>8}{'msgs':>8}")
    print(
        f"{'(b)  sweep -> every transition recorded for the digest':<58}{recorded:8.2f}"
    )
    print(
        f"{'(b)  sweep -> the digest arrives (period ' + args.digest + ')':<58}{digested:8.2f}{digests_received:8d}   (total {total:,}; {max(period, 0):.1f} s of it the period still open)"
    )
    print(
        f"{'(c)  sweep -> all webhooks delivered, no digest':<58}{fanned:8.2f}{args.count:8,}   ({args.count / fanned:,.0f}/s, {fan_extra} duplicates)"
    )
    print(
        f"{'     messages (c) / (b)':<58}{'':8}{args.count / max(digests_received, 1):8,.0f}"
    )


if __name__ == "__main__":
    # kill and timeout clean up as Ctrl-C does: the worker this started is stopped and
    # its database and queues removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(main())
