"""The delivery loop: closes digests whose period ended, claims due notifications, sends
them, records each attempt, and retries with backoff until the retry period is over.

Delivery is at least once: a notification is marked delivered after its receiver
answered, so a crash between the two sends it again, with the same ``webhook-id``
(the CloudEvent id) for the receiver to drop. Replicas share the work: rows are claimed
with ``FOR UPDATE SKIP LOCKED`` and leased, so a claim of a replica that died falls due
again. A notification still failing after the retry period is marked failed and an
``alert.delivery.failed`` event goes out through the outbox, in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import asyncpg
import structlog

from alerts_worker import digests
from alerts_worker.channels import Sender, SendFailed
from alerts_worker.settings import Settings
from alerts_worker.store import SCHEMA, WAKE_CHANNEL, Claimed, Store
from alerts_worker.subscriptions import NewDelivery
from contracts.alerts import ALERT_DIGEST, AlertDeliveryFailed, DeliveryStatus
from contracts.envelope import CloudEvent, new_message
from contracts.names import Source
from runtime.outbox import write_events

__all__ = ["Deliverer", "retry_delay"]

log = structlog.get_logger("alerts")

SOURCE = Source.ALERTS
# The longest wait between two looks at the table when no NOTIFY came (a lost
# listener connection, a retry falling due).
_POLL = 1.0
_GIVE_UP = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def retry_delay(attempts: int, first: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next try: ``first`` doubled per attempt made, capped, with
    "equal jitter" (half fixed, half random) so that notifications failed together do
    not all come back together."""
    delay = min(cap, first * 2 ** min(attempts - 1, 62))
    return float(delay / 2 + rng.uniform(0, delay / 2))


class Deliverer:
    """One per worker process; ``run`` is a ``Plan`` task."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        store: Store,
        sender: Sender,
        settings: Settings,
        clock: Callable[[], datetime],
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._store = store
        self._sender = sender
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()

    async def run(self, wake_relay: Callable[[], None]) -> None:
        """Deliver until cancelled, woken by NOTIFY after each commit that adds rows."""
        async with self._pool.acquire() as listener:
            await listener.add_listener(WAKE_CHANNEL, self._notified)
            try:
                while True:
                    self._wake.clear()
                    try:
                        busy = await self.round(wake_relay)
                    except _GIVE_UP as exc:
                        log.warning(
                            "alerts_round_failed", error=f"{type(exc).__name__}: {exc}"
                        )
                        busy = False
                    except Exception:  # a bug must not stop every delivery
                        log.exception("alerts_round_crashed")
                        busy = False
                    if not busy:
                        await self._sleep()
            finally:
                with contextlib.suppress(*_GIVE_UP):
                    await listener.remove_listener(WAKE_CHANNEL, self._notified)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _sleep(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                due = await self._store.next_due(conn)
        except _GIVE_UP:
            due = None
        wait = _POLL
        if due is not None:
            wait = min(_POLL, max(0.01, (due - self._clock()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()

    async def round(self, wake_relay: Callable[[], None]) -> bool:
        """Close due digests, then send one batch; True when there may be more."""
        now = self._clock()
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await self._close_digests(conn, now)
            async with conn.transaction():
                claimed = await self._store.claim(
                    conn,
                    now,
                    self._settings.alerts_lease,
                    self._settings.alerts_concurrency,
                )
        if not claimed:
            return False
        errors = await asyncio.gather(*(self._attempt(c) for c in claimed))
        await self._settle(list(zip(claimed, errors, strict=True)), wake_relay)
        return len(claimed) == self._settings.alerts_concurrency

    async def _attempt(self, claimed: Claimed) -> str | None:
        try:
            await self._sender.send(claimed, self._clock())
        except SendFailed as exc:
            return str(exc)[:500]
        except Exception as exc:  # one bad notification must not stop the rest
            # Retried like any failure, and failed in the end: never lost silently.
            log.exception("alert_send_crashed", delivery_id=claimed.id)
            return f"internal error: {type(exc).__name__}"
        return None

    async def _settle(
        self,
        results: Sequence[tuple[Claimed, str | None]],
        wake_relay: Callable[[], None],
    ) -> None:
        now = self._clock()
        s = self._settings
        rows: list[tuple[Claimed, str | None, DeliveryStatus, datetime]] = []
        failed: list[CloudEvent] = []
        for claimed, error in results:
            if error is None:
                rows.append((claimed, None, DeliveryStatus.DELIVERED, now))
                continue
            give_up_at = claimed.created_at + timedelta(seconds=s.alerts_retry_period)
            if now >= give_up_at:
                rows.append((claimed, error, DeliveryStatus.FAILED, now))
                failed.append(self._failure(claimed, error, now))
                continue
            delay = retry_delay(
                claimed.attempts, s.alerts_retry_first, s.alerts_retry_max, self._rng
            )
            later = min(now + timedelta(seconds=delay), give_up_at)
            rows.append((claimed, error, DeliveryStatus.PENDING, later))
        async with self._pool.acquire() as conn, conn.transaction():
            await self._store.settle(conn, now, rows)
            await write_events(conn, SCHEMA, failed)
        for claimed, error, status, _ in rows:
            if status is not DeliveryStatus.DELIVERED:
                log.info(
                    f"alert_{status.value}"
                    if status is DeliveryStatus.FAILED
                    else "alert_retried",
                    delivery_id=claimed.id,
                    subscription_id=claimed.subscription_id,
                    attempts=claimed.attempts,
                    error=error,
                )
        if failed:
            wake_relay()

    @staticmethod
    def _failure(claimed: Claimed, error: str, now: datetime) -> CloudEvent:
        return new_message(
            source=SOURCE,
            subject=f"subscription/{claimed.subscription_id}",
            data=AlertDeliveryFailed(
                subscription_id=claimed.subscription_id,
                delivery_id=claimed.id,
                message_id=claimed.message_id,
                channel=claimed.channel,
                attempts=claimed.attempts,
                first_attempt_at=claimed.created_at,
                last_error=error,
            ),
            now=now,
            # One failure event per notification, whoever gives up on it.
            id_=f"alert-failed-{claimed.id}",
        )

    async def _close_digests(self, conn: asyncpg.Connection, now: datetime) -> None:
        groups = await self._store.take_due_digests(conn, now)
        deliveries = []
        for (subscription_id, due_at), items in groups.items():
            data = digests.digest_data(
                subscription_id, due_at, items, self._settings.alerts_digest_first
            )
            message_id = f"digest-{subscription_id}-{int(due_at.timestamp())}"
            event = {
                "specversion": "1.0",
                "id": message_id,
                "source": SOURCE,
                "type": ALERT_DIGEST,
                "subject": f"subscription/{subscription_id}",
                "time": now.isoformat(),
                "datacontenttype": "application/json",
                "data": data,
            }
            deliveries.append(NewDelivery(subscription_id, message_id, "digest", event))
            log.info(
                "alert_digest_closed", subscription_id=subscription_id, items=len(items)
            )
        await self._store.add_deliveries(conn, deliveries, now)
