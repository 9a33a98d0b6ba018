"""The DMS worker's side of the CA worker, over request/reply: CA certificates by name
(cached, since a name's certificate never changes) and signing DMS certificates.

It never signs anything itself (DESIGN §1); the CA worker's refusals come back as the
same failure codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509

from contracts.ca import CAView, CertificateView, GetCA, SignCertificate
from contracts.envelope import CloudEvent, new_message
from contracts.errors import ErrorCode, Reply
from contracts.message import Message
from contracts.names import Source
from contracts.profiles import GetProfile
from dms_worker.errors import CANotFound, CAWorkerUnavailable
from runtime.bus import BusUnavailable, RequestTimeout
from runtime.errors import (
    Conflict,
    Failure,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    Unavailable,
)

__all__ = ["CAClient", "KnownCA", "Requester"]

SOURCE = Source.DMS

# A refusal of the CA worker, raised here with the same code (house rule 24: one table).
_FAILURES: Mapping[ErrorCode, type[Failure]] = {
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.INVALID: Invalid,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.FORBIDDEN: Forbidden,
    # The CA worker answered that it cannot (a CA whose key is missing): a deliberate
    # answer, not a lost one, so not retried (a lost one is CAWorkerUnavailable).
    ErrorCode.UNAVAILABLE: Unavailable,
}


class Requester(Protocol):
    """What this client needs of ``runtime.bus.Bus``."""

    async def request(self, command: CloudEvent, *, timeout: float) -> Reply: ...  # noqa: ASYNC109 - Bus.request's signature


@dataclass(frozen=True, slots=True)
class KnownCA:
    """The parts of a CA that never change for its name."""

    name: str
    internal: bool
    certificate: x509.Certificate


class CAClient:
    """Requests to the CA worker; a lost or late answer is ``CAWorkerUnavailable``."""

    def __init__(self, bus: Requester, *, timeout: float) -> None:
        self._bus = bus
        self._timeout = timeout
        # Only CAs that exist are remembered, so this holds at most one entry per CA.
        self._known: dict[str, KnownCA] = {}

    async def get(self, name: str) -> KnownCA:
        """The CA named ``name``, or ``CANotFound``."""
        if (known := self._known.get(name)) is not None:
            return known
        reply = await self._request(GetCA(name=name), self._timeout)
        if not reply.ok and reply.error and reply.error.code is ErrorCode.NOT_FOUND:
            raise CANotFound(name)
        view = CAView.model_validate(_result(reply))
        known = KnownCA(
            view.name,
            view.internal,
            x509.load_pem_x509_certificate(view.certificate_pem.encode()),
        )
        self._known[name] = known
        return known

    async def wait_for(self, name: str, *, deadline: float) -> KnownCA:
        """``get`` retried until the CA worker shows the CA (it may be starting too)."""
        try:
            async with asyncio.timeout(deadline):
                while True:
                    try:
                        return await self.get(name)
                    except (CAWorkerUnavailable, NotFound):
                        await asyncio.sleep(0.5)
        except TimeoutError:
            raise BusUnavailable(
                f"the CA worker did not show CA {name!r} within {deadline:g} s"
            ) from None

    async def sign(
        self, *, ca: str, csr_pem: str, validity_days: int
    ) -> CertificateView:
        """Have CA ``ca`` sign a PKCS#10 request (RFC 2986)."""
        # DMS_CERTIFICATE_VALIDITY_DAYS, cut to what the CA allows (the view says).
        request = SignCertificate(
            ca=ca, csr_pem=csr_pem, validity_days=validity_days, cap_validity=True
        )
        reply = await self._request(request, self._timeout)
        return CertificateView.model_validate(_result(reply))

    async def check_profile(self, name: str) -> None:
        """Refuse (not_found) a profile the CA worker does not know."""
        reply = await self._request(GetProfile(name=name), self._timeout)
        _result(reply)

    async def _request(self, request: Message, timeout: float) -> Reply:  # noqa: ASYNC109 - passed on to Bus.request
        message = new_message(source=SOURCE, data=request, now=datetime.now(UTC))
        try:
            return await self._bus.request(message, timeout=timeout)
        except (BusUnavailable, RequestTimeout) as exc:
            raise CAWorkerUnavailable(f"CA worker: {exc}") from None


def _result(reply: Reply) -> Any:
    if reply.ok:
        return reply.result
    if reply.error is None:
        raise CAWorkerUnavailable("CA worker: a refusal without a reason")
    raise _FAILURES[reply.error.code](reply.error.message)
