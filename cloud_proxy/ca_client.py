"""The cloud proxy's side of the CA worker, over request/reply: a CA and the
certificates it issued (backfill), and the signing of ownership-verification
certificates, so that a CA key never leaves the CA worker's engine.

An unreachable or silent CA worker is ``ProviderUnavailable`` (the item is retried),
a refusal ``ProviderRefused``; a reply that does not parse is pydantic's error.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from cloud_proxy.errors import ProviderRefused, ProviderUnavailable
from cloud_proxy.ownership import verification_csr
from contracts.ca import (
    CAView,
    Certificates,
    CertificateView,
    GetCA,
    ListCertificates,
    SignCertificate,
)
from contracts.envelope import new_message
from contracts.message import Message
from contracts.names import Source
from runtime.bus import Bus, BusUnavailable, RequestTimeout

__all__ = ["SOURCE", "CAClient"]

SOURCE = Source.CLOUD_PROXY
_PAGE = 1000


class CAClient:
    def __init__(
        self, bus: Bus, clock: Callable[[], datetime], timeout_seconds: float
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._timeout = timeout_seconds

    async def ca(self, name: str) -> CAView:
        return CAView.model_validate(await self._ask(GetCA(name=name)))

    async def certificates(self, ca: str) -> list[CertificateView]:
        """Every certificate the CA issued, page by page."""
        found: list[CertificateView] = []
        after: str | None = None
        while True:
            page = Certificates.model_validate(
                await self._ask(ListCertificates(ca=ca, limit=_PAGE, after=after))
            ).items
            found += page
            if len(page) < _PAGE:
                return found
            after = page[-1].serial

    async def verification_certificate(self, ca: str, registration_code: str) -> str:
        """Signed by the CA worker through the CA's engine (the key never comes here)."""
        request = SignCertificate(
            ca=ca, csr_pem=verification_csr(registration_code), validity_days=1
        )
        return CertificateView.model_validate(await self._ask(request)).certificate_pem

    async def _ask(self, request: Message) -> object:
        type_ = request.TYPE
        try:
            reply = await self._bus.request(
                new_message(source=SOURCE, data=request, now=self._clock()),
                timeout=self._timeout,
            )
        except (BusUnavailable, RequestTimeout) as exc:
            raise ProviderUnavailable(f"{type_}: {exc}") from None
        if not reply.ok:
            reason = reply.error.message if reply.error else "no result"
            raise ProviderRefused(f"{type_}: the CA worker: {reason}")
        return reply.result
