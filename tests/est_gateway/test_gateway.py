"""Enrollment end to end over real HTTPS: gateway -> DMS worker -> CA worker -> device worker.

CSRs are built with the openssl command, certificates verified with it too; the HTTP
client is aiohttp with a TLS client certificate, as a device or a DMS would present it.
"""

from __future__ import annotations

import base64
import ssl
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contracts.ca import CAView, CreateCA, RevokeCertificate
from contracts.devices import DecommissionDevice, DeviceStatus, DeviceView, GetDevice
from contracts.dms import CreateDMS, DMSView, RevokeDMS, UpdateAuthorizedCAs
from est_gateway import wire
from runtime.bus import Bus
from tests import est_client
from tests.conftest import Gateway
from tests.pki import call, tampered_csr_pem

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@dataclass(frozen=True)
class Identity:
    """A certificate and key on disk, as a TLS client presents them."""

    cert: Path
    key: Path


def openssl_csr(
    directory: Path, common_name: str, key: Path | None = None
) -> tuple[bytes, Path]:
    """A base64 DER CSR body from `openssl req`; a new P-256 key unless one is given."""
    key = key or directory / f"{uuid.uuid4().hex}.key"
    command = [
        "openssl",
        "req",
        "-new",
        "-subj",
        f"/CN={common_name}",
        "-outform",
        "DER",
    ]
    if key.exists():
        command += ["-key", str(key)]
    else:
        command += [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
        ]
    der = subprocess.run(command, capture_output=True, check=True).stdout
    return base64.encodebytes(der), key


def make_dms_identity(directory: Path, name: str) -> tuple[Identity, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = directory / f"{name}.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    csr = subprocess.run(
        ["openssl", "req", "-new", "-key", str(key_file), "-subj", f"/CN={name}"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return Identity(directory / f"{name}.pem", key_file), csr


class Est:
    """A tiny EST client: one new TLS connection per request, like a fresh device."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _context(self, identity: Identity | None) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.gateway.server_certificate)
        )
        if identity is not None:
            context.load_cert_chain(identity.cert, identity.key)
        return context

    async def request(
        self,
        method: str,
        path: str,
        *,
        identity: Identity | None = None,
        body: bytes | None = None,
        content_type: str | None = "application/pkcs10",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        connector = aiohttp.TCPConnector(ssl=self._context(identity), force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(
                method,
                f"{self.gateway.url}{path}",
                data=body,
                headers=all_headers,
                timeout=aiohttp.ClientTimeout(total=60),
            ) as response,
        ):
            return response.status, dict(response.headers), await response.read()

    async def enroll(
        self,
        label: str,
        body: bytes,
        identity: Identity | None,
        operation: str = "simpleenroll",
    ):
        return await self.request(
            "POST",
            f"/.well-known/est/{label}/{operation}",
            identity=identity,
            body=body,
        )


@dataclass
class Stage:
    """A CA, a DMS allowed to enroll for it, and a place for files."""

    ca: CAView
    dms: DMSView
    dms_identity: Identity
    directory: Path
    est: Est


async def new_stage(bus: Bus, gateway: Gateway, directory: Path) -> Stage:
    ca_reply = await call(bus, CreateCA(name=f"e2e-{uuid.uuid4().hex[:8]}"))
    assert ca_reply.ok, ca_reply.error
    ca = CAView.model_validate(ca_reply.result)
    name = f"dms-{uuid.uuid4().hex[:8]}"
    identity, csr = make_dms_identity(directory, name)
    dms_reply = await call(
        bus, CreateDMS(name=name, authorized_cas=[ca.name], csr_pem=csr)
    )
    assert dms_reply.ok, dms_reply.error
    dms = DMSView.model_validate(dms_reply.result)
    identity.cert.write_text(dms.certificate_pem)
    await gateway.knows(ca.name)
    return Stage(ca, dms, identity, directory, Est(gateway))


@pytest.fixture
async def stage(bus: Bus, gateway: Gateway, tmp_path: Path) -> Stage:
    return await new_stage(bus, gateway, tmp_path)


def single_certificate(body: bytes) -> x509.Certificate:
    certificates = est_client.decode_certs_only(body)
    assert 1 == len(certificates)
    return certificates[0]


async def count_certificates(db: asyncpg.Pool) -> int:
    return int(await db.fetchval("SELECT count(*) FROM ca.certificates"))


async def device_status(
    bus: Bus, device_id: str, expected: DeviceStatus, timeout: float = 15
) -> DeviceView:
    """Poll device.get until the device shows the expected status (deadline-bounded)."""
    import asyncio

    async with asyncio.timeout(timeout):
        while True:
            reply = await call(bus, GetDevice(id=device_id))
            if reply.ok and DeviceView.model_validate(reply.result).status is expected:
                return DeviceView.model_validate(reply.result)
            await asyncio.sleep(0.05)


async def test_enroll_reenroll_rekey_and_serverkeygen(stage: Stage, bus: Bus) -> None:
    """A device enrolls, renews with the same key, rekeys, and a second device gets a server key."""
    est, directory = stage.est, stage.directory
    device_id = f"sensor-{uuid.uuid4().hex[:8]}"
    body, device_key = openssl_csr(directory, device_id)
    status, headers, payload = await est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    assert wire.CERTS_ONLY == headers["Content-Type"]
    assert "base64" == headers["Content-Transfer-Encoding"]
    assert str(len(payload)) == headers["Content-Length"]
    assert all(len(line) <= 64 for line in payload.splitlines())
    assert payload.endswith(b"\n")
    certificate = single_certificate(payload)
    assert (
        device_id
        == certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    )

    status, _, chain_body = await est.request(
        "GET", f"/.well-known/est/{stage.ca.name}/cacerts", content_type=None
    )
    assert 200 == status
    (directory / "chain.pem").write_bytes(
        wire.encode_pem_chain(est_client.decode_certs_only(chain_body))
    )
    (directory / "device.pem").write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
    )
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            directory / "chain.pem",
            directory / "device.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == verify.returncode, verify.stderr
    await device_status(bus, device_id, DeviceStatus.FULLY_PROVISIONED)

    device = Identity(directory / "device.pem", device_key)
    renewal, _ = openssl_csr(directory, device_id, key=device_key)
    status, _, payload = await est.enroll(
        stage.ca.name, renewal, device, "simplereenroll"
    )
    assert 200 == status, payload
    renewed = single_certificate(payload)
    assert certificate.subject == renewed.subject
    assert certificate.public_key() == renewed.public_key()
    assert certificate.serial_number != renewed.serial_number

    # The renewal superseded the first certificate: the device rekeys with the new one.
    (directory / "device.pem").write_bytes(
        renewed.public_bytes(serialization.Encoding.PEM)
    )
    rekey, _ = openssl_csr(directory, device_id)
    status, _, payload = await est.enroll(
        stage.ca.name, rekey, device, "simplereenroll"
    )
    assert 200 == status, payload
    rekeyed = single_certificate(payload)
    assert certificate.subject == rekeyed.subject
    assert certificate.public_key() != rekeyed.public_key()

    keygen_body, _ = openssl_csr(directory, f"keygen-{uuid.uuid4().hex[:8]}")
    status, headers, payload = await est.enroll(
        stage.ca.name, keygen_body, stage.dms_identity, "serverkeygen"
    )
    assert 200 == status, payload
    generated = est_client.decode_serverkeygen(headers["Content-Type"], payload)
    assert generated.private_key.public_key() == generated.certificates[0].public_key()


async def test_retry_of_same_csr_gets_same_certificate(
    stage: Stage, db: asyncpg.Pool
) -> None:
    """Sending the same CSR twice returns one certificate: no second one is issued."""
    body, _ = openssl_csr(stage.directory, f"retry-{uuid.uuid4().hex[:8]}")
    first = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    before = await count_certificates(db)
    second = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert (200, 200) == (first[0], second[0])
    assert (
        single_certificate(first[2]).serial_number
        == single_certificate(second[2]).serial_number
    )
    assert before == await count_certificates(db)


async def test_allow_list_refuses_then_allows(stage: Stage, bus: Bus) -> None:
    """A DMS without the label's CA gets 403; after `dms allow` the same request succeeds."""
    other = CAView.model_validate(
        (await call(bus, CreateCA(name=f"other-{uuid.uuid4().hex[:8]}"))).result
    )
    await stage.est.gateway.knows(other.name)
    body, _ = openssl_csr(stage.directory, f"dev-{uuid.uuid4().hex[:8]}")
    status, _, payload = await stage.est.enroll(other.name, body, stage.dms_identity)
    assert 403 == status
    assert other.name in payload.decode()
    assert (
        await call(bus, UpdateAuthorizedCAs(name=stage.dms.name, add=[other.name]))
    ).ok
    status, _, _ = await stage.est.enroll(other.name, body, stage.dms_identity)
    assert 200 == status


async def test_refusals(stage: Stage, bus: Bus, db: asyncpg.Pool) -> None:
    """Each refusal has the status of DESIGN §3, a one-line reason, and issues nothing."""
    est, label, directory = stage.est, stage.ca.name, stage.directory
    device_id = f"dev-{uuid.uuid4().hex[:8]}"
    body, device_key = openssl_csr(directory, device_id)
    status, _, payload = await est.enroll(label, body, stage.dms_identity)
    assert 200 == status
    device = Identity(directory / "device.pem", device_key)
    device.cert.write_bytes(
        single_certificate(payload).public_bytes(serialization.Encoding.PEM)
    )
    other_id = f"other-{uuid.uuid4().hex[:8]}"
    other_body, other_key = openssl_csr(directory, other_id)
    status, _, payload = await est.enroll(label, other_body, stage.dms_identity)
    other_device = Identity(directory / "other.pem", other_key)
    other_device.cert.write_bytes(
        single_certificate(payload).public_bytes(serialization.Encoding.PEM)
    )

    fresh, _ = openssl_csr(directory, f"new-{uuid.uuid4().hex[:8]}")
    cases: list[
        tuple[str, int, tuple[str, str], bytes, Identity | None, str | None]
    ] = [
        (
            "no client certificate",
            401,
            ("POST", f"/.well-known/est/{label}/simpleenroll"),
            fresh,
            None,
            "application/pkcs10",
        ),
        (
            "device certificate as DMS",
            403,
            ("POST", f"/.well-known/est/{label}/simpleenroll"),
            fresh,
            device,
            "application/pkcs10",
        ),
        (
            "unknown label",
            404,
            ("POST", "/.well-known/est/no-such-ca/simpleenroll"),
            fresh,
            stage.dms_identity,
            "application/pkcs10",
        ),
        (
            "unknown operation",
            404,
            ("POST", f"/.well-known/est/{label}/fullcmc"),
            fresh,
            stage.dms_identity,
            "application/pkcs10",
        ),
        (
            "changed subject on reenroll",
            403,
            ("POST", f"/.well-known/est/{label}/simplereenroll"),
            openssl_csr(directory, device_id + "x", key=device_key)[0],
            device,
            "application/pkcs10",
        ),
        (
            "another device's certificate",
            403,
            ("POST", f"/.well-known/est/{label}/simplereenroll"),
            openssl_csr(directory, device_id, key=other_key)[0],
            other_device,
            "application/pkcs10",
        ),
        (
            "garbage base64",
            400,
            ("POST", f"/.well-known/est/{label}/simpleenroll"),
            b"@@@ not base64 @@@",
            stage.dms_identity,
            "application/pkcs10",
        ),
        (
            "bad CSR signature",
            400,
            ("POST", f"/.well-known/est/{label}/simpleenroll"),
            tampered_csr_pem("x").encode(),
            stage.dms_identity,
            "application/pkcs10",
        ),
        (
            "wrong content type",
            415,
            ("POST", f"/.well-known/est/{label}/simpleenroll"),
            fresh,
            stage.dms_identity,
            "application/json",
        ),
        (
            "oversized body",
            413,
            ("POST", f"/.well-known/est/{label}/simpleenroll"),
            b"A" * 200_000,
            stage.dms_identity,
            "application/pkcs10",
        ),
    ]
    before = await count_certificates(db)
    for name, expected, (method, path), request_body, identity, content_type in cases:
        status, headers, payload = await est.request(
            method,
            path,
            identity=identity,
            body=request_body,
            content_type=content_type,
        )
        assert expected == status, f"{name}: {status} {payload!r}"
        assert 1 == len(payload.decode().strip().splitlines()), name
        if expected == 401:
            assert "WWW-Authenticate" in headers
    assert before == await count_certificates(db)

    # Decommissioned: the device's certificate is revoked, re-enrollment is refused.
    assert (await call(bus, DecommissionDevice(id=device_id))).ok
    await device_status(bus, device_id, DeviceStatus.DECOMMISSIONED)
    renewal, _ = openssl_csr(directory, device_id, key=device_key)
    import asyncio

    async with asyncio.timeout(15):
        while True:  # the revocation travels as a command to the CA worker
            status, _, payload = await est.enroll(
                label, renewal, device, "simplereenroll"
            )
            if status != 200:
                break
            await asyncio.sleep(0.05)
    assert 403 == status, payload
    # A revoked DMS is refused from then on.
    assert (await call(bus, RevokeDMS(name=stage.dms.name))).ok
    status, _, payload = await est.enroll(
        label,
        openssl_csr(directory, f"late-{uuid.uuid4().hex[:6]}")[0],
        stage.dms_identity,
    )
    assert 403 == status, payload


async def test_device_status_follows_revocation(stage: Stage, bus: Bus) -> None:
    """Enroll -> fully provisioned; revoke -> with warnings; both seen as device.status.update."""
    device_id = f"st-{uuid.uuid4().hex[:8]}"
    body, _ = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status
    serial = est_client.decode_certs_only(payload)[0].serial_number
    await device_status(bus, device_id, DeviceStatus.FULLY_PROVISIONED)
    hex_serial = format(serial, "x")
    hex_serial = hex_serial if len(hex_serial) % 2 == 0 else "0" + hex_serial
    assert (await call(bus, RevokeCertificate(serial=hex_serial))).ok
    await device_status(bus, device_id, DeviceStatus.PROVISIONED_WITH_WARNINGS)
