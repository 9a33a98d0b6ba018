"""The VA's HTTP side: an aiohttp app factory serving OCSP (RFC 6960 §A.1, RFC 5019),
CRLs and CA certificates from memory. Every client mistake has its own answer; a
malformed OCSP request gets an OCSP ``malformedRequest``, never an HTTP 500.

Routes: ``GET /ocsp/<base64 request>``, ``POST /ocsp`` (``application/ocsp-request``),
``GET /crl/<ca>.crl`` and ``/crl/<ca>-delta.crl`` (DER ``application/pkix-crl``, RFC
5280 §4.2.1.13), ``GET /ca/<ca>.crt`` (DER ``application/pkix-cert``, the caIssuers
of RFC 5280 §4.2.2.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp as x509_ocsp

from va_worker.ocsp import cache_headers, decode_get, failure
from va_worker.served import Answer, Served

__all__ = ["create_app"]

_OCSP_RESPONSE = "application/ocsp-response"


@dataclass(frozen=True, slots=True)
class _Serving:
    served: Served
    clock: Callable[[], datetime]
    max_body: int


SERVING = web.AppKey("serving", _Serving)


def _ocsp(answer: Answer, now: datetime) -> web.Response:
    headers = {} if answer.signed is None else cache_headers(answer.signed, now)
    return web.Response(body=answer.der, content_type=_OCSP_RESPONSE, headers=headers)


def _malformed() -> web.Response:
    der = failure(x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    return web.Response(body=der, content_type=_OCSP_RESPONSE)


async def ocsp_get(request: web.Request) -> web.Response:
    # The raw path: base64's "/" and "+" may come percent-encoded or not (RFC 6960
    # §A.1 asks for URL encoding, which clients apply unevenly).
    tail = request.raw_path.split("?", 1)[0].removeprefix("/ocsp/")
    try:
        der = decode_get(tail)
    except ValueError:
        return _malformed()
    serving = request.app[SERVING]
    now = serving.clock()
    return _ocsp(await serving.served.answer(der, now), now)


async def ocsp_post(request: web.Request) -> web.Response:
    max_body = request.app[SERVING].max_body
    if request.content_length is not None and request.content_length > max_body:
        raise web.HTTPRequestEntityTooLarge(
            max_size=max_body, actual_size=request.content_length
        )
    # A chunked body is read up to client_max_size, past which aiohttp answers 413.
    der = await request.read()
    serving = request.app[SERVING]
    now = serving.clock()
    return _ocsp(await serving.served.answer(der, now), now)


async def crl(request: web.Request) -> web.Response:
    """``<ca>.crl`` or ``<ca>-delta.crl``; a CA whose own name ends in ``-delta`` wins."""
    served = request.app[SERVING].served
    name = request.match_info["name"]
    found = served.crl(name, delta=False)
    if found is None and name.endswith("-delta"):
        found = served.crl(name.removesuffix("-delta"), delta=True)
    if found is None:
        raise web.HTTPNotFound(text=f"no CRL named {name}.crl\n")
    now = request.app[SERVING].clock()
    max_age = max(0, int((found.next_update - now).total_seconds()))
    return web.Response(
        body=found.der,
        content_type="application/pkix-crl",
        headers={
            "Cache-Control": f"max-age={max_age}, public, no-transform",
            "Last-Modified": format_datetime(found.this_update, usegmt=True),
            "Expires": format_datetime(found.next_update, usegmt=True),
        },
    )


async def ca_certificate(request: web.Request) -> web.Response:
    certificate = request.app[SERVING].served.ca_certificate(request.match_info["name"])
    if certificate is None:
        raise web.HTTPNotFound(text="no such CA\n")
    return web.Response(
        body=certificate.public_bytes(serialization.Encoding.DER),
        content_type="application/pkix-cert",
    )


def create_app(
    served: Served, *, clock: Callable[[], datetime], max_body: int
) -> web.Application:
    # client_max_size: aiohttp refuses larger bodies with 413 before any handler.
    app = web.Application(client_max_size=max_body)
    app[SERVING] = _Serving(served, clock, max_body)
    app.router.add_get("/ocsp/{tail:.+}", ocsp_get)
    app.router.add_post("/ocsp", ocsp_post)
    app.router.add_post("/ocsp/", ocsp_post)
    app.router.add_get("/crl/{name}.crl", crl)
    app.router.add_get("/ca/{name}.crt", ca_certificate)
    return app
