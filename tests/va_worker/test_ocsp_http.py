"""OCSP over real HTTP, checked with ``openssl ocsp`` as relying parties use it: the
delegated responder chain, good / revoked with reason / unknown, nonces, and garbage."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from contracts.ca import RevocationReason, RevokeCertificate
from runtime.bus import Bus
from tests.pki import call
from tests.va_worker.conftest import (
    VA,
    ask,
    new_ca,
    new_leaf,
    ocsp_request,
    openssl,
    post_ocsp,
    wait_status,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED


async def test_good_then_revoked_with_reason_by_openssl(
    bus: Bus, va: VA, tmp_path: Path
) -> None:
    """openssl ocsp verifies the delegated responder's chain and reads good, then
    revoked with its reason once the certificate is revoked (nothing restarted)."""
    ca, ca_path = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, GOOD)

    args: list[str | Path] = [
        "ocsp",
        "-issuer",
        ca_path,
        "-cert",
        leaf.path,
        "-url",
        f"{va.url}/ocsp",
    ]
    code, out = await openssl(*args, "-CAfile", ca_path, "-resp_text")
    assert 0 == code, out
    assert "Response verify OK" in out
    assert f"{leaf.path}: good" in out
    # openssl sends a nonce by default and warns when the response lacks it.
    assert "WARNING: no nonce" not in out
    assert "OCSP Nonce" in out

    # Answered (and kept) for another CertID hash too, before the revocation.
    sha384 = ocsp_request(leaf.certificate, issuer, algorithm=hashes.SHA384())
    assert GOOD == (await ask(va.url, sha384)).certificate_status

    reply = await call(
        bus,
        RevokeCertificate(
            serial=leaf.view.serial, reason=RevocationReason.KEY_COMPROMISE
        ),
    )
    assert reply.ok, reply.error
    await wait_status(va.url, leaf.certificate, issuer, REVOKED)
    assert REVOKED == (await ask(va.url, sha384)).certificate_status
    code, out = await openssl(*args, "-CAfile", ca_path)
    assert 0 == code, out
    assert "Response verify OK" in out
    assert f"{leaf.path}: revoked" in out
    assert "Reason: keyCompromise" in out


async def test_unknown_serial_by_openssl(bus: Bus, va: VA, tmp_path: Path) -> None:
    """A serial the CA never issued is unknown (RFC 6960 §2.2), not an error."""
    ca, ca_path = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, GOOD)
    code, out = await openssl(
        "ocsp",
        "-issuer",
        ca_path,
        "-serial",
        "0x0123456789abcdef",
        "-url",
        f"{va.url}/ocsp",
        "-CAfile",
        ca_path,
    )
    assert 0 == code, out
    assert "Response verify OK" in out
    assert "0x0123456789abcdef: unknown" in out


async def test_responses_come_from_a_delegated_responder(
    bus: Bus, va: VA, tmp_path: Path
) -> None:
    """The signer is a short-lived certificate the CA issued with id-kp-OCSPSigning and
    id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2), not the CA key."""
    ca, _ = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    response = await wait_status(va.url, leaf.certificate, issuer, GOOD)

    [responder] = response.certificates
    assert issuer.subject == responder.issuer
    responder.verify_directly_issued_by(issuer)
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [ExtendedKeyUsageOID.OCSP_SIGNING] == list(eku)
    assert responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    lifetime = responder.not_valid_after_utc - responder.not_valid_before_utc
    assert lifetime.days <= va.settings.va_responder_validity_hours / 24
    assert responder.public_key() != issuer.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(responder.public_key())
    assert ski.digest == response.responder_key_hash


async def test_nonce_is_echoed_in_a_fresh_response(
    bus: Bus, va: VA, tmp_path: Path
) -> None:
    """RFC 8954: a request with a nonce gets it back, in a response not to be cached;
    without one, the pre-signed response comes with RFC 5019 §6.2 caching headers."""
    ca, _ = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, GOOD)

    nonce = os.urandom(32)
    http, der = await post_ocsp(
        va.url, ocsp_request(leaf.certificate, issuer, nonce=nonce)
    )
    response = ocsp.load_der_ocsp_response(der)
    assert (
        nonce == response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    )
    assert "no-store" == http.headers["Cache-Control"]

    http, der = await post_ocsp(va.url, ocsp_request(leaf.certificate, issuer))
    plain = ocsp.load_der_ocsp_response(der)
    assert not [e for e in plain.extensions if isinstance(e.value, x509.OCSPNonce)]
    assert http.headers["Cache-Control"].startswith("max-age=")
    assert all(h in http.headers for h in ("Expires", "Last-Modified", "ETag"))
    assert plain.next_update_utc is not None
    assert plain.next_update_utc > plain.this_update_utc


async def test_get_accepts_every_base64_spelling(
    bus: Bus, va: VA, tmp_path: Path
) -> None:
    """GET /ocsp/<request> (RFC 6960 §A.1) in standard or URL-safe base64, padded or
    not, percent-encoded or not, and with a SHA-256 CertID."""
    ca, _ = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, GOOD)
    for algorithm in (hashes.SHA1(), hashes.SHA256()):  # noqa: S303 - RFC 5019 §2.1.1
        der = ocsp_request(leaf.certificate, issuer, algorithm=algorithm)
        standard = base64.b64encode(der).decode()
        urlsafe = base64.urlsafe_b64encode(der).decode()
        spellings = [standard, quote(standard, safe=""), urlsafe, urlsafe.rstrip("=")]
        async with aiohttp.ClientSession() as session:
            for spelling in spellings:
                url = f"{va.url}/ocsp/{spelling}"
                async with session.get(url) as http:
                    assert 200 == http.status, spelling
                    response = ocsp.load_der_ocsp_response(await http.read())
                assert ocsp.OCSPResponseStatus.SUCCESSFUL == response.response_status
                assert GOOD == response.certificate_status
                assert leaf.certificate.serial_number == response.serial_number
                assert algorithm.name == response.hash_algorithm.name


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 64):
        yield body[start : start + 64]


async def test_garbage_gets_an_ocsp_error_never_a_500(
    bus: Bus, va: VA, tmp_path: Path
) -> None:
    """malformedRequest for what is not a request, unauthorized for an issuer the VA
    does not serve, 413 for a huge body; the responder answers the next one."""
    ca, _ = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, GOOD)
    real = ocsp_request(leaf.certificate, issuer)
    malformed = [b"hello", b"\x30\x00", real[: len(real) // 2], b""]
    for body in malformed:
        response = await ask(va.url, body)
        assert ocsp.OCSPResponseStatus.MALFORMED_REQUEST == response.response_status
    async with aiohttp.ClientSession() as session:
        for tail in ("%%%", "not*base64", "aGVsbG8="):
            async with session.get(f"{va.url}/ocsp/{tail}") as http:
                assert 200 == http.status
                parsed = ocsp.load_der_ocsp_response(await http.read())
                assert (
                    ocsp.OCSPResponseStatus.MALFORMED_REQUEST == parsed.response_status
                )
        async with session.post(
            f"{va.url}/ocsp", data=b"\x30" * (va.settings.va_max_request_bytes + 1)
        ) as http:
            assert 413 == http.status
        # Chunked (no Content-Length): read up to the limit, then 413.
        big = b"\x30" * (va.settings.va_max_request_bytes + 1)
        async with session.post(f"{va.url}/ocsp", data=_chunks(big)) as http:
            assert 413 == http.status
        async with session.post(f"{va.url}/ocsp", data=_chunks(real)) as http:
            assert 200 == http.status
            chunked = ocsp.load_der_ocsp_response(await http.read())
            assert GOOD == chunked.certificate_status

    stranger, _ = await new_ca(bus, tmp_path)
    other = x509.load_pem_x509_certificate(stranger.certificate_pem.encode())
    # Same serial, an issuer (by name and key hash) the responder does not serve.
    forged = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            issuer_name_hash=b"\x01" * 20,
            issuer_key_hash=b"\x02" * 20,
            serial_number=leaf.certificate.serial_number,
            algorithm=hashes.SHA1(),  # noqa: S303 - RFC 5019 §2.1.1
        )
        .build()
    )
    from cryptography.hazmat.primitives import serialization

    response = await ask(va.url, forged.public_bytes(serialization.Encoding.DER))
    assert ocsp.OCSPResponseStatus.UNAUTHORIZED == response.response_status
    assert other.serial_number  # the other CA exists; only the unknown one is refused

    response = await ask(va.url, real)
    assert GOOD == response.certificate_status
