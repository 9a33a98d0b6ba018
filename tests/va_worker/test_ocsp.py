"""Pure OCSP rules without I/O: request decoding, status ranks, signed answers and
their caching headers (RFC 6960, RFC 5019, RFC 8954)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from contracts.ca import CertificateStatus, RevocationReason
from va_worker.ocsp import (
    CertState,
    ResponderKey,
    cache_headers,
    decode_get,
    issuer_keys,
    parse_request,
    rank,
    sign,
)
from va_worker.served import Served

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (name, key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def pki() -> tuple[x509.Certificate, x509.Certificate, ResponderKey]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("ca", ca_key)
    leaf = _certificate("leaf", ec.generate_private_key(ec.SECP256R1()), ("ca", ca_key))
    responder_key = ec.generate_private_key(ec.SECP256R1())
    responder = _certificate("responder", responder_key, ("ca", ca_key))
    return ca, leaf, ResponderKey(responder, responder_key)


def _request(
    leaf: x509.Certificate, ca: x509.Certificate, nonce: bytes | None = None
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, hashes.SHA1())  # noqa: S303 - RFC 5019 §2.1.1
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_statuses_only_move_forward() -> None:
    """REVOKED outranks everything and EXPIRED outranks the live ones."""
    order = [
        CertificateStatus.ACTIVE,
        CertificateStatus.ABOUT_TO_EXPIRE,
        CertificateStatus.EXPIRED,
        CertificateStatus.REVOKED,
    ]
    assert order == sorted(CertificateStatus, key=rank)


@pytest.mark.parametrize(
    "spell",
    [
        lambda d: base64.b64encode(d).decode(),
        lambda d: base64.urlsafe_b64encode(d).decode().rstrip("="),
        lambda d: base64.b64encode(d).decode().replace("/", "%2F").replace("+", "%2B"),
        lambda d: " " + base64.b64encode(d).decode() + "\n",
    ],
    ids=["standard", "urlsafe-unpadded", "percent-encoded", "whitespace"],
)
def test_get_paths_decode(spell) -> None:
    der = bytes(range(256))
    assert der == decode_get(spell(der))


@pytest.mark.parametrize("tail", ["%%", "a*b", "é"])
def test_get_paths_that_are_not_base64_are_refused(tail: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        decode_get(tail)


@pytest.mark.parametrize("body", [b"", b"x", b"\x30\x00", b"\x30\x03\x02\x01\x01"])
def test_garbage_is_not_a_request(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any reason: malformedRequest
        parse_request(body)


def test_an_oversized_nonce_is_not_echoed(pki) -> None:
    """RFC 8954 §2.1: nonces of up to 32 octets are echoed; a longer one is ignored."""
    ca, leaf, _ = pki
    assert b"n" * 32 == parse_request(_request(leaf, ca, b"n" * 32)).nonce
    assert parse_request(_request(leaf, ca, b"n" * 33)).nonce is None


def test_a_request_names_its_issuer_as_issuer_keys_says(pki) -> None:
    ca, leaf, _ = pki
    request = parse_request(_request(leaf, ca, b"n" * 16))
    assert request.issuer in issuer_keys(ca)
    assert leaf.serial_number == request.serial
    assert b"n" * 16 == request.nonce


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (CertState(CertificateStatus.ACTIVE), ocsp.OCSPCertStatus.GOOD),
        (CertState(CertificateStatus.EXPIRED), ocsp.OCSPCertStatus.GOOD),
        (
            CertState(CertificateStatus.REVOKED, NOW, RevocationReason.SUPERSEDED),
            ocsp.OCSPCertStatus.REVOKED,
        ),
        (None, ocsp.OCSPCertStatus.UNKNOWN),
    ],
)
def test_signed_answers(pki, state, status) -> None:
    ca, leaf, responder = pki
    request = parse_request(_request(leaf, ca, b"nonce-1234567890"))
    for nonce in (False, True):
        signed = sign(
            request=request,
            state=state,
            responder=responder,
            now=NOW,
            validity=timedelta(hours=1),
            nonce=nonce,
        )
        response = ocsp.load_der_ocsp_response(signed.der)
        assert status == response.certificate_status
        assert NOW + timedelta(hours=1) == response.next_update_utc
        responder.certificate.public_key().verify(
            response.signature,
            response.tbs_response_bytes,
            ec.ECDSA(hashes.SHA256()),
        )
        echoed = [
            e.value for e in response.extensions if isinstance(e.value, x509.OCSPNonce)
        ]
        assert ([x509.OCSPNonce(b"nonce-1234567890")] if nonce else []) == echoed
        if status is ocsp.OCSPCertStatus.REVOKED:
            assert x509.ReasonFlags.superseded == response.revocation_reason
            assert NOW == response.revocation_time_utc


def test_unspecified_reason_is_left_out(pki) -> None:
    """RFC 5280 §5.3.1: the reason code unspecified SHOULD be absent."""
    ca, leaf, responder = pki
    signed = sign(
        request=parse_request(_request(leaf, ca)),
        state=CertState(CertificateStatus.REVOKED, NOW, RevocationReason.UNSPECIFIED),
        responder=responder,
        now=NOW,
        validity=timedelta(hours=1),
        nonce=False,
    )
    assert ocsp.load_der_ocsp_response(signed.der).revocation_reason is None


def test_caching_headers(pki) -> None:
    """RFC 5019 §6.2: max-age until nextUpdate, Last-Modified, Expires, ETag; a nonce
    response is not stored."""
    ca, leaf, responder = pki
    request = parse_request(_request(leaf, ca, b"nonce-1234567890"))
    common = {"request": request, "state": None, "responder": responder, "now": NOW}
    plain = sign(**common, validity=timedelta(hours=1), nonce=False)
    assert {
        "Cache-Control": "max-age=1800, public, no-transform, must-revalidate",
        "Last-Modified": "Sun, 06 Dec 2026 12:00:00 GMT",
        "Expires": "Sun, 06 Dec 2026 13:00:00 GMT",
        "ETag": plain.etag,
    } == cache_headers(plain, NOW + timedelta(minutes=30))
    fresh = sign(**common, validity=timedelta(hours=1), nonce=True)
    assert {"Cache-Control": "no-store"} == cache_headers(fresh, NOW)


async def test_served_answers_from_memory_and_signs_again_after_half_validity(
    pki,
) -> None:
    """A status update pre-signs; serving is then a lookup until half the validity
    has passed; unknown issuers and missing responders get their OCSP errors."""
    ca, leaf, responder = pki
    lookups: list[int] = []

    async def lookup(_ca: str, serial: int) -> CertState | None:
        lookups.append(serial)
        return None

    served = Served(validity=timedelta(hours=1), lookup=lookup)
    body = _request(leaf, ca)
    unauthorized = await served.answer(body, NOW)
    assert (
        ocsp.OCSPResponseStatus.UNAUTHORIZED
        == ocsp.load_der_ocsp_response(unauthorized.der).response_status
    )
    served.add_ca("ca", ca)
    later = await served.answer(body, NOW)
    assert (
        ocsp.OCSPResponseStatus.TRY_LATER
        == ocsp.load_der_ocsp_response(later.der).response_status
    )
    served.set_responder("ca", responder)
    served.update("ca", leaf.serial_number, CertState(CertificateStatus.ACTIVE), NOW)
    first = await served.answer(body, NOW + timedelta(minutes=29))
    assert first.signed is not None
    assert NOW == first.signed.this_update
    again = await served.answer(body, NOW + timedelta(minutes=31))
    assert again.signed is not None
    assert NOW + timedelta(minutes=31) == again.signed.this_update
    assert [] == lookups
    ended = NOW + timedelta(days=31)  # the responder certificate ends after 30 days
    late = await served.answer(body, ended)
    assert (
        ocsp.OCSPResponseStatus.TRY_LATER
        == ocsp.load_der_ocsp_response(late.der).response_status
    )
    unknown = _request(
        _certificate(
            "x", ec.generate_private_key(ec.SECP256R1()), ("ca", responder.key)
        ),
        ca,
    )
    answer = await served.answer(unknown, NOW)
    assert (
        ocsp.OCSPCertStatus.UNKNOWN
        == ocsp.load_der_ocsp_response(answer.der).certificate_status
    )
    assert 1 == len(lookups)


async def test_a_status_change_during_a_lookup_is_not_overwritten(pki) -> None:
    """An answer that read the projection while a revocation came in must not cache
    what it read over the revocation: the next answer says revoked, at once."""
    ca, leaf, responder = pki
    reading, release = asyncio.Event(), asyncio.Event()

    async def lookup(_ca: str, _serial: int) -> CertState | None:
        reading.set()
        await release.wait()
        return CertState(CertificateStatus.ACTIVE)  # read before the revocation

    served = Served(validity=timedelta(hours=1), lookup=lookup)
    served.add_ca("ca", ca)
    served.set_responder("ca", responder)
    body = _request(leaf, ca)
    first = asyncio.create_task(served.answer(body, NOW))
    await reading.wait()
    revoked = CertState(CertificateStatus.REVOKED, NOW, RevocationReason.KEY_COMPROMISE)
    served.update("ca", leaf.serial_number, revoked, NOW)
    release.set()
    answered = ocsp.load_der_ocsp_response((await first).der)
    assert ocsp.OCSPCertStatus.REVOKED == answered.certificate_status
    after = ocsp.load_der_ocsp_response((await served.answer(body, NOW)).der)
    assert ocsp.OCSPCertStatus.REVOKED == after.certificate_status
