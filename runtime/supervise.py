"""Long-lived background tasks that never die silently.

Every loop a process runs beside its consumers (the outbox relay, a scheduler, the
gateway's CA follower) is started here. A task that raises is logged with its
traceback and started again after a capped, jittered backoff. Transient failures (the
broker or the database restarting, ``runtime.faults``) are retried for as long as they
last; a task that keeps failing with anything else has a bug that restarting does not
cure, so after ``max_failures`` such failures in a row the supervisor gives up and the
process exits non-zero: its own supervisor (systemd, Kubernetes, ``lamassu up``) then
starts it afresh instead of it lingering half-alive. A task that ran for
``healthy_after`` seconds before failing starts a new count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from runtime.faults import Backoff, is_transient

__all__ = ["Supervisor", "Unrecoverable"]

log = structlog.get_logger("supervise")

Loop = Callable[[], Coroutine[Any, Any, None]]


class Unrecoverable(Exception):  # noqa: N818 - names the state the process is in
    """A background task kept failing; ``str()`` says which and why (one line)."""


class Supervisor:
    """Starts, restarts and finally stops a process's background tasks."""

    def __init__(
        self,
        *,
        backoff: Backoff | None = None,
        max_failures: int = 5,
        healthy_after: float = 60.0,
        transient: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._backoff = backoff or Backoff(initial=0.5, cap=30.0)
        self._max_failures = max_failures
        self._healthy_after = healthy_after
        self._transient = transient
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, bool] = {}
        self._failed: asyncio.Future[str] | None = None

    def start(self, name: str, loop: Loop) -> None:
        """Run ``loop`` under supervision as ``name`` (unique per process)."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is supervised already")
        self._running[name] = False
        self._tasks[name] = asyncio.create_task(self._keep(name, loop), name=name)

    def alive(self) -> dict[str, bool]:
        """Each unfinished task's name and whether it is running now (not waiting to
        restart after a failure); a task that ended normally is not listed."""
        return dict(self._running)

    async def failed(self) -> str:
        """Wait until a task is given up on; its one-line reason."""
        return await self._failure()

    async def watch(self, stop: asyncio.Event) -> None:
        """Return when ``stop`` is set; raise ``Unrecoverable`` if a task gives up first."""
        stopped = asyncio.ensure_future(stop.wait())
        failure = self._failure()
        waiting: list[asyncio.Future[Any]] = [stopped, failure]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if failure.done():
            raise Unrecoverable(failure.result())

    async def close(self) -> None:
        """Cancel every task and wait for it; never raises (shutdown must go on)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _failure(self) -> asyncio.Future[str]:
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    async def _keep(self, name: str, loop: Loop) -> None:
        failures = 0
        attempt = 0
        while True:
            started = time.monotonic()
            self._running[name] = True
            try:
                await loop()
            except asyncio.CancelledError:
                self._running[name] = False
                raise
            except Exception as exc:
                self._running[name] = False
                if time.monotonic() - started >= self._healthy_after:
                    failures = attempt = 0
                transient = is_transient(exc, self._transient)
                attempt += 1
                failures += 0 if transient else 1
                delay = self._backoff.delay(attempt)
                log.exception(
                    "task_failed",
                    task=name,
                    transient=transient,
                    restart_in=round(delay, 2),
                )
                if failures >= self._max_failures:
                    reason = f"task {name} failed {failures} times in a row: {type(exc).__name__}: {exc}"
                    log.critical("task_given_up", task=name, reason=reason)
                    if not self._failure().done():
                        self._failure().set_result(reason)
                    return
                await asyncio.sleep(delay)
            else:
                # Done, not dead (a one-off catch-up): no longer reported by alive().
                del self._running[name]
                log.info("task_finished", task=name)
                return
