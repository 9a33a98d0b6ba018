"""CA workers on real engines: in-process, each on its own database and bus names.

Shared by the engine tests of tests/ca_worker; the engine backends themselves (SoftHSM2
token, OpenBao) come from ``tests.engines.engine_backends``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from pydantic import SecretStr

from ca_worker.__main__ import serve
from contracts.ca import CAView, CertificateView, CreateCA, SignCertificate
from contracts.names import Topology
from engines import Pkcs11Config
from runtime.bus import Bus
from tests.conftest import AMQP_URL, Backends, ca_settings, wait_until_answered
from tests.pki import call, csr_pem

if TYPE_CHECKING:
    from tests.engines.engine_backends import DevServer


@contextlib.asynccontextmanager
async def ca_worker_on(
    backends: Backends, keys: Path, **engine_settings: object
) -> AsyncIterator[Bus]:
    """Run the CA worker with these engine settings; yield a bus once it answers."""
    settings = ca_settings(backends, keys, **engine_settings)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    try:
        await wait_until_answered(bus, task)
        yield bus
    finally:
        await bus.close()
        stop.set()
        await asyncio.wait_for(task, 30)


def pkcs11_settings(config: Pkcs11Config) -> dict[str, object]:
    return {
        "pkcs11_driver": config.driver,
        "pkcs11_label": config.label,
        "pkcs11_pin": config.pin,
    }


def vault_settings(server: DevServer) -> dict[str, object]:
    """AppRole login with Transit and PKI rights, and a CA mount prefix of our own."""
    return {
        "vault_address": server.address,
        "vault_role_id": server.ca_role_id,
        "vault_secret_id": SecretStr(server.ca_secret_id),
        "vault_pki_ca_path": f"pki-{secrets.token_hex(3)}-",
    }


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


async def create_ca(bus: Bus, **fields: object) -> CAView:
    reply = await call(bus, CreateCA.model_validate(fields))
    assert reply.ok, reply.error
    return CAView.model_validate(reply.result)


async def sign(
    bus: Bus, ca: str, csr: x509.CertificateSigningRequest
) -> CertificateView:
    reply = await call(bus, SignCertificate(ca=ca, csr_pem=csr_pem(csr)))
    assert reply.ok, reply.error
    return CertificateView.model_validate(reply.result)


def openssl_verify(
    directory: Path, root: CAView, leaf_pem: str, *intermediates: CAView
) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` of the leaf against the root, through the intermediates."""
    (directory / "root.pem").write_text(root.certificate_pem)
    (directory / "chain.pem").write_text(
        "".join(ca.certificate_pem for ca in intermediates)
    )
    (directory / "leaf.pem").write_text(leaf_pem)
    untrusted = ["-untrusted", str(directory / "chain.pem")] if intermediates else []
    return subprocess.run(
        [
            "openssl", "verify", "-purpose", "sslclient",
            "-CAfile", str(directory / "root.pem"), *untrusted,
            str(directory / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())
