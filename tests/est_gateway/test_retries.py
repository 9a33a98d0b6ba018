"""Retries recognized by meaning (issue 14, RFC 7030 §4.2.3): an EC CSR that the client
re-signs after a 202 gets the certificate of its first attempt, over real HTTPS.

Its own backends: the DMS worker is stopped so that the gateway answers 202, then
started again. The request id itself is tested without I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca_worker.__main__ import serve as serve_ca
from contracts.ca import CAView, CreateCA
from contracts.dms import CreateDMS, DMSView
from contracts.names import Topology
from est_gateway.retries import request_id
from runtime.bus import Bus
from tests.conftest import (
    AMQP_URL,
    Backends,
    ca_settings,
    gateway_running,
    isolated_backends,
    running,
    wait_until_answered,
    worker_running,
)
from tests.est_gateway.test_gateway import (
    Est,
    make_dms_identity,
    openssl_csr,
    single_certificate,
)
from tests.pki import call, unique

KEY = ec.generate_private_key(ec.SECP256R1())


def csr(
    common_name: str,
    *,
    key: ec.EllipticCurvePrivateKey = KEY,
    san: str | None = None,
    challenge: str | None = None,
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    if challenge is not None:
        builder = builder.add_attribute(
            x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode()
        )
    return builder.sign(key, hashes.SHA256())


def test_request_id_is_the_meaning_not_the_bytes() -> None:
    """Re-signing (ECDSA) or another challengePassword keeps the id; another key,
    subject, extension, operation, label or client changes it."""
    base = request_id("enroll", "ca", csr("dev-1"), [])
    again = csr("dev-1", challenge="first"), csr("dev-1", challenge="second")
    assert again[0].signature != again[1].signature
    assert {base} == {request_id("enroll", "ca", c, []) for c in again}
    different = [
        request_id("enroll", "ca", csr("dev-2"), []),
        request_id(
            "enroll",
            "ca",
            csr("dev-1", key=ec.generate_private_key(ec.SECP256R1())),
            [],
        ),
        request_id("enroll", "ca", csr("dev-1", san="dev-1.example"), []),
        request_id("reenroll", "ca", csr("dev-1"), []),
        request_id("enroll", "other", csr("dev-1"), []),
    ]
    assert len({base, *different}) == 1 + len(different)


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture
async def bus(own_backends: Backends, tmp_path: Path) -> AsyncIterator[Bus]:
    settings = ca_settings(own_backends, tmp_path / "keys", sweep_schedule="off")
    async with running(serve_ca, settings) as task:
        found = await Bus.connect(AMQP_URL, Topology(own_backends.prefix))
        try:
            await wait_until_answered(found, task)
            yield found
        finally:
            await found.close()


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_ec_csr_resigned_after_202_gets_the_same_certificate(
    own_backends: Backends, bus: Bus, tmp_path: Path
) -> None:
    """202 while the DMS worker is down; the client re-signs its EC CSR (other bytes)
    and retries once it is back: the same certificate, and only one was issued."""
    async with (
        worker_running("device_worker", "devices", own_backends),
        gateway_running(own_backends, tmp_path / "tls", est_wait_seconds=1) as gateway,
    ):
        reply = await call(bus, CreateCA(name=unique("retry-ca")))
        assert reply.ok, reply.error
        ca = CAView.model_validate(reply.result)
        dms_name = unique("retry-dms")
        identity, dms_csr = make_dms_identity(tmp_path, dms_name)
        async with worker_running("dms_worker", "dms", own_backends):
            reply = await call(
                bus, CreateDMS(name=dms_name, authorized_cas=[ca.name], csr_pem=dms_csr)
            )
            assert reply.ok, reply.error
        identity.cert.write_text(DMSView.model_validate(reply.result).certificate_pem)
        await gateway.knows(ca.name)
        est = Est(gateway)
        device_id = unique("retry-dev")
        first, key = openssl_csr(tmp_path, device_id)
        status, headers, _ = await est.enroll(ca.name, first, identity)
        assert (202, "5") == (status, headers.get("Retry-After"))

        async with worker_running("dms_worker", "dms", own_backends):
            resigned, _ = openssl_csr(tmp_path, device_id, key=key)
            assert first != resigned  # ECDSA: a new signature each time
            async with asyncio.timeout(30):
                while True:
                    status, _, payload = await est.enroll(ca.name, resigned, identity)
                    if status != 202:
                        break
            assert 200 == status, payload
            certificate = single_certificate(payload)
            pool = await own_backends.pool()
            try:
                serials = await pool.fetch(
                    "SELECT serial FROM ca.certificates WHERE device_id = $1",
                    device_id,
                )
            finally:
                await pool.close()
            assert [format(certificate.serial_number, "x")] == [
                row["serial"].lstrip("0") for row in serials
            ]
