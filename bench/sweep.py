"""Expiry sweeps at scale: a sharded, set-based sweep against a loop over every row.

Starts its own CA and device workers (subprocesses, fresh database and bus names,
``SWEEP_SCHEDULE=off``), creates a few CAs through the bus, then COPYs ``--count``
certificates into ``ca.certificates``: ``--due`` of them ACTIVE and due at the sweep
(half past their notAfter, half inside their CA's 30-day warning period), each held by
a pre-seeded device slot (FULLY_PROVISIONED) so the device worker has devices to
update; the rest as a running PKI holds them (ACTIVE beyond the threshold, already
warned ABOUT_TO_EXPIRE, EXPIRED, REVOKED). It then times:

(a) ``sweep.run`` until every shard is done (transitions committed, events in the outbox);
(b) until the outbox is drained (every event published with confirms);
(c) until the device worker has applied every device status change;
(d) a second sweep, with nothing left to change;
(e) the original approach, after resetting the due rows: read every certificate through
    a server-side cursor and run one ``UPDATE ... WHERE serial = $1`` per changed row,
    each in its own transaction (and no events at all);
(f) the same loop as the original service runs it, for like-for-like with (b): each
    changed certificate is read, updated, and its ``certificate.status.update`` event
    published with a confirm before the next.

(e)/(a) compares transitions (ours with their events committed to the outbox) and
(f)/(b) compares transitions with every event published.

``--profile`` adds where the sweep's time goes: EXPLAIN ANALYZE of one shard's
statement, then the CA worker's own steps for every shard, in process, in transactions
that are rolled back.

    .venv/bin/python bench/sweep.py [--count 1000000] [--due 10000] [--shards 16]
        [--cas 4] [--ca-replicas 1] [--profile] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/sweep.py`` puts bench/ first on sys.path, where bench/engines.py would
# shadow the ``engines`` package: drop that entry before importing the project.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from ca_worker.context import CaContext, CaDeps, status_events
from ca_worker.expiry import status_at
from ca_worker.store import StatusChange, Store
from contracts.ca import CertificateStatus, CertificateView, CreateCA, ListCAs
from contracts.devices import DeviceStatus, ListDevices
from contracts.envelope import CloudEvent, new_message
from contracts.names import Topology
from contracts.sweeps import RunSweep, SweepView
from runtime.bus import Bus, BusUnavailable, RequestTimeout
from runtime.outbox import write_events
from runtime.topology import remove_topology

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN = os.environ.get(
    "PKI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
THRESHOLD_DAYS = 30  # CreateCA's default about_to_expire_days
DEVICE_STATUSES = [
    DeviceStatus.REQUIRES_ACTION.value,
    DeviceStatus.PROVISIONED_WITH_WARNINGS.value,
]
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The population that is not due, as a PKI in service holds it: (share, status, range
# of notAfter relative to now). Already-warned certificates are in the sweep's index
# range, expired and revoked ones are not.
POPULATION = [
    (0.75, CertificateStatus.ACTIVE, 31 * DAY, 365 * DAY),
    (0.08, CertificateStatus.ABOUT_TO_EXPIRE, HOUR, 29 * DAY),
    (0.15, CertificateStatus.EXPIRED, -365 * DAY, -DAY),
    (0.02, CertificateStatus.REVOKED, -365 * DAY, 365 * DAY),
]
CERTIFICATE_COLUMNS = [
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
    "device_id",
    "slot",
    "dms",
]


@dataclass
class Stack:
    database: str
    topology: Topology
    bus: Bus
    pool: asyncpg.Pool


@dataclass
class Figures:
    """Seconds of each measurement, keyed by its letter."""

    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- the stack ---------------------------------------------------------------------


async def _answered(bus: Bus, request: ListCAs | ListDevices) -> None:
    async with asyncio.timeout(90):
        while True:
            with contextlib.suppress(BusUnavailable, RequestTimeout):
                message = new_message(source="bench", data=request, now=_now())
                await bus.request(message, timeout=2)
                return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def stack(
    workdir: Path, shards: int, keep: bool, replicas: int
) -> AsyncIterator[Stack]:
    """Fresh database and bus names, ``replicas`` CA workers and a device worker."""
    run = uuid.uuid4().hex[:8]
    database = f"lamassu_bench_sweep_{run}"
    topology = Topology(f"bench-sweep-{run}.")
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    env = dict(os.environ)
    env.update(
        POSTGRES_DATABASE=database,
        AMQP_URL=AMQP_URL,
        AMQP_PREFIX=topology.prefix,
        GOPEM_DATA=str(workdir / "keys"),
        SWEEP_SCHEDULE="off",
        SWEEP_SHARDS=str(shards),
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warning"),
        LOG_FORMAT="json",
        # No admin servers: their default ports belong to whatever else runs here,
        # and several gateway processes would share one.
        ADMIN_PORT="0",
    )
    log = (workdir / "services.log").open("ab")
    children = [
        subprocess.Popen(
            [PYTHON, "-m", name], env=env, cwd=ROOT, stdout=log, stderr=log
        )
        for name in ["ca_worker"] * replicas + ["device_worker"]
    ]
    bus: Bus | None = None
    pool: asyncpg.Pool | None = None
    try:
        bus = await Bus.connect(AMQP_URL, topology)
        await _answered(bus, ListCAs())
        await _answered(bus, ListDevices())
        pool = await asyncpg.create_pool(
            PG_ADMIN.rsplit("/", 1)[0] + f"/{database}", min_size=2, max_size=4
        )
        if pool is None:
            raise RuntimeError("asyncpg returned no pool")
        yield Stack(database, topology, bus, pool)
    finally:
        if pool is not None:
            await pool.close()
        if bus is not None:
            await bus.close()
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        log.close()
        if keep:
            print(
                f"# kept database {database} and AMQP prefix {topology.prefix}",
                file=sys.stderr,
            )
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await remove_topology(AMQP_URL, topology, topology.worker_queues())
        await admin.close()


def _now() -> datetime:
    return datetime.now(UTC)


async def _call(bus: Bus, request: CreateCA | RunSweep) -> dict[str, object]:
    message = new_message(source="bench", data=request, now=_now())
    reply = await bus.request(message, timeout=60)
    if not reply.ok or not isinstance(reply.result, dict):
        raise RuntimeError(f"{request.TYPE} failed: {reply.error}")
    return reply.result


# --- the data ----------------------------------------------------------------------


@dataclass
class Load:
    due: list[str]
    seconds: float
    devices_seconds: float
    vacuum_seconds: float


def _rows(
    count: int,
    due: int,
    *,
    cas: list[str],
    der: bytes,
    now: datetime,
    due_out: list[str],
) -> Iterator[tuple[object, ...]]:
    """Certificate rows for COPY, generated as they are sent (1M rows never sit in memory)."""
    rng = random.Random(1_000_000)
    shares = [p[0] for p in POPULATION]
    for i in range(count):
        ca = cas[i % len(cas)]
        serial = f"{rng.getrandbits(128):032x}"
        device_id = slot = dms = None
        revoked_at = reason = None
        # Due rows are spread evenly through the table, not bunched in a few pages.
        if (i * due) // count != ((i + 1) * due) // count:
            status = CertificateStatus.ACTIVE
            # Half past notAfter (to EXPIRED), half inside the warning period.
            low, high = (-20 * DAY, -HOUR) if len(due_out) % 2 else (HOUR, 29 * DAY)
            device_id, slot, dms = f"bench-device-{i:07d}", "default", "bench-dms"
            due_out.append(serial)
        else:
            _share, status, low, high = rng.choices(POPULATION, shares)[0]
            if status is CertificateStatus.REVOKED:
                revoked_at, reason = now - DAY, "keyCompromise"
        not_after = now + low + (high - low) * rng.random()
        yield (
            serial,
            ca,
            f"CN=bench-{i}",
            f"CN={ca}",
            status.value,
            not_after - 365 * DAY,
            not_after,
            revoked_at,
            reason,
            serial,
            der,
            device_id,
            slot,
            dms,
        )


async def load(conn: asyncpg.Connection, count: int, due: int, cas: list[str]) -> Load:
    der = await conn.fetchval(
        "SELECT certificate_der FROM ca.cas WHERE name = $1", cas[0]
    )
    now = _now()
    serials: list[str] = []
    started = time.perf_counter()
    await conn.copy_records_to_table(
        "certificates",
        schema_name="ca",
        columns=CERTIFICATE_COLUMNS,
        records=_rows(count, due, cas=cas, der=der, now=now, due_out=serials),
    )
    copied = time.perf_counter() - started

    # Each due certificate's device holds it in slot "default", as enrollment leaves it.
    started = time.perf_counter()
    rows = await conn.fetch(
        "SELECT serial, device_id, not_before, not_after FROM ca.certificates "
        "WHERE serial = ANY($1::text[])",
        serials,
    )
    await conn.copy_records_to_table(
        "devices",
        schema_name="devices",
        columns=["id", "dms", "status", "created_at"],
        records=[
            (r["device_id"], "bench-dms", DeviceStatus.FULLY_PROVISIONED.value, now)
            for r in rows
        ],
    )
    await conn.copy_records_to_table(
        "slots",
        schema_name="devices",
        columns=[
            "device_id",
            "name",
            "serial",
            "certificate_status",
            "not_before",
            "not_after",
        ],
        records=[
            (
                r["device_id"],
                "default",
                r["serial"],
                CertificateStatus.ACTIVE.value,
                r["not_before"],
                r["not_after"],
            )
            for r in rows
        ],
    )
    devices = time.perf_counter() - started

    # What autovacuum does to a table in service: statistics and visibility map.
    started = time.perf_counter()
    for table in ("ca.certificates", "devices.devices", "devices.slots"):
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    return Load(serials, copied, devices, time.perf_counter() - started)


# --- the measurements --------------------------------------------------------------


async def _poll(
    conn: asyncpg.Connection, sql: str, *args: object, every: float
) -> float:
    """Seconds on the perf counter when ``sql`` first returns true (deadline 10 min)."""
    async with asyncio.timeout(600):
        while not await conn.fetchval(sql, *args):  # noqa: ASYNC110 - a table has no event to await
            await asyncio.sleep(every)
    return time.perf_counter()


async def sweep(stack: Stack, shards: int) -> tuple[SweepView, float, float]:
    """Run a sweep; (its view, seconds to every shard done, seconds to outbox empty)."""
    async with stack.pool.acquire() as conn:
        started = time.perf_counter()
        view = SweepView.model_validate(await _call(stack.bus, RunSweep(shards=shards)))
        done = await _poll(
            conn,
            "SELECT count(*) = $2 FROM ca.sweep_shards WHERE sweep_id = $1",
            uuid.UUID(view.id),
            shards,
            every=0.005,
        )
        drained = await _poll(
            conn, "SELECT NOT EXISTS (SELECT 1 FROM ca.outbox)", every=0.01
        )
        view = SweepView.model_validate(
            dict(
                view.model_dump(),
                **await conn.fetchrow(
                    "SELECT count(*) AS shards_done, "
                    "coalesce(sum(transitions), 0) AS transitions "
                    "FROM ca.sweep_shards WHERE sweep_id = $1",
                    uuid.UUID(view.id),
                ),
            )
        )
    return view, done - started, drained - started


async def devices_applied(stack: Stack, expected: int, started: float) -> float:
    async with stack.pool.acquire() as conn:
        done = await _poll(
            conn,
            "SELECT count(*) >= $2 FROM devices.devices WHERE status = ANY($1::text[])",
            DEVICE_STATUSES,
            expected,
            every=0.05,
        )
    return done - started


async def sequential_loop(
    stack: Stack, due: list[str], *, events: bool
) -> tuple[float, int, int]:
    """The original approach; returns (seconds, rows read, rows updated).

    With ``events``, as the original's service does (its event middleware publishes
    ``certificate.status.update`` after each status change), every updated row is
    returned and its event published with a confirm before the loop goes on.
    """
    async with stack.pool.acquire() as conn:
        await conn.execute(
            "UPDATE ca.certificates SET status = 'ACTIVE' WHERE serial = ANY($1::text[])",
            due,
        )
        await conn.execute("VACUUM (ANALYZE) ca.certificates")
    async with stack.pool.acquire() as reader, stack.pool.acquire() as writer:
        started = time.perf_counter()
        as_of = _now()
        thresholds = dict(
            await reader.fetch("SELECT name, about_to_expire_days FROM ca.cas")
        )
        read = updated = 0
        async with reader.transaction():
            async for row in reader.cursor(
                "SELECT serial, ca, status, not_after FROM ca.certificates",
                prefetch=10_000,
            ):
                read += 1
                current = CertificateStatus(row["status"])
                new = status_at(current, row["not_after"], as_of, thresholds[row["ca"]])
                if new is current:
                    continue
                async with writer.transaction():
                    # As the original's UpdateCertificateStatus: read, then update.
                    before = await STORE.get_certificate(writer, row["serial"])
                    await writer.execute(
                        "UPDATE ca.certificates SET status = $2 WHERE serial = $1",
                        row["serial"],
                        new.value,
                    )
                updated += 1
                if events and before is not None:
                    after = before.model_copy(update={"status": new})
                    await stack.bus.publish(
                        stack.topology.events, _status_event(before, after, as_of)
                    )
        return time.perf_counter() - started, read, updated


STORE = Store()


def _status_event(
    before: CertificateView, after: CertificateView, now: datetime
) -> CloudEvent:
    """``certificate.status.update`` as the CA worker builds it."""
    ctx = CaContext(conn=None, now=now, correlation_id=None, deps=None)  # type: ignore[arg-type]
    return status_events(ctx, [StatusChange(before, after)])[0]


# --- where the time goes -----------------------------------------------------------


class _TimedConnection:
    """A connection that times its statements and keeps them, to replay and EXPLAIN."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.seconds = 0.0
        self.settings: list[str] = []
        self.statement: tuple[str, tuple[object, ...]] | None = None

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        started = time.perf_counter()
        rows: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        self.seconds += time.perf_counter() - started
        self.statement = (sql, args)
        return rows

    async def fetchval(self, sql: str, *args: object) -> object:
        started = time.perf_counter()
        value = await self.conn.fetchval(sql, *args)
        self.seconds += time.perf_counter() - started
        return value

    async def execute(self, sql: str, *args: object) -> str:
        started = time.perf_counter()
        status: str = await self.conn.execute(sql, *args)
        self.seconds += time.perf_counter() - started
        if sql.startswith("SET"):
            self.settings.append(sql)
        return status


async def profile(stack: Stack, due: list[str], shards: int) -> list[str]:
    """EXPLAIN ANALYZE of one shard, and the CA worker's steps timed in process, on the
    same data as (a) (the due rows set back to ACTIVE), all rolled back afterwards."""
    store = Store()
    deps = CaDeps(
        store=store, authorities={}, default_engine="gopem", sweep_shards=shards
    )
    sql = views = events_seconds = write_seconds = 0.0
    moved = body_bytes = 0
    async with stack.pool.acquire() as conn:
        outer = conn.transaction()
        await outer.start()
        try:
            await conn.execute(
                "UPDATE ca.certificates SET status = 'ACTIVE' "
                "WHERE serial = ANY($1::text[])",
                due,
            )
            as_of = _now()
            # Shard 0 once to catch its statement, undone, then EXPLAINed.
            timed = _TimedConnection(conn)
            savepoint = conn.transaction()
            await savepoint.start()
            await store.expire_certificates(
                timed,
                as_of=as_of,
                shard=0,
                shards=shards,
            )
            await savepoint.rollback()
            if timed.statement is None:
                raise RuntimeError("expire_certificates ran no statement")
            statement, args = timed.statement
            savepoint = conn.transaction()
            await savepoint.start()
            for setting in timed.settings:  # SET LOCAL went with the first savepoint
                await conn.execute(setting)
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, TIMING) " + statement, *args
            )
            await savepoint.rollback()
            for shard in range(shards):
                timed = _TimedConnection(conn)
                started = time.perf_counter()
                changes = await store.expire_certificates(
                    timed,
                    as_of=as_of,
                    shard=shard,
                    shards=shards,
                )
                built = time.perf_counter()
                events = status_events(CaContext(conn, as_of, None, deps), changes)
                made = time.perf_counter()
                await write_events(conn, "ca", events)
                written = time.perf_counter()
                body_bytes += sum(len(e.model_dump_json()) for e in events)
                sql += timed.seconds
                views += built - started - timed.seconds
                events_seconds += made - built
                write_seconds += written - made
                moved += len(changes)
        finally:
            await outer.rollback()
    lines = ["EXPLAIN (ANALYZE, BUFFERS) of shard 0's statement:"]
    lines += ["  " + r[0] for r in plan]
    lines.append(
        f"the CA worker's steps, in process, {shards} shards one after the other, "
        f"{moved} transitions:"
    )
    for name, seconds in (
        ("expire_certificates: its statements", sql),
        ("expire_certificates: rows to views", views),
        ("status_events (envelopes)", events_seconds),
        ("write_events (JSON + INSERT)", write_seconds),
    ):
        per = seconds / max(moved, 1) * 1e6
        lines.append(f"  {name:<38}{seconds:8.3f} s {per:8.0f} us/transition")
    lines.append(
        f"  event body (JSON) {body_bytes / max(moved, 1):,.0f} bytes on average"
    )
    return lines


# --- the run -----------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="certificates")
    parser.add_argument("--due", type=int, default=10_000, help="due at the sweep")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--cas", type=int, default=4, help="CAs the rows spread over")
    parser.add_argument(
        "--ca-replicas", type=int, default=1, help="CA worker processes sharing shards"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also show where the time goes"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (its name is printed)"
    )
    args = parser.parse_args()
    if not 0 < args.due <= args.count:
        parser.error("--due must be between 1 and --count")
    lines: list[str] = []
    # --keep keeps the work directory too (services.log, keys).
    workdir = Path(tempfile.mkdtemp(prefix="lamassu-bench-sweep-"))
    print(f"# work directory {workdir}", file=sys.stderr)
    try:
        async with stack(workdir, args.shards, args.keep, args.ca_replicas) as s:
            cas = [f"bench-ca-{i}" for i in range(args.cas)]
            for name in cas:
                await _call(s.bus, CreateCA(name=name))
            print(f"# loading {args.count:,} certificates", file=sys.stderr)
            async with s.pool.acquire() as conn:
                loaded = await load(conn, args.count, args.due, cas)
            print("# (a)-(c) sweep", file=sys.stderr)
            started = time.perf_counter()
            first, swept, drained = await sweep(s, args.shards)
            applied = await devices_applied(s, args.due, started)
            if first.transitions != args.due:
                raise RuntimeError(f"{first.transitions} transitions, not {args.due}")
            async with s.pool.acquire() as conn:
                # (d) alone: the device worker's own events are published first.
                await _poll(
                    conn, "SELECT NOT EXISTS (SELECT 1 FROM devices.outbox)", every=0.05
                )
            print("# (d) sweep with nothing to change", file=sys.stderr)
            second, idle, idle_drained = await sweep(s, args.shards)
            if second.transitions:
                raise RuntimeError(f"second sweep moved {second.transitions} rows")
            if args.profile:
                print("# profile", file=sys.stderr)
                lines = await profile(s, loaded.due, args.shards)
            print("# (e) sequential loop", file=sys.stderr)
            looped, read, updated = await sequential_loop(s, loaded.due, events=False)
            print("# (f) sequential loop with its events", file=sys.stderr)
            looped_events, _read, updated_events = await sequential_loop(
                s, loaded.due, events=True
            )
            if args.due != updated or args.due != updated_events:
                raise RuntimeError(f"the loop updated {updated} rows, not {args.due}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    due = args.due
    print(
        f"\nexpiry sweep: {due:,} due among {args.count:,} certificates, "
        f"{args.shards} shards, {args.cas} CAs, {args.ca_replicas} CA worker(s), "
        f"{os.cpu_count()} cores, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    print(
        f"load: COPY {args.count:,} certificates {loaded.seconds:.1f} s "
        f"({args.count / loaded.seconds:,.0f} rows/s, rows generated in Python "
        f"as they are sent); {due:,} devices + slots {loaded.devices_seconds:.1f} s; "
        f"VACUUM ANALYZE {loaded.vacuum_seconds:.1f} s"
    )
    print(f"\n{'measurement':<50}{'seconds':>9}{'per s':>10}   target")
    rows = [
        ("(a) sweep.run -> every shard done", swept, due, "<= 1 s", swept <= 1),
        ("(b)   ... -> outbox drained (events published)", drained, due, "", None),
        ("(c)   ... -> device statuses applied", applied, due, "", None),
        ("(d) sweep with nothing to change", idle, None, "well under 1 s", idle < 0.5),
        ("(d)   ... -> outbox drained", idle_drained, None, "", None),
        (
            f"(e) sequential loop ({read:,} read, {updated:,} updated)",
            looped,
            due,
            "",
            None,
        ),
        ("(f)   ... publishing an event per update", looped_events, due, "", None),
    ]
    for label, seconds, count, target, ok in rows:
        rate = f"{count / seconds:10,.0f}" if count else " " * 10
        verdict = "" if ok is None else f" {_verdict(ok)}"
        print(f"{label:<50}{seconds:9.3f}{rate}   {target}{verdict}")
    print(f"\n{'speed-up over the sequential loop':<50}{'x':>9}{'':>10}   target")
    # Like for like: (a) against (e), transitions with their events committed against
    # transitions alone; (b) against (f), both ending with every event published.
    speedups: list[tuple[str, float, float, float | None]] = [
        ("(e) / (a)  sweep, shards done", looped, swept, 50.0),
        ("(f) / (b)  sweep, events published", looped_events, drained, 50.0),
        ("(e) / (c)  sweep, device statuses applied", looped, applied, None),
    ]
    for label, baseline, seconds, wanted in speedups:
        ratio = baseline / seconds
        goal = "" if wanted is None else f">= {wanted:g}x {_verdict(ratio >= wanted)}"
        print(f"{label:<50}{ratio:9.1f}{'':>10}   {goal}")
    print(
        f"\nafter the last shard: outbox empty {drained - swept:+.3f} s, device "
        f"statuses applied {applied - swept:+.3f} s; the device worker took "
        f"{applied / due * 1e3:.2f} ms per event over (c)"
    )
    for line in lines:
        print(line)


if __name__ == "__main__":
    # kill and timeout clean up as Ctrl-C does: the workers this started are
    # stopped and its database and queues removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(main())
