"""The validation authority in-process beside the session's CA worker, over real HTTP,
with helpers that ask it the way relying parties do (``openssl`` and an OCSP client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca_worker.settings import Settings as CaSettings
from contracts.ca import CAView, CertificateView, CreateCA, SignCertificate
from contracts.names import Topology
from runtime.bus import Bus
from tests.conftest import Backends, running, wait_until_queue, worker_settings
from tests.pki import call, csr_pem, make_csr, unique
from va_worker.__main__ import serve
from va_worker.settings import Settings


@dataclass(frozen=True)
class VA:
    url: str
    settings: Settings


@pytest.fixture(scope="session")
async def va(
    backends: Backends,
    ca_service: CaSettings,
    va_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[VA]:
    """The VA for the session, where the CA worker's VA_URL points; quick debounce
    and upkeep, so tests wait little."""
    port = va_port
    settings = worker_settings(
        Settings,
        backends,
        va_host="127.0.0.1",
        va_port=port,
        va_keys=tmp_path_factory.mktemp("va-keys"),
        va_crl_debounce_seconds=0.2,
        va_upkeep_seconds=0.1,
    )
    async with running(serve, settings) as task:
        bus = await Bus.connect(
            settings.amqp_url.get_secret_value(), Topology(backends.prefix)
        )
        try:
            await wait_until_queue(bus, "va", "events", task)
        finally:
            await bus.close()
        yield VA(f"http://127.0.0.1:{port}", settings)


@dataclass(frozen=True)
class Issued:
    view: CertificateView
    certificate: x509.Certificate
    path: Path


async def new_ca(bus: Bus, tmp: Path, parent: str | None = None) -> tuple[CAView, Path]:
    reply = await call(bus, CreateCA(name=unique("va-ca"), parent=parent))
    assert reply.ok, reply.error
    ca = CAView.model_validate(reply.result)
    path = tmp / f"{ca.name}.pem"
    path.write_text(ca.certificate_pem)
    return ca, path


async def new_leaf(bus: Bus, ca: str, tmp: Path) -> Issued:
    _, csr = make_csr(unique("device"))
    reply = await call(bus, SignCertificate(ca=ca, csr_pem=csr_pem(csr)))
    assert reply.ok, reply.error
    view = CertificateView.model_validate(reply.result)
    path = tmp / f"{view.serial}.pem"
    path.write_text(view.certificate_pem)
    return Issued(
        view, x509.load_pem_x509_certificate(view.certificate_pem.encode()), path
    )


def ocsp_request(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate,
        issuer,
        algorithm or hashes.SHA1(),  # noqa: S303 - the CertID hash of RFC 5019 §2.1.1
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def post_ocsp(url: str, body: bytes) -> tuple[aiohttp.ClientResponse, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/ocsp",
            data=body,
            headers={"Content-Type": "application/ocsp-request"},
        ) as response,
    ):
        return response, await response.read()


async def ask(url: str, body: bytes) -> ocsp.OCSPResponse:
    response, der = await post_ocsp(url, body)
    assert 200 == response.status
    assert "application/ocsp-response" == response.content_type
    return ocsp.load_der_ocsp_response(der)


async def wait_status(
    url: str,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    status: ocsp.OCSPCertStatus,
    timeout: float = 15,
) -> ocsp.OCSPResponse:
    """Ask until the responder answers ``status`` (deadline, never a fixed sleep)."""
    body = ocsp_request(certificate, issuer)
    async with asyncio.timeout(timeout):
        while True:
            found = await ask(url, body)
            if (
                found.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
                and found.certificate_status is status
            ):
                return found
            await asyncio.sleep(0.02)


async def get_crl(url: str, name: str) -> bytes | None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/crl/{name}.crl") as response,
    ):
        if response.status == 404:
            return None
        assert 200 == response.status
        assert "application/pkix-crl" == response.content_type
        return await response.read()


async def wait_crl(
    url: str, name: str, *, at_least: int = 1, timeout: float = 15
) -> x509.CertificateRevocationList:
    """The served CRL once its number is at least ``at_least``."""
    async with asyncio.timeout(timeout):
        while True:
            der = await get_crl(url, name)
            if der is not None:
                crl = x509.load_der_x509_crl(der)
                number = crl.extensions.get_extension_for_class(x509.CRLNumber)
                if number.value.crl_number >= at_least:
                    return crl
            await asyncio.sleep(0.02)


def save_crl(crl: x509.CertificateRevocationList, path: Path) -> Path:
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


async def openssl(*args: str | Path) -> tuple[int, str]:
    """Run openssl; its exit status and everything it printed."""
    process = await asyncio.create_subprocess_exec(
        "openssl",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()
