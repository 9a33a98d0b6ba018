"""Killing the CA worker during 100 concurrent enrollments loses nothing and duplicates nothing.

Every client ends with exactly one certificate (some after a 202 and a retry of the same
request), and every certificate has its event and its device row.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.ca import CreateCA
from contracts.dms import CreateDMS, DMSView
from contracts.names import Topology
from runtime.bus import Bus
from tests import est_client
from tests.conftest import (
    AMQP_URL,
    Backends,
    isolated_backends,
    running,
    wait_until_answered,
    worker_running,
)
from tests.pki import call, csr_pem, make_csr

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

CLIENTS = 100


@pytest.fixture
def crash_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


def start_ca_worker(backends: Backends, directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "ca-worker.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ca_worker"],
            env=backends.env(GOPEM_DATA=str(directory / "keys")),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def device_csr(device_id: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


async def test_kill_ca_worker_mid_enrollments(
    crash_backends: Backends, tmp_path: Path
) -> None:
    """SIGKILL the CA worker while 100 devices enroll: each gets one certificate, event and row."""
    from est_gateway.__main__ import serve as serve_gateway
    from est_gateway.settings import Settings as GatewaySettings

    backends = crash_backends
    ca_worker = start_ca_worker(backends, tmp_path)
    bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway_settings = GatewaySettings(
        amqp_url=AMQP_URL,
        amqp_prefix=backends.prefix,
        est_host="127.0.0.1",
        est_port=port,
        est_tls_dir=tmp_path / "tls",
        est_wait_seconds=2,
        est_retry_after_seconds=1,
    )
    try:
        await wait_until_answered(bus)
        async with (
            worker_running("dms_worker", "dms", backends),
            worker_running("device_worker", "devices", backends),
        ):
            assert (await call(bus, CreateCA(name="crash-ca"))).ok
            dms_key, dms_csr = make_csr("crash-dms")
            reply = await call(
                bus,
                CreateDMS(
                    name="crash-dms",
                    authorized_cas=["crash-ca"],
                    csr_pem=csr_pem(dms_csr),
                ),
            )
            assert reply.ok, reply.error
            (tmp_path / "dms.pem").write_text(
                DMSView.model_validate(reply.result).certificate_pem
            )
            (tmp_path / "dms.key").write_bytes(
                dms_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            async with running(serve_gateway, gateway_settings) as gateway_task:
                context = await _client_context(tmp_path, port, gateway_task)
                results = await _enroll_while_killing(
                    context, port, ca_worker, backends, tmp_path
                )
                ca_worker = results.restarted
            assert CLIENTS == len(results.serials)
            assert CLIENTS == len(set(results.serials.values()))
            assert results.saw_202, "the kill should have made some clients wait"
            await _every_certificate_has_its_event_and_device(backends, results.serials)
    finally:
        ca_worker.send_signal(signal.SIGTERM)
        ca_worker.wait(30)
        await bus.close()


async def _client_context(
    directory: Path, port: int, gateway_task: asyncio.Task[None]
) -> ssl.SSLContext:
    async with asyncio.timeout(30):
        while not (directory / "tls" / "server.pem").exists() or not _port_open(port):
            if gateway_task.done():
                gateway_task.result()
            await asyncio.sleep(0.05)
    context = ssl.create_default_context(cafile=str(directory / "tls" / "server.pem"))
    context.load_cert_chain(directory / "dms.pem", directory / "dms.key")
    return context


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Results:
    def __init__(self) -> None:
        self.serials: dict[str, int] = {}
        self.saw_202 = False
        self.restarted: subprocess.Popen[bytes]


async def _enroll_while_killing(
    context: ssl.SSLContext,
    port: int,
    ca_worker: subprocess.Popen[bytes],
    backends: Backends,
    directory: Path,
) -> Results:
    results = Results()
    url = f"https://127.0.0.1:{port}/.well-known/est/crash-ca/simpleenroll"
    first_done = asyncio.Event()
    first_wait = asyncio.Event()

    async def client(index: int) -> None:
        device_id = f"crash-device-{index:03d}-{uuid.uuid4().hex[:6]}"
        body = device_csr(device_id)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, force_close=True)
        ) as session:
            while (
                True
            ):  # the same request again after 202 or 503, as RFC 7030 §4.2.3 says
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/pkcs10"}
                ) as response:
                    payload = await response.read()
                    if response.status == 200:
                        results.serials[device_id] = est_client.decode_certs_only(
                            payload
                        )[0].serial_number
                        first_done.set()
                        return
                    assert response.status in {202, 503}, (response.status, payload)
                    results.saw_202 = True
                    first_wait.set()

    async with asyncio.timeout(180):
        clients = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
        await first_done.wait()
        ca_worker.send_signal(signal.SIGKILL)
        ca_worker.wait(30)
        # Stay down until a client was told 202, so the retry path is exercised too.
        await first_wait.wait()
        results.restarted = start_ca_worker(backends, directory)
        await asyncio.gather(*clients)
    return results


async def _every_certificate_has_its_event_and_device(
    backends: Backends, serials: dict[str, int]
) -> None:
    """The CA has exactly these certificates, the outbox drained, each device holds its serial."""
    conn = await asyncpg.connect(
        host=backends.pg_host,
        port=backends.pg_port,
        user=backends.pg_user,
        database=backends.database,
    )
    try:
        rows = await conn.fetch(
            "SELECT device_id, serial FROM ca.certificates WHERE device_id IS NOT NULL"
        )
        issued = {r["device_id"]: int(r["serial"], 16) for r in rows}
        assert len(serials) == len(rows)  # no device got a second certificate
        assert serials == issued
        async with asyncio.timeout(60):
            while True:
                slots = await conn.fetch(
                    "SELECT device_id, serial FROM devices.slots WHERE serial IS NOT NULL"
                )
                pending = await conn.fetchval("SELECT count(*) FROM ca.outbox")
                held = {r["device_id"]: int(r["serial"], 16) for r in slots}
                if pending == 0 and held == serials:
                    return
                await asyncio.sleep(0.1)
    finally:
        await conn.close()
