"""Background tasks never die silently: restarted, or the process gives up loudly."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from runtime.errors import Transient
from runtime.faults import Backoff
from runtime.supervise import Supervisor, Unrecoverable

QUICK = Backoff(initial=0.001, cap=0.002)


async def test_a_failing_task_is_logged_and_restarted() -> None:
    """A task that raises is logged with its traceback and runs again."""
    runs = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"bug number {runs}")
        recovered.set()
        await asyncio.Event().wait()

    supervisor = Supervisor(backoff=QUICK)
    with capture_logs() as logs:
        supervisor.start("flaky", flaky)
        async with asyncio.timeout(5):
            await recovered.wait()
        assert {"flaky": True} == supervisor.alive()
        await supervisor.close()
    failed = [e for e in logs if e["event"] == "task_failed"]
    assert 2 == len(failed)
    assert all(e["log_level"] == "error" and e["exc_info"] for e in failed)


async def test_transient_failures_never_exhaust_the_budget() -> None:
    """The database away for many tries: retried for as long as it lasts."""
    runs = 0
    recovered = asyncio.Event()

    async def waits_for_database() -> None:
        nonlocal runs
        runs += 1
        if runs <= 20:
            raise Transient("the database system is starting up")
        recovered.set()
        await asyncio.Event().wait()

    supervisor = Supervisor(backoff=QUICK, max_failures=3)
    supervisor.start("relay", waits_for_database)
    stop = asyncio.Event()
    watching = asyncio.create_task(supervisor.watch(stop))
    async with asyncio.timeout(5):
        await recovered.wait()
    stop.set()
    await watching  # returned on stop: it never gave up
    await supervisor.close()


async def test_a_task_that_keeps_failing_stops_the_process() -> None:
    """After max_failures bugs in a row, watch raises Unrecoverable naming the task."""

    async def broken() -> None:
        raise ValueError("wrong every time")

    supervisor = Supervisor(backoff=QUICK, max_failures=3)
    supervisor.start("scheduler", broken)
    with pytest.raises(Unrecoverable, match="scheduler failed 3 times"):
        async with asyncio.timeout(5):
            await supervisor.watch(asyncio.Event())
    await supervisor.close()


async def test_close_never_raises() -> None:
    """Shutdown goes on even when a task died with an exception."""

    async def dies() -> None:
        raise RuntimeError("boom")

    supervisor = Supervisor(backoff=Backoff(initial=60, cap=60))
    supervisor.start("dies", dies)
    await asyncio.sleep(0)
    await supervisor.close()
    assert {"dies": False} == supervisor.alive()
