"""READ routes: handlers whose effects are idempotent, run outside any transaction.

No inbox row and no outbox: repeating such a handler changes nothing more, and its events
(``Events.DIRECT``) are published, confirmed, before its message is acked. A route
with a batch handler takes what arrived together at once, on one connection (the
DMS worker's authorizations, read with one query); the others run one by one,
concurrently. How each outcome is settled is ``runtime.settlement``'s table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from runtime.delivery import Delivery, Pool, bind, pause, runs
from runtime.errors import Failure
from runtime.faults import Backoff, is_transient
from runtime.routes import ContextFactory
from runtime.settlement import Settlement, Settler, poison, refusal, settled_by

__all__ = ["Reads"]

log = structlog.get_logger("dispatch")


@dataclass(slots=True)
class Reads:
    """The READ routes of one queue."""

    pool: Pool
    context: ContextFactory
    clock: Callable[[], datetime]
    transient: tuple[type[BaseException], ...]
    backoff: Backoff
    settler: Settler
    closing: Callable[[], bool]
    settling: set[asyncio.Task[None]]
    _waiting: list[Delivery] = field(default_factory=list)
    _loop: asyncio.Task[None] | None = None

    @property
    def running(self) -> asyncio.Task[None] | None:
        return self._loop

    async def take(self, delivery: Delivery) -> None:
        """A READ message: read with what arrived with it (batch handlers), or now."""
        if not delivery.route.batches:
            await self.settler.settle_direct([(delivery, await self._read(delivery))])
            return
        self._waiting.append(delivery)
        if self._loop is None:
            self._loop = asyncio.create_task(self._run())

    async def _read(self, delivery: Delivery) -> Settlement | None:
        """One message; None when it is left to the broker to redeliver."""
        attempt = 0
        while True:
            bind(delivery.message, delivery.envelope)
            try:
                async with self.pool.acquire() as conn:
                    ctx = self.context(conn, delivery.envelope, self.clock())
                    outcome = delivery.route.sends(
                        await delivery.route.one(delivery.request, ctx)
                    )
            except Exception as exc:
                if is_transient(exc, self.transient):
                    attempt += 1
                    if not await pause(
                        exc,
                        [delivery],
                        attempt,
                        backoff=self.backoff,
                        closing=self.closing,
                    ):
                        return None
                    continue
                if isinstance(exc, Failure):
                    return refusal(exc)
                log.exception("handler_crashed")
                return poison(delivery.envelope)
            return settled_by(outcome, direct=True)

    async def _run(self) -> None:
        """What arrived together, run by run, until nothing waits."""
        try:
            await asyncio.sleep(0)  # one turn of the loop, as for batches
            while self._waiting:
                arrived, self._waiting = self._waiting, []
                for run in runs(arrived):
                    answered = await self._read_run(run)
                    task = asyncio.create_task(self.settler.settle_direct(answered))
                    self.settling.add(task)
                    task.add_done_callback(self.settling.discard)
        finally:
            self._loop = None

    async def _read_run(
        self, run: Sequence[Delivery]
    ) -> list[tuple[Delivery, Settlement | None]]:
        """One type's messages through its batch handler on one connection; one by
        one if it refuses or fails, so that each gets its own answer."""
        route = run[0].route
        attempt = 0
        while True:
            try:
                async with self.pool.acquire() as conn:
                    now = self.clock()
                    outcomes = [
                        route.sends(outcome)
                        for outcome in await route.many(
                            [
                                (d.request, self.context(conn, d.envelope, now))
                                for d in run
                            ]
                        )
                    ]
            except Exception as exc:  # noqa: BLE001 - judged by the settlement table
                if is_transient(exc, self.transient):
                    attempt += 1
                    run = await pause(
                        exc, run, attempt, backoff=self.backoff, closing=self.closing
                    )
                    if not run:
                        return []
                    continue
                if isinstance(exc, Failure) and len(run) > 1:
                    log.info("batch_refused", reason=str(exc), messages=len(run))
                return [(d, await self._read(d)) for d in run]
            return [
                (d, settled_by(outcome, direct=True))
                for d, outcome in zip(run, outcomes, strict=True)
            ]
