"""The scheduler: periods (pure) and one claim per period across replicas (PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from runtime.db import migrate
from runtime.schedule import Cron, Interval, Scheduler, parse_schedule
from tests.conftest import Backends


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- periods: no I/O ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "now", "start", "following"),
    [
        ("1h", "2026-11-23 10:17:03", "2026-11-23 10:00", "2026-11-23 11:00"),
        ("15m", "2026-11-23 10:17:03", "2026-11-23 10:15", "2026-11-23 10:30"),
        ("30s", "2026-11-23 10:17:03", "2026-11-23 10:17:00", "2026-11-23 10:17:30"),
        ("1d", "2026-11-23 10:17:03", "2026-11-23 00:00", "2026-11-24 00:00"),
        ("0 3 * * *", "2026-11-23 10:17", "2026-11-23 03:00", "2026-11-24 03:00"),
        ("0 3 * * *", "2026-11-23 02:59", "2026-11-22 03:00", "2026-11-23 03:00"),
        ("0 3 * * *", "2026-11-23 03:00", "2026-11-23 03:00", "2026-11-24 03:00"),
        ("*/20 * * * *", "2026-11-23 10:45", "2026-11-23 10:40", "2026-11-23 11:00"),
        ("5/20 8-9 * * *", "2026-11-23 10:00", "2026-11-23 09:45", "2026-11-24 08:05"),
        ("0 0 * * 1-5", "2026-11-22 12:00", "2026-11-20 00:00", "2026-11-23 00:00"),
        ("0 0 * * 7", "2026-11-23 12:00", "2026-11-22 00:00", "2026-11-29 00:00"),
        # Both day fields restricted: either matches, as crontab(5) says.
        ("0 0 1 * 3", "2026-11-23 12:00", "2026-11-18 00:00", "2026-11-25 00:00"),
        ("0 0 29 2 *", "2026-11-23 12:00", "2024-02-29 00:00", "2028-02-29 00:00"),
        ("@daily", "2026-11-23 10:17", "2026-11-23 00:00", "2026-11-24 00:00"),
        ("@monthly", "2026-11-23 10:17", "2026-11-01 00:00", "2026-12-01 00:00"),
    ],
)
def test_periods(text: str, now: str, start: str, following: str) -> None:
    schedule = parse_schedule(text)
    assert schedule is not None
    assert at(start) == schedule.period_start(at(now))
    assert at(following) == schedule.next_start(at(now))


def test_off_means_no_schedule() -> None:
    assert parse_schedule("off") is None
    assert parse_schedule(" OFF ") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0s", "longer than zero"),
        ("1x", "five fields"),
        ("", "five fields"),
        ("* * * *", "five fields"),
        ("60 * * * *", "minute field '60' is outside 0-59"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day field"),
        ("* * * 13 *", "month field"),
        ("* * * * 8", "weekday field"),
        ("*/0 * * * *", "minute field"),
        ("a * * * *", "minute field 'a' is not understood"),
        ("5-2 * * * *", "minute field"),
        ("0 0 31 2 *", "never matches"),
    ],
)
def test_bad_schedules_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_schedule(text)


def test_interval_periods_tile_time() -> None:
    """Consecutive periods touch: the next start is the period after the current one."""
    schedule = Interval(7 * 60)
    now = at("2026-11-23 10:17:03")
    for _ in range(50):
        start, following = schedule.period_start(now), schedule.next_start(now)
        assert start <= now < following
        assert following - start == timedelta(minutes=7)
        assert schedule.period_start(following) == following
        now = following


def test_cron_weekday_seven_is_sunday() -> None:
    assert Cron.parse("0 0 * * 7").weekdays == Cron.parse("0 0 * * 0").weekdays


# --- claims: real PostgreSQL --------------------------------------------------------


@pytest.fixture
async def pool(backends: Backends) -> AsyncIterator[asyncpg.Pool]:
    pool = await backends.pool(min_size=2, max_size=6)
    await migrate(pool, "schedtest", [])
    yield pool
    await pool.close()


class Fired:
    """A trigger that records each firing in the claim's transaction (like the outbox)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.calls: list[datetime] = []
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail = False

    async def __call__(
        self, conn: asyncpg.Connection, period: datetime, _now: datetime
    ) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.schema}.fired (period timestamptz)"
        )
        await conn.execute(f"INSERT INTO {self.schema}.fired VALUES ($1)", period)
        self.calls.append(period)
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise OSError("the claimer died")


def scheduler(pool: asyncpg.Pool, name: str, fire: Fired, now: datetime) -> Scheduler:
    return Scheduler(
        pool=pool,
        schema="schedtest",
        name=name,
        schedule=Interval(3600),
        fire=fire,
        clock=lambda: now,
    )


async def waiting_on_a_lock(pool: asyncpg.Pool) -> None:
    """Until a session of this database waits for a row lock (deadline 10 s)."""
    async with asyncio.timeout(10):
        while not await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            await asyncio.sleep(0.01)


async def test_one_firing_per_period_across_replicas(pool: asyncpg.Pool) -> None:
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    now = at("2026-11-23 10:17:03")
    fire = Fired("schedtest")
    replicas = [scheduler(pool, name, fire, now) for _ in range(4)]
    results = await asyncio.gather(*(r.tick() for r in replicas))
    assert [at("2026-11-23 10:00")] == [r for r in results if r is not None]
    assert 1 == len(fire.calls)
    # The same period again changes nothing; the next period fires once.
    assert await replicas[0].tick() is None
    later = scheduler(pool, name, fire, now + timedelta(hours=1))
    assert at("2026-11-23 11:00") == await later.tick()
    assert 2 == len(fire.calls)


async def test_a_dead_claimers_period_is_taken_by_another(pool: asyncpg.Pool) -> None:
    """The first claimer holds its claim uncommitted, then dies: the second fires."""
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    now = at("2026-11-23 10:17:03")
    dying, healthy = Fired("schedtest"), Fired("schedtest")
    dying.hold, dying.fail = asyncio.Event(), True
    first = asyncio.create_task(scheduler(pool, name, dying, now).tick())
    await asyncio.wait_for(dying.entered.wait(), 10)
    # The second replica ticks while the claim is in flight: it waits on the row...
    second = asyncio.create_task(scheduler(pool, name, healthy, now).tick())
    await waiting_on_a_lock(pool)
    assert not second.done()
    # ...and when the first dies (its transaction rolls back), fires the period itself.
    dying.hold.set()
    with pytest.raises(OSError, match="the claimer died"):
        await first
    assert at("2026-11-23 10:00") == await asyncio.wait_for(second, 10)
    assert 1 == len(healthy.calls)
    periods = [
        r["period"]
        for r in await pool.fetch(
            "SELECT period FROM schedtest.schedule_claims WHERE name = $1", name
        )
    ]
    assert [at("2026-11-23 10:00")] == periods


async def test_run_fires_now_and_wakes_the_relay(pool: asyncpg.Pool) -> None:
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    fire = Fired("schedtest")
    woken = asyncio.Event()
    task = asyncio.create_task(
        scheduler(pool, name, fire, datetime.now(UTC)).run(woken.set)
    )
    try:
        await asyncio.wait_for(woken.wait(), 10)
    finally:
        task.cancel()
    assert 1 == len(fire.calls)
