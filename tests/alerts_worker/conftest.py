"""The alerts worker in-process on this run's backends, with an SMTP server, a clock the
tests can move forward, and short retry delays (settings, not sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from alerts_worker.__main__ import serve
from alerts_worker.settings import Settings
from contracts.names import Topology
from runtime.bus import Bus
from tests.alerts_worker.receivers import SmtpReceiver
from tests.conftest import (
    AMQP_URL,
    Backends,
    running,
    wait_until_queue,
    worker_settings,
)


@dataclass
class Clock:
    """Wall-clock time plus an offset a test moves forward (retry periods, digests)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Alerts:
    bus: Bus
    db: asyncpg.Pool
    clock: Clock
    smtp: SmtpReceiver
    settings: Settings


@pytest.fixture(scope="module")
async def alerts(backends: Backends) -> AsyncIterator[Alerts]:
    smtp = SmtpReceiver()
    await smtp.start()
    settings = worker_settings(
        Settings,
        backends,
        smtp_port=smtp.port,
        smtp_tls="none",
        alerts_retry_first=0.05,
        alerts_retry_max=0.2,
        alerts_http_timeout=5,
    )
    clock = Clock()

    async def serve_with_clock(s: Settings, stop: asyncio.Event) -> None:
        await serve(s, stop, clock)

    async with running(serve_with_clock, settings) as task:
        bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
        db = await backends.pool()
        try:
            await wait_until_queue(bus, "alerts", "commands", task)
            yield Alerts(bus, db, clock, smtp, settings)
        finally:
            await db.close()
            await bus.close()
    await smtp.stop()
