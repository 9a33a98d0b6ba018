"""Periodic triggers, claimed in the database: one firing per period across all replicas.

Every replica ticks at each period start. A tick inserts ``(name, period)`` into
``<schema>.schedule_claims`` and runs the trigger in that same transaction, so what the
trigger writes (outbox rows, say) commits with the claim or not at all. A second replica
ticking meanwhile waits on the uncommitted claim row: if the claimer commits, the
second finds the period taken; if the claimer dies first, PostgreSQL rolls its claim
back and the second replica fires instead. Nothing is lost and nothing fires twice.

Periods are in UTC: an interval is aligned to the Unix epoch, a cron expression
(five fields, as crontab(5)) is evaluated in UTC, so every replica agrees on them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import asyncpg
import structlog

from runtime.faults import is_transient

__all__ = [
    "Cron",
    "Fire",
    "Interval",
    "Schedule",
    "Scheduler",
    "parse_duration",
    "parse_schedule",
]

log = structlog.get_logger("schedule")

Fire = Callable[[asyncpg.Connection, datetime, datetime], Awaitable[None]]
"""The trigger: ``(connection in the claim's transaction, period start, now)``."""


class Schedule(Protocol):
    def period_start(self, now: datetime) -> datetime:
        """The start of the period ``now`` is in."""

    def next_start(self, now: datetime) -> datetime:
        """The start of the first period after the one ``now`` is in."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``seconds``, periods aligned to the Unix epoch."""

    seconds: int

    def period_start(self, now: datetime) -> datetime:
        elapsed = int((now - _EPOCH).total_seconds())
        return _EPOCH + timedelta(seconds=elapsed - elapsed % self.seconds)

    def next_start(self, now: datetime) -> datetime:
        return self.period_start(now) + timedelta(seconds=self.seconds)


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12))
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# Long enough to find "0 0 29 2 *" (the next 29 February) from any day.
_SEARCH_DAYS = 366 * 8


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    """One crontab(5) field: ``*``, ``a``, ``a-b``, each with an optional ``/step``, comma-joined."""
    values: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if match is None:
            raise ValueError(f"cron {name} field {text!r} is not understood")
        start, stop = (
            (low, high)
            if match[1] == "*"
            else (int(match[2]), int(match[3] or match[2]))
        )
        if match[3] is None and match[4] is not None and match[1] != "*":
            stop = high  # "5/15" means from 5 to the end, every 15
        step = int(match[4] or 1)
        if not (low <= start <= stop <= high) or step == 0:
            raise ValueError(f"cron {name} field {text!r} is outside {low}-{high}")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A crontab(5) expression in UTC: periods start at its matching minutes."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as in crontab(5)
    # crontab(5): when both day fields are restricted, a day matching either runs.
    either_day: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = _ALIASES.get(text.strip(), text).split()
        if len(fields) != len(_FIELDS) + 1:
            raise ValueError(
                f"cron {text!r} needs five fields (minute hour day month weekday)"
            )
        minutes, hours, days, months = (
            _field(f, n, lo, hi)
            for f, (n, lo, hi) in zip(fields, _FIELDS, strict=False)
        )
        # crontab(5): 7 is Sunday too.
        weekdays = frozenset(d % 7 for d in _field(fields[4], "weekday", 0, 7))
        return cls(
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day=fields[2] != "*" and fields[4] != "*",
        )

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        return (by_date or by_weekday) if self.either_day else (by_date and by_weekday)

    def _times(self) -> list[tuple[int, int]]:
        return sorted((h, m) for h in self.hours for m in self.minutes)

    def period_start(self, now: datetime) -> datetime:
        now = now.astimezone(UTC)
        times = self._times()
        for back in range(_SEARCH_DAYS):
            day = now.date() - timedelta(days=back)
            if not self._day_matches(day):
                continue
            for hour, minute in reversed(times):
                start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                if start <= now:
                    return start
        raise ValueError("the cron expression never matches")

    def next_start(self, now: datetime) -> datetime:
        now = now.astimezone(UTC)
        times = self._times()
        for ahead in range(_SEARCH_DAYS):
            day = now.date() + timedelta(days=ahead)
            if not self._day_matches(day):
                continue
            for hour, minute in times:
                start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                if start > now:
                    return start
        raise ValueError("the cron expression never matches")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h`` or ``7d``; ValueError with a one-line reason."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    seconds = int(match[1]) * _UNITS[match[2]]
    if seconds == 0:
        raise ValueError("a duration must be longer than zero")
    return timedelta(seconds=seconds)


def parse_schedule(text: str) -> Schedule | None:
    """``off``; an interval ``30s``, ``15m``, ``1h``, ``1d``; or a cron expression.

    Raises ValueError with a one-line reason.
    """
    text = text.strip()
    if text.lower() == "off":
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if match:
        seconds = int(match[1]) * _UNITS[match[2]]
        if seconds == 0:
            raise ValueError("an interval must be longer than zero")
        return Interval(seconds)
    cron = Cron.parse(text)
    cron.next_start(datetime.now(UTC))  # refuses expressions that never match (31 Feb)
    return cron


class Scheduler:
    """Fires ``fire`` once per period of ``schedule``, whichever replica gets there first."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        schema: str,
        name: str,
        schedule: Schedule,
        fire: Fire,
        clock: Callable[[], datetime],
        retry_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._name = name
        self._schedule = schedule
        self._fire = fire
        self._clock = clock
        self._retry = retry_seconds

    async def tick(self) -> datetime | None:
        """Claim and fire the current period; the period fired, or None if it was taken."""
        now = self._clock()
        period = self._schedule.period_start(now)
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(
                f"INSERT INTO {self._schema}.schedule_claims (name, period) "
                "VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
                self._name,
                period,
            )
            if not claimed:
                return None
            await self._fire(conn, period, now)
            # Claims only matter for the current period; keep a month for operators.
            await conn.execute(
                f"DELETE FROM {self._schema}.schedule_claims "
                "WHERE name = $1 AND period < $2",
                self._name,
                period - timedelta(days=31),
            )
        log.info("schedule_fired", schedule=self._name, period=period.isoformat())
        return period

    async def run(self, fired: Callable[[], None]) -> None:
        """Tick now (a missed period is caught up) and at every period start, until
        cancelled; ``fired`` is called after a firing commits (wakes the outbox relay).
        A transient failure is retried after ``retry_seconds``; anything else is
        raised to the supervisor that runs this loop."""
        while True:
            try:
                if await self.tick() is not None:
                    fired()
                now = self._clock()
                delay = (self._schedule.next_start(now) - now).total_seconds()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("schedule_tick_failed", schedule=self._name, error=str(exc))
                delay = self._retry
            await asyncio.sleep(max(delay, 0.0))
