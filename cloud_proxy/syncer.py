"""The loop that brings each connector in step: due items, reconciliations, backfills.

It wakes when a handler's transaction that made items due commits (LISTEN/NOTIFY),
when the earliest failed item is due again, or at the latest every minute. Items are
claimed with a lease (``Store.claim``), so replicas share the work and a crashed
replica's items come back when the lease ends. A failed item is retried with backoff
and, when it turns failed, announced as ``cloud.sync.failed`` through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog
from pydantic import ValidationError

from cloud_proxy.ca_client import SOURCE, CAClient
from cloud_proxy.errors import ProviderError, ProviderRefused, ProviderUnavailable
from cloud_proxy.items import CHANNEL, Item, Items
from cloud_proxy.provider import CloudProvider
from cloud_proxy.store import SCHEMA, Store
from cloud_proxy.sync import (
    AttachPolicy,
    AttachPrincipal,
    CATarget,
    CertificateTarget,
    EnsureThing,
    RegisterCA,
    RegisterCertificate,
    RemoteCertificate,
    RemoveCertificate,
    SetCAStatus,
    SetCertificateStatus,
    backoff,
    certificate_id,
    out_of_step,
    plan_ca,
    plan_certificate,
)
from contracts.cloud import CloudSyncFailed, SyncKind
from contracts.envelope import new_message
from contracts.errors import first_error
from runtime.bus import Bus
from runtime.outbox import write_events

__all__ = ["Syncer", "Timing"]

log = structlog.get_logger("cloud_proxy.syncer")

_LEASE = timedelta(minutes=5)
_IDLE = 60.0
_PAGE = 1000  # certificate targets per reconciliation read
_RETRY = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Timing:
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 900.0
    batch: int = 50
    concurrency: int = 4
    request_timeout_seconds: float = 30.0


class Syncer:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        store: Store,
        items: Items,
        bus: Bus,
        providers: Mapping[str, CloudProvider],
        clock: Callable[[], datetime],
        timing: Timing,
    ) -> None:
        self._pool = pool
        self._store = store
        self._items = items
        self._ca_client = CAClient(bus, clock, timing.request_timeout_seconds)
        self._providers = providers
        self._clock = clock
        self._timing = timing
        self._wakeup = asyncio.Event()
        self._connectors = sorted(providers)

    async def run(self, wake_outbox: Callable[[], None]) -> None:
        """Until cancelled; a lost database connection is retried every few seconds."""
        while True:
            try:
                async with self._pool.acquire() as listener:
                    await listener.add_listener(CHANNEL, self._notified)
                    try:
                        await self._loop(wake_outbox)
                    finally:
                        await listener.remove_listener(CHANNEL, self._notified)
            except _RETRY as exc:
                log.warning("cloud_sync_loop_failed", error=str(exc))
                await asyncio.sleep(self._timing.retry_base_seconds)
            except Exception:  # a bug in one pass must not end syncing for good
                log.exception("cloud_sync_loop_crashed")
                await asyncio.sleep(self._timing.retry_max_seconds)

    def _notified(self, *_: object) -> None:
        self._wakeup.set()

    async def _loop(self, wake_outbox: Callable[[], None]) -> None:
        while True:
            self._wakeup.clear()
            await self.backfill()
            while await self.reconcile_next():
                pass
            if await self.sync_due(wake_outbox):
                continue
            async with self._pool.acquire() as conn:
                due = await self._items.next_due(conn, self._connectors)
            delay = _IDLE
            if due is not None:
                delay = min(max((due - self._clock()).total_seconds(), 0.01), _IDLE)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    # --- items -----------------------------------------------------------------------

    async def sync_due(self, wake_outbox: Callable[[], None]) -> int:
        """Claim a batch of due items and bring each in step; how many were claimed.

        CAs go first, one by one, since their devices' certificates are registered
        with them; then the certificates, ``concurrency`` at a time: each is a few
        round trips to AWS, and a fleet would otherwise wait on their latency.
        """
        now = self._clock()
        async with self._pool.acquire() as conn:
            items = await self._items.claim(
                conn, now, now + _LEASE, self._connectors, self._timing.batch
            )
        down: set[str] = set()
        for item in items:
            if item.kind is SyncKind.CA:
                await self._one(item, down, wake_outbox)
        gate = asyncio.Semaphore(self._timing.concurrency)

        async def bounded(item: Item) -> None:
            async with gate:
                await self._one(item, down, wake_outbox)

        await asyncio.gather(
            *(bounded(item) for item in items if item.kind is SyncKind.CERTIFICATE)
        )
        return len(items)

    async def _one(
        self, item: Item, down: set[str], wake_outbox: Callable[[], None]
    ) -> None:
        if item.connector in down:
            # Its platform was unreachable a moment ago: do not queue up behind the
            # timeout once per item; try again with the failed one.
            await self._give_back(item)
            return
        try:
            await self._sync(item)
        except ProviderError as exc:
            if isinstance(exc, ProviderUnavailable):
                down.add(item.connector)
            await self._failed(item, str(exc), wake_outbox)
        except Exception as exc:  # one item's bug must not stop the others
            log.exception("cloud_item_crashed", connector=item.connector, key=item.key)
            await self._failed(item, f"internal error: {exc!r}", wake_outbox)
        else:
            async with self._pool.acquire() as conn:
                await self._items.synced(conn, item, self._clock())
            log.info(
                "cloud_item_synced",
                connector=item.connector,
                kind=item.kind.value,
                key=item.key,
            )

    async def _give_back(self, item: Item) -> None:
        async with self._pool.acquire() as conn:
            await self._items.release(
                conn,
                item,
                backoff(1, self._clock(), self._timing.retry_base_seconds, _IDLE),
            )

    async def _failed(
        self, item: Item, error: str, wake_outbox: Callable[[], None]
    ) -> None:
        now = self._clock()
        retry_at = backoff(
            item.attempts + 1,
            now,
            self._timing.retry_base_seconds,
            self._timing.retry_max_seconds,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            first = await self._items.failed(conn, item, error, now, retry_at)
            if first:
                data = CloudSyncFailed(
                    connector=item.connector,
                    kind=item.kind,
                    key=item.key,
                    error=error,
                    attempts=item.attempts + 1,
                    next_attempt_at=retry_at,
                )
                event = new_message(
                    source=SOURCE,
                    subject=f"cloud/{item.connector}/{item.kind.value}/{item.key}",
                    data=data,
                    now=now,
                )
                await write_events(conn, SCHEMA, [event])
        if first:
            wake_outbox()
        log.warning(
            "cloud_item_failed",
            connector=item.connector,
            kind=item.kind.value,
            key=item.key,
            error=error,
            retry_at=retry_at.isoformat(),
        )

    async def _sync(self, item: Item) -> None:
        provider = self._providers[item.connector]
        if item.kind is SyncKind.CA:
            async with self._pool.acquire() as conn:
                ca = await self._store.ca_target(conn, item.connector, item.key)
            if ca is None:
                raise ProviderRefused(f"CA {item.key!r} is not known to the proxy yet")
            await self._sync_ca(provider, ca)
            return
        async with self._pool.acquire() as conn:
            target = await self._store.certificate_target(
                conn, item.connector, item.key
            )
            if target is None:
                return  # not connected any more: nothing to keep in step
            ca_ready = await self._items.ca_synced(
                conn, item.connector, target.connection.ca
            )
        await self._sync_certificate(provider, target, ca_ready=ca_ready)

    async def _sync_ca(self, provider: CloudProvider, target: CATarget) -> None:
        ca_id = certificate_id(target.certificate_pem)
        for step in plan_ca(target, await provider.ca_status(ca_id)):
            if isinstance(step, RegisterCA):
                verification = None
                if step.needs_verification:
                    code = await provider.registration_code()
                    verification = await self._ca_client.verification_certificate(
                        target.connection.ca, code
                    )
                await provider.register_ca(
                    target.certificate_pem,
                    status=step.status.value,
                    verification_pem=verification,
                    sni_only=step.sni_only,
                    template=step.template,
                    role_arn=target.connection.provisioning_role_arn,
                )
            elif isinstance(step, SetCAStatus):
                await provider.set_ca_status(ca_id, step.status.value)

    async def _sync_certificate(
        self, provider: CloudProvider, target: CertificateTarget, *, ca_ready: bool
    ) -> None:
        found = await provider.certificate(certificate_id(target.certificate_pem))
        steps = plan_certificate(target, None if found is None else found.status)
        if any(
            isinstance(s, RegisterCertificate) and s.with_ca for s in steps
        ) and not (ca_ready):
            raise ProviderRefused(
                f"CA {target.connection.ca!r} is not registered in the connector yet"
            )
        remote = found
        for step in steps:
            if isinstance(step, RegisterCertificate):
                remote = await provider.register_certificate(
                    target.certificate_pem,
                    ca_pem=target.ca_certificate_pem if step.with_ca else None,
                    status=step.status.value,
                )
            elif isinstance(step, RemoveCertificate):
                await _remove(provider, found, step.thing)
            elif remote is None:
                raise ProviderRefused(f"certificate {target.serial} is not registered")
            elif isinstance(step, SetCertificateStatus):
                await provider.set_certificate_status(remote.id, step.status.value)
            elif isinstance(step, EnsureThing):
                await provider.ensure_thing(step.name, step.thing_group)
            elif isinstance(step, AttachPrincipal):
                await provider.attach_principal(step.thing, remote.arn)
            elif isinstance(step, AttachPolicy):
                await provider.attach_policy(step.policy, remote.arn)

    # --- reconciliation --------------------------------------------------------------

    async def reconcile_next(self) -> bool:
        """Run one asked-for reconciliation; False when none is waiting."""
        async with self._pool.acquire() as conn:
            connector = await self._items.claim_reconciliation(conn, self._connectors)
        if connector is None:
            return False
        async with self._pool.acquire() as conn:
            cas = await self._store.ca_targets(conn, connector)
        try:
            remote = await self._providers[connector].state(
                [certificate_id(t.certificate_pem) for t in cas]
            )
        except ProviderError as exc:
            log.warning("cloud_reconcile_failed", connector=connector, error=str(exc))
            return True
        due = [(SyncKind.CA, t.connection.ca) for t in cas if out_of_step(t, remote)]
        async with self._pool.acquire() as conn:
            after = ""
            while page := await self._store.certificate_targets(
                conn, connector, after, _PAGE
            ):
                due += [
                    (SyncKind.CERTIFICATE, t.serial)
                    for t in page
                    if out_of_step(t, remote)
                ]
                after = page[-1].serial
            await self._items.make_due(conn, connector, due, self._clock())
            await self._items.reconciled(conn, connector, self._clock())
        log.info("cloud_reconciled", connector=connector, out_of_step=len(due))
        return True

    # --- backfill --------------------------------------------------------------------

    async def backfill(self) -> None:
        """Read the CA and the device certificates of newly connected CAs from the CA
        worker: the projection only holds what happened since the proxy started."""
        async with self._pool.acquire() as conn:
            cas = await self._store.to_backfill(conn, self._connectors)
        for ca in cas:
            try:
                await self._backfill(ca)
            except ProviderError as exc:
                log.warning("cloud_backfill_failed", ca=ca, error=str(exc))
            except ValidationError as exc:
                log.warning("cloud_backfill_failed", ca=ca, error=first_error(exc))

    async def _backfill(self, ca: str) -> None:
        view = await self._ca_client.ca(ca)
        certificates = await self._ca_client.certificates(ca)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._store.upsert_ca(
                conn, view.name, view.certificate_pem, view.status.value
            )
            for certificate in certificates:
                await self._store.upsert_certificate(conn, certificate)
            await self._items.touch_connection(conn, ca, self._clock())
            await self._store.backfilled(conn, ca, self._clock())
        log.info("cloud_backfilled", ca=ca, certificates=len(certificates))


async def _remove(
    provider: CloudProvider, found: RemoteCertificate | None, thing: str
) -> None:
    """Everything AWS requires before a certificate is deleted, then the thing."""
    things = {thing}
    if found is not None:
        for policy in await provider.principal_policies(found.arn):
            await provider.detach_policy(policy, found.arn)
        for name in await provider.principal_things(found.arn):
            things.add(name)
            await provider.detach_principal(name, found.arn)
        if found.status == "ACTIVE":
            await provider.set_certificate_status(found.id, "INACTIVE")
        await provider.delete_certificate(found.id)
    for name in sorted(things):
        await provider.delete_thing(name)
