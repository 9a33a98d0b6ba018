"""What the VA serves, held in memory and fed by events: each CA's certificate and
CertID hashes, its delegated responder, signed OCSP responses, and its latest CRLs.

The database is the durable projection (``store.py``); this is the hot copy that makes
serving a dictionary lookup. A response is signed when its certificate is created or
changes status, or at its first request, and again once half its validity has passed
(before ``nextUpdate``, as RFC 5019 §4 expects of pre-produced responses).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

from va_worker.ocsp import (
    CERT_ID_HASHES,
    CertState,
    IssuerKey,
    Request,
    ResponderKey,
    Signed,
    failure,
    issuer_keys,
    parse_request,
    sign,
)

__all__ = ["CRL", "Answer", "Lookup", "Served"]

# Looks a certificate's state up in the projection; None for a serial never seen.
Lookup = Callable[[str, int], Awaitable[CertState | None]]

# Distinct request encodings remembered (a parse saved per request): bounded, since
# anyone may send requests; past it, requests are parsed each time.
_PARSED_MAX = 100_000
# The projection's database may be away: a lookup that fails says tryLater.
_LOOKUP_FAILED = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Answer:
    """An OCSP response body and its caching headers."""

    der: bytes
    signed: Signed | None = None


@dataclass(frozen=True, slots=True)
class CRL:
    """A CRL as served: DER, and its number (only a higher number replaces it)."""

    number: int
    der: bytes
    this_update: datetime
    next_update: datetime
    entries: int


def _failure(status: x509_ocsp.OCSPResponseStatus) -> Answer:
    return Answer(failure(status))


class Served:
    """The VA's hot state; one per process, built in ``__main__``."""

    def __init__(
        self, *, validity: timedelta, lookup: Lookup, capacity: int = 500_000
    ) -> None:
        self._validity = validity
        self._capacity = capacity
        self._lookup = lookup
        self._issuers: dict[IssuerKey, str] = {}
        self._ca_certificates: dict[str, x509.Certificate] = {}
        self._responders: dict[str, ResponderKey] = {}
        self._responses: dict[tuple[str, int, str], tuple[Signed, CertState]] = {}
        self._parsed: dict[bytes, Request] = {}
        self._crls: dict[tuple[str, bool], CRL] = {}
        # Counts status changes and new responders: an answer whose lookup saw the
        # count move knows that what it read may be older than what was signed since.
        self._changes = 0

    # --- fed by events ---------------------------------------------------------------

    def add_ca(self, name: str, certificate: x509.Certificate) -> None:
        self._ca_certificates[name] = certificate
        for key in issuer_keys(certificate):
            self._issuers[key] = name

    def ca_certificate(self, name: str) -> x509.Certificate | None:
        return self._ca_certificates.get(name)

    def set_responder(self, ca: str, responder: ResponderKey) -> None:
        """A new responder certificate: later answers are signed with it."""
        self._responders[ca] = responder
        self._changes += 1
        for key in [k for k in self._responses if k[0] == ca]:
            del self._responses[key]

    def responder(self, ca: str) -> ResponderKey | None:
        return self._responders.get(ca)

    def update(self, ca: str, serial: int, state: CertState, now: datetime) -> None:
        """A certificate was created or changed status: sign its SHA-1 answer now."""
        self._changes += 1
        for algorithm in CERT_ID_HASHES:  # every CertID spelling answered before
            self._responses.pop((ca, serial, algorithm), None)
        responder = self._responders.get(ca)
        certificate = self._ca_certificates.get(ca)
        if responder is None or certificate is None:
            return  # answered on request once the responder is there
        issuer = next(k for k in issuer_keys(certificate) if k.algorithm == "sha1")
        request = Request(issuer, serial, None)
        self._store(ca, request, state, self._sign(request, state, responder, now))

    def set_crl(self, ca: str, *, delta: bool, crl: CRL) -> bool:
        """Keep a CRL unless a higher-numbered one is there; True when kept."""
        current = self._crls.get((ca, delta))
        if current is not None and current.number >= crl.number:
            return False
        self._crls[ca, delta] = crl
        return True

    def crl(self, ca: str, *, delta: bool) -> CRL | None:
        return self._crls.get((ca, delta))

    # --- serving ---------------------------------------------------------------------

    async def answer(self, der: bytes, now: datetime) -> Answer:
        """The response to an OCSP request (RFC 6960 §2.3 error statuses included)."""
        request = self._request(der)
        if request is None:
            return _failure(x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        ca = self._issuers.get(request.issuer)
        if ca is None:
            # RFC 6960 §2.3: not an issuer this responder answers for.
            return _failure(x509_ocsp.OCSPResponseStatus.UNAUTHORIZED)
        responder = self._responders.get(ca)
        if responder is None or responder.certificate.not_valid_after_utc <= now:
            # No responder certificate yet, or one that has ended (its CA expired or
            # was revoked, so no new one comes): nothing valid to sign with.
            return _failure(x509_ocsp.OCSPResponseStatus.TRY_LATER)
        key = (ca, request.serial, request.issuer.algorithm)
        cached = self._responses.get(key)
        if request.nonce is None and cached is not None:
            signed = cached[0]
            if now < signed.this_update + self._validity / 2:
                return Answer(signed.der, signed)
        keep = True
        if cached is not None:
            state: CertState | None = cached[1]
        else:
            changes = self._changes
            try:
                state = await self._lookup(ca, request.serial)
            except _LOOKUP_FAILED:
                return _failure(x509_ocsp.OCSPResponseStatus.TRY_LATER)
            if self._changes != changes:
                # A status changed while the projection was read (a revocation, say,
                # whose event came meanwhile): what was read may be older than what
                # ``update`` signed, and must not replace it, for half a validity.
                fresh = self._responses.get(key)
                state = state if fresh is None else fresh[1]
                keep = False
        signed = self._sign(request, state, responder, now, nonce=True)
        if keep and not signed.nonce and state is not None:
            self._store(ca, request, state, signed)
        return Answer(signed.der, signed)

    def _request(self, der: bytes) -> Request | None:
        """The decoded request (remembered when it has no nonce), None if malformed."""
        request = self._parsed.get(der)
        if request is None:
            try:
                request = parse_request(der)
            except ValueError:
                return None
            if request.nonce is None and len(self._parsed) < _PARSED_MAX:
                self._parsed[der] = request
        return request

    def _sign(
        self,
        request: Request,
        state: CertState | None,
        responder: ResponderKey,
        now: datetime,
        *,
        nonce: bool = False,
    ) -> Signed:
        return sign(
            request=request,
            state=state,
            responder=responder,
            now=now,
            validity=self._validity,
            nonce=nonce,
        )

    def _store(
        self, ca: str, request: Request, state: CertState, signed: Signed
    ) -> None:
        key = (ca, request.serial, request.issuer.algorithm)
        self._responses.pop(key, None)
        if len(self._responses) >= self._capacity:
            # The oldest signed goes first (dicts keep insertion order); it is signed
            # again at its next request.
            del self._responses[next(iter(self._responses))]
        self._responses[key] = (signed, state)
