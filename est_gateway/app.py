"""The EST application (RFC 7030, as updated by RFC 8951): parse, delegate over the bus,
render. No PKI decisions here: the DMS worker authorizes and the CA worker signs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contracts.ca import CertificateView
from contracts.dms import AuthorizeEnrollment, EnrollmentKind, EnrollmentRequest
from contracts.envelope import CloudEvent, new_message
from contracts.errors import ErrorCode
from contracts.names import Source
from est_gateway import keygen as keygen_rules
from est_gateway import pop, proxies, retries, wire
from est_gateway.errors import (
    EstError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SlowRequest,
    Unauthorized,
    Unavailable,
)
from est_gateway.keygen import KeyGenerator
from est_gateway.metrics import GatewayMetrics, outcome
from est_gateway.pop import PopPolicy
from est_gateway.settings import Settings
from est_gateway.trust import TrustStore
from runtime.bus import Bus, RequestTimeout
from runtime.faults import is_transient

__all__ = ["DEPS", "GatewayDeps", "create_app"]

log = structlog.get_logger("est_gateway")

SOURCE = Source.EST
# RFC 9110 §11.6.1 needs a challenge; EST's credential here is the TLS client certificate.
_CHALLENGE = 'Transport mode="tls-client-certificate"'
_STATUS = {
    ErrorCode.INVALID: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.UNAVAILABLE: 503,
}
_SERVERKEYGEN_KEYS = 10_000


@dataclass(slots=True)
class GatewayDeps:
    """What the handlers use; opened and closed by ``__main__``."""

    settings: Settings
    bus: Bus
    trust: TrustStore
    # serverkeygen keys by request id, so a retry after 202 gets the key its certificate
    # was issued for. Bounded; in memory only (the key must never be stored elsewhere).
    generated_keys: OrderedDict[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = (
        field(default_factory=OrderedDict)
    )
    metrics: GatewayMetrics | None = None
    # Made from settings: serverkeygen's threads, a few at a time.
    keygen: KeyGenerator = field(init=False)
    # Labels whose DMSs require proof-of-possession linking, fed by DMS events.
    pop: PopPolicy = field(default_factory=PopPolicy)

    def __post_init__(self) -> None:
        self.keygen = KeyGenerator(self.settings.est_keygen_concurrency)


DEPS = web.AppKey("deps", GatewayDeps)


class Accepted(Exception):  # noqa: N818 - a response, not a failure
    """The pipeline has not answered yet: 202 with Retry-After (RFC 7030 §4.2.3)."""


def _label(request: web.Request) -> str:
    deps = request.app[DEPS]
    label, _ = wire.parse_est_path(request.path, deps.settings.est_default_label)
    if deps.trust.get(label) is None:
        raise NotFound(f"no CA is labelled {label!r}")
    return label


def _peer(request: web.Request) -> x509.Certificate | None:
    """The certificate the TLS client presented, if any."""
    ssl_object = (
        request.transport.get_extra_info("ssl_object") if request.transport else None
    )
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return x509.load_der_x509_certificate(der) if der else None


def _from_proxy(request: web.Request, peer: x509.Certificate | None) -> bool:
    """A client-certificate header from a proxy identified by its own certificate."""
    deps = request.app[DEPS]
    settings = deps.settings
    return settings.est_client_cert_header in request.headers and (
        proxies.is_trusted_proxy(
            peer,
            request.remote,
            fingerprints=settings.est_trusted_proxy_certs,
            proxy_ca=settings.est_trusted_proxy_ca,
            addresses=settings.est_trusted_proxies,
            trust=deps.trust,
        )
    )


def _pop_linked(request: web.Request, csr: x509.CertificateSigningRequest) -> bool:
    """RFC 7030 §3.5 on this request's own TLS connection (est_gateway.pop); behind a
    trusted proxy the connection is the proxy's, so nothing is linked."""
    ssl_object = (
        request.transport.get_extra_info("ssl_object") if request.transport else None
    )
    header = request.app[DEPS].settings.est_client_cert_header
    # The peer certificate is parsed again only when a proxy may be involved.
    proxied = header in request.headers and _from_proxy(request, _peer(request))
    return pop.linked(csr, ssl_object, proxied=proxied)


def _client_chain(request: web.Request) -> list[x509.Certificate]:
    """The client certificate: from the TLS session, or from a trusted proxy's header
    (est_gateway.proxies); a CA revoked or expired since is no longer trusted."""
    deps = request.app[DEPS]
    peer = _peer(request)
    if _from_proxy(request, peer):
        chain = wire.client_cert_from_header(
            request.headers[deps.settings.est_client_cert_header]
        )
    else:
        chain = [peer] if peer is not None else []
    if chain and (refusal := deps.trust.refusal(chain[0], datetime.now(UTC))):
        raise Forbidden(refusal)
    return chain


async def _body(request: web.Request) -> bytes:
    limit = request.app[DEPS].settings.est_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        # Refused before reading: the body is never buffered (RFC 9110 §15.5.14).
        raise PayloadTooLarge(
            f"the body is {request.content_length} bytes; the limit is {limit}"
        )
    timeout = request.app[DEPS].settings.est_read_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes") from None
    except TimeoutError:
        raise SlowRequest(f"the body did not arrive within {timeout:g} s") from None


async def _server_key_and_csr(
    deps: GatewayDeps,
    enrollment: EnrollmentRequest,
    csr: x509.CertificateSigningRequest,
) -> tuple[
    ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, x509.CertificateSigningRequest
]:
    """RFC 7030 §4.4.1: the server makes the key; the client's CSR names the subject.

    A key type outside the allowed set is refused first (400), then the DMS worker
    authorizes the request, and only then is a key generated (in a thread, a few at a
    time): an unauthorized client or an absurd key size costs no key generation.
    """
    keygen = deps.keygen
    key_type = keygen_rules.key_type_of(csr)
    key = deps.generated_keys.get(enrollment.request_id)
    if key is None:
        await _authorize_first(deps, enrollment)
        key = await keygen.generate(key_type)
        deps.generated_keys[enrollment.request_id] = key
        while len(deps.generated_keys) > _SERVERKEYGEN_KEYS:
            deps.generated_keys.popitem(last=False)
    return key, await keygen.csr_for(key, csr)


async def _ask(deps: GatewayDeps, message: CloudEvent) -> Any:
    """Send a request down the pipeline; its result, or the refusal as an EstError:
    no answer within EST_WAIT_SECONDS is 202, a bus failure 503 (RFC 7030 §4.2.3)."""
    try:
        reply = await deps.bus.request(message, timeout=deps.settings.est_wait_seconds)
    except RequestTimeout:
        raise Accepted from None
    except Exception as exc:
        if is_transient(exc):
            raise Unavailable(
                "the enrollment pipeline is unreachable; retry the same request",
                deps.settings.est_retry_after_seconds,
            ) from exc
        raise
    if reply.error is not None:
        status = _STATUS[reply.error.code]
        if status == 401:
            raise Unauthorized(reply.error.message, _CHALLENGE)
        if status == 403:
            raise Forbidden(reply.error.message)
        raise EstError(status, reply.error.message)
    return reply.result


async def _authorize_first(deps: GatewayDeps, enrollment: EnrollmentRequest) -> None:
    """``enrollment.authorize``: refused as the enrollment itself would be."""
    request = AuthorizeEnrollment.model_validate(enrollment.model_dump())
    message = new_message(
        source=SOURCE,
        data=request,
        now=datetime.now(UTC),
        subject=f"ca/{enrollment.label}",
        correlation_id=str(uuid.uuid4()),
    )
    await _ask(deps, message)


async def _enroll(request: web.Request, kind: EnrollmentKind) -> web.Response:
    deps = request.app[DEPS]
    label = _label(request)
    csr = wire.decode_pkcs10_body(
        await _body(request), request.headers.get("Content-Type")
    )
    chain = _client_chain(request)
    if not chain:
        raise Unauthorized("a TLS client certificate is required to enroll", _CHALLENGE)
    request_id = retries.request_id(kind.value, label, csr, chain)
    structlog.contextvars.bind_contextvars(label=label, request_id=request_id[:16])
    pop_linked = _pop_linked(request, csr)
    key = None
    if kind is EnrollmentKind.SERVERKEYGEN:
        asked = EnrollmentRequest(
            kind=kind,
            label=label,
            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
            client_certificate_chain_pem=[
                c.public_bytes(serialization.Encoding.PEM).decode() for c in chain
            ],
            request_id=request_id,
            pop_linked=pop_linked,
        )
        key, csr = await _server_key_and_csr(deps, asked, csr)
    enrollment = EnrollmentRequest(
        kind=kind,
        label=label,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
        client_certificate_chain_pem=[
            c.public_bytes(serialization.Encoding.PEM).decode() for c in chain
        ],
        request_id=request_id,
        pop_linked=pop_linked,
    )
    message = new_message(
        source=SOURCE,
        data=enrollment,
        now=datetime.now(UTC),
        subject=f"ca/{label}",
        correlation_id=str(uuid.uuid4()),
    )
    issued = CertificateView.model_validate(await _ask(deps, message))
    structlog.contextvars.bind_contextvars(
        serial=issued.serial, device=issued.device_id
    )
    certificate = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    _check_issued_key(certificate, csr)
    if key is not None:
        deps.generated_keys.pop(request_id, None)
        content_type, body = wire.encode_serverkeygen(key, certificate)
        return web.Response(body=body, headers={"Content-Type": content_type})
    return _certificates([certificate], request)


def _check_issued_key(
    certificate: x509.Certificate, csr: x509.CertificateSigningRequest
) -> None:
    """The certificate the pipeline returns must carry the CSR's key: a client given
    another key's certificate would present an identity it cannot prove."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    issued = certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
    if issued != csr.public_key().public_bytes(serialization.Encoding.DER, spki):
        log.error("issued_key_mismatch", serial=format(certificate.serial_number, "x"))
        raise EstError(
            502, "the issued certificate does not carry the CSR's key; it was withheld"
        )


def _certificates(certs: list[x509.Certificate], request: web.Request) -> web.Response:
    if wire.negotiate(request.headers.get("Accept")) == "pem":
        return web.Response(
            body=wire.encode_pem_chain(certs), headers={"Content-Type": wire.PEM_FILE}
        )
    # RFC 7030 §4.1.3 and RFC 8951 §3: base64 body; clients in the field need these
    # exact header values, and a Content-Length (aiohttp sets it for a bytes body).
    return web.Response(
        body=wire.encode_certs_only(certs),
        headers={
            "Content-Type": wire.CERTS_ONLY,
            wire.CONTENT_TRANSFER_ENCODING: wire.BASE64,
        },
    )


async def cacerts(request: web.Request) -> web.Response:
    """RFC 7030 §4.1: the CA's chain, including the self-signed root."""
    label = _label(request)
    return _certificates(request.app[DEPS].trust.chain(label), request)


async def csrattrs(request: web.Request) -> web.Response:
    """RFC 7030 §4.5: what the server wants in a CSR; 204 when nothing."""
    _label(request)
    deps = request.app[DEPS]
    oids = [x509.ObjectIdentifier(o) for o in deps.settings.est_csr_attributes]
    # RFC 7030 §3.5: ask for linking where a DMS requires it.
    if deps.pop.required_for(_label(request)) and pop.CHALLENGE_PASSWORD not in oids:
        oids.append(pop.CHALLENGE_PASSWORD)
    body = wire.encode_csrattrs(oids)
    if body is None:
        return web.Response(status=204)
    return web.Response(
        body=body,
        headers={
            "Content-Type": wire.CSRATTRS,
            wire.CONTENT_TRANSFER_ENCODING: wire.BASE64,
        },
    )


async def simpleenroll(request: web.Request) -> web.Response:
    return await _enroll(request, EnrollmentKind.ENROLL)


async def simplereenroll(request: web.Request) -> web.Response:
    return await _enroll(request, EnrollmentKind.REENROLL)


async def serverkeygen(request: web.Request) -> web.Response:
    return await _enroll(request, EnrollmentKind.SERVERKEYGEN)


async def unknown(request: web.Request) -> web.Response:
    wire.parse_est_path(request.path, request.app[DEPS].settings.est_default_label)
    raise NotFound(f"{request.method} is not an EST operation on {request.path}")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map EstError to its status with a one-line text reason; one log line per request."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(method=request.method, path=request.path)
    started = time.perf_counter()
    reason = ""
    try:
        response = await handler(request)
    except Accepted:
        retry = request.app[DEPS].settings.est_retry_after_seconds
        response = web.Response(
            status=202,
            text="the request is being processed; retry the same request\n",
            headers={"Retry-After": str(retry)},
        )
    except EstError as exc:
        response = _failure_response(exc)
        cause = exc.__cause__
        reason = exc.reason if cause is None else f"{exc.reason} ({cause!r})"
    except web.HTTPException as exc:
        response = web.Response(status=exc.status, text=(exc.text or exc.reason) + "\n")
    except Exception as exc:
        if not is_transient(exc):
            raise  # a bug: aiohttp answers 500 and logs the traceback
        # The broker or a connection went away mid-request: the client may retry.
        response = _failure_response(
            Unavailable(
                "the enrollment pipeline is unreachable; retry the same request",
                request.app[DEPS].settings.est_retry_after_seconds,
            )
        )
        reason = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    label, operation = _where(request)
    metrics = request.app[DEPS].metrics
    if metrics is not None:
        metrics.observe(operation, response.status, seconds)
    # The audit line (README "Audit"): who asked what, and what they were told.
    log.info(
        "est_request",
        status=response.status,
        outcome=outcome(response.status),
        client=request.remote,
        label=label,
        operation=operation,
        **_presented(request),
        ms=round(seconds * 1000, 2),
        **({"reason": reason} if reason else {}),
    )
    return response


def _where(request: web.Request) -> tuple[str, str]:
    """The label and operation a request named, or "-" for a path that is not EST."""
    try:
        label, operation = wire.parse_est_path(
            request.path, request.app[DEPS].settings.est_default_label
        )
    except EstError:
        return "-", "other"
    return label, operation.value


def _presented(request: web.Request) -> dict[str, str]:
    """The presented client certificate's subject and SHA-256 fingerprint, if any."""
    try:
        chain = _client_chain(request)
    except (EstError, ValueError):
        return {"client_certificate": "unreadable"}
    if not chain:
        return {}
    return {
        "client_subject": chain[0].subject.rfc4514_string(),
        "client_sha256": chain[0].fingerprint(hashes.SHA256()).hex(),
    }


def _failure_response(exc: EstError) -> web.Response:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = exc.www_authenticate
    if isinstance(exc, Unavailable) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return web.Response(status=exc.status, text=exc.reason + "\n", headers=headers)


def create_app(deps: GatewayDeps) -> web.Application:
    """The aiohttp application; resources are owned by the caller (``__main__``)."""
    app = web.Application(
        middlewares=[errors], client_max_size=deps.settings.est_max_body_bytes
    )
    app[DEPS] = deps
    for prefix in ("/.well-known/est/{label}", "/.well-known/est"):
        app.router.add_get(f"{prefix}/cacerts", cacerts)
        app.router.add_get(f"{prefix}/csrattrs", csrattrs)
        app.router.add_post(f"{prefix}/simpleenroll", simpleenroll)
        app.router.add_post(f"{prefix}/simplereenroll", simplereenroll)
        app.router.add_post(f"{prefix}/serverkeygen", serverkeygen)
    app.router.add_route("*", "/{tail:.*}", unknown)
    return app
