"""READ routes: handlers whose effects are idempotent, run outside any transaction.

No inbox row and no outbox: repeating such a handler changes nothing more, and its events
(``Events.DIRECT``) are published, confirmed, before its message is acked. A route
with a batch handler takes what arrived together at once, on one connection (the
DMS worker's authorizations, read with one query); the others run one by one,
concurrently. How each outcome is settled is ``runtime.settlement``'s table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from runtime.delivery import Delivery, Lane, bind, runs
from runtime.errors import Failure
from runtime.faults import is_transient
from runtime.settlement import Settlement, poison, refusal, settled_by

__all__ = ["Reads"]

log = structlog.get_logger("dispatch")


@dataclass(slots=True)
class Reads:
    """The READ routes of one queue."""

    lane: Lane
    _waiting: list[Delivery] = field(default_factory=list)
    _loop: asyncio.Task[None] | None = None

    @property
    def running(self) -> asyncio.Task[None] | None:
        return self._loop

    async def take(self, delivery: Delivery) -> None:
        """A READ message: read with what arrived with it (batch handlers), or now."""
        if not delivery.route.batches:
            await self.lane.settler.settle_direct(
                [(delivery, await self._read(delivery))]
            )
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
                async with self.lane.pool.acquire() as conn:
                    ctx = self.lane.context(conn, delivery.envelope, self.lane.clock())
                    outcome = delivery.route.sends(
                        await delivery.route.one(delivery.request, ctx)
                    )
            except Exception as exc:
                if is_transient(exc, self.lane.transient):
                    attempt += 1
                    if not await self.lane.pause(exc, [delivery], attempt):
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
                    self.lane.track(
                        asyncio.create_task(self.lane.settler.settle_direct(answered))
                    )
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
                async with self.lane.pool.acquire() as conn:
                    now = self.lane.clock()
                    outcomes = [
                        route.sends(outcome)
                        for outcome in await route.many(
                            [
                                (d.request, self.lane.context(conn, d.envelope, now))
                                for d in run
                            ]
                        )
                    ]
            except Exception as exc:  # noqa: BLE001 - judged by the settlement table
                if is_transient(exc, self.lane.transient):
                    attempt += 1
                    run = await self.lane.pause(exc, run, attempt)
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
