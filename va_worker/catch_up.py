"""What the VA missed before its queue existed: at start, the CAs the CA worker has
(``ca.list``, as the EST gateway reads them) and, for a CA this VA has never seen, the
certificates it issued (``certificate.list``, page by page).

It runs beside the event consumers, not before them: statuses only move forward, so an
event and a listing may arrive in either order. The CA worker may start after the VA
(``lamassu up`` starts everything at once): the listing is retried until it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import CAs, CAView, Certificates, ListCAs, ListCertificates
from contracts.envelope import new_message
from contracts.errors import Reply
from runtime.bus import Bus, BusUnavailable, RequestTimeout
from va_worker.ocsp import CertState
from va_worker.served import Served
from va_worker.store import Store
from va_worker.upkeep import SOURCE

__all__ = ["CatchUp"]

log = structlog.get_logger("va_worker")

_PAGE = 1000


class CatchUp:
    def __init__(
        self,
        *,
        bus: Bus,
        pool: asyncpg.Pool,
        store: Store,
        served: Served,
        clock: Callable[[], datetime],
    ) -> None:
        self._bus = bus
        self._pool = pool
        self._store = store
        self._served = served
        self._clock = clock

    async def run(self, _wake: Callable[[], None]) -> None:
        """Once: every CA, and the certificates of CAs new to this VA."""
        try:
            await self._catch_up()
        except (BusUnavailable, OSError, asyncpg.PostgresError) as exc:
            # Events keep the VA current from here on; only the past is missing.
            log.warning("va_catch_up_failed", error=f"{type(exc).__name__}: {exc}")

    async def _catch_up(self) -> None:
        reply = await self._ask(ListCAs())
        for view in CAs.model_validate(reply.result).items:
            first_seen = self._served.ca_certificate(view.name) is None
            await self._ca(view)
            if first_seen:
                await self._certificates(view.name)
        log.info("va_caught_up")

    async def _ask(self, query: ListCAs | ListCertificates) -> Reply:
        message = new_message(source=SOURCE, data=query, now=self._clock())
        while True:
            try:
                reply = await self._bus.request(message, timeout=5)
            except (BusUnavailable, RequestTimeout):
                log.info("va_waiting_for_ca_worker")
                await asyncio.sleep(1)
                continue
            if not reply.ok:
                raise BusUnavailable(f"{query.TYPE} refused: {reply.error}")
            return reply

    async def _ca(self, view: CAView) -> None:
        certificate = x509.load_pem_x509_certificate(view.certificate_pem.encode())
        der = certificate.public_bytes(serialization.Encoding.DER)
        async with self._pool.acquire() as conn:
            await self._store.upsert_ca(
                conn, view.name, der, view.status, self._clock()
            )
        self._served.add_ca(view.name, certificate)

    async def _certificates(self, ca: str) -> None:
        after = None
        count = 0
        while True:
            reply = await self._ask(ListCertificates(ca=ca, limit=_PAGE, after=after))
            page = Certificates.model_validate(reply.result).items
            async with self._pool.acquire() as conn, conn.transaction():
                for view in page:
                    state = CertState(
                        view.status, view.revoked_at, view.revocation_reason
                    )
                    await self._store.upsert_certificate(conn, ca, view.serial, state)
            count += len(page)
            if len(page) < _PAGE:
                break
            after = page[-1].serial
        log.info("va_certificates_caught_up", ca=ca, certificates=count)
