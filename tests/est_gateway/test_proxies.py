"""Proxies, gateway trust and the returned key (issue 14, item 8), over real HTTPS:
a client-certificate header counts only from a proxy identified by its own TLS client
certificate; a CA revoked since start leaves the gateway's trust with its event; the
certificate returned must carry the CSR's key.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from contracts.ca import (
    CAView,
    CertificateStatus,
    CertificateView,
    RevokeCA,
    SignCertificate,
)
from contracts.keys import KeyType
from est_gateway.app import _check_issued_key
from est_gateway.errors import EstError
from est_gateway.proxies import fingerprint, is_trusted_proxy
from est_gateway.trust import TrustStore
from runtime.bus import Bus
from tests.conftest import Backends, Gateway, gateway_running
from tests.est_gateway.test_gateway import (
    Est,
    Identity,
    Stage,
    new_stage,
    openssl_csr,
    single_certificate,
)
from tests.pki import call, make_csr, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def issued_identity(bus: Bus, stage: Stage, name: str) -> Identity:
    """A key (openssl) and a certificate for it from the stage's CA."""
    _, key = openssl_csr(stage.directory, name)
    pem_csr = subprocess.run(
        ["openssl", "req", "-new", "-key", str(key), "-subj", f"/CN={name}"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    reply = await call(bus, SignCertificate(ca=stage.ca.name, csr_pem=pem_csr))
    assert reply.ok, reply.error
    identity = Identity(stage.directory / f"{name}.pem", key)
    identity.cert.write_text(
        CertificateView.model_validate(reply.result).certificate_pem
    )
    return identity


def header_for(identity: Identity) -> dict[str, str]:
    """nginx's $ssl_client_escaped_cert of a (public) certificate."""
    return {"x-forwarded-client-cert": quote(identity.cert.read_text())}


@pytest.fixture
async def setting(
    bus: Bus, gateway: Gateway, backends: Backends, tmp_path: Path
) -> AsyncIterator[tuple[Stage, Est, Identity]]:
    """The stage, a gateway that trusts one proxy certificate, and that proxy."""
    stage = await new_stage(bus, gateway, tmp_path)
    proxy = await issued_identity(bus, stage, unique("proxy"))
    pinned = x509.load_pem_x509_certificate(proxy.cert.read_bytes())
    async with gateway_running(
        backends,
        tmp_path / "proxied-tls",
        est_trusted_proxies=["127.0.0.1"],
        est_trusted_proxy_certs=[pinned.fingerprint(hashes.SHA256()).hex()],
    ) as proxied:
        await proxied.knows(stage.ca.name)
        yield stage, Est(proxied), proxy


async def test_header_from_the_identified_proxy_enrolls_as_the_dms(
    setting: tuple[Stage, Est, Identity],
) -> None:
    """The proxy's own certificate on the connection: its header names the DMS."""
    stage, est, proxy = setting
    body, _ = openssl_csr(stage.directory, unique("behind"))
    status, _, payload = await est.request(
        "POST",
        f"/.well-known/est/{stage.ca.name}/simpleenroll",
        identity=proxy,
        body=body,
        headers=header_for(stage.dms_identity),
    )
    assert 200 == status, payload


async def test_header_from_anyone_else_is_ignored(
    setting: tuple[Stage, Est, Identity], bus: Bus
) -> None:
    """A local process at the trusted address with another certificate, or none, and
    the DMS's public certificate in the header: the header is ignored (403 / 401)."""
    stage, est, _ = setting
    other = await issued_identity(bus, stage, unique("local"))
    body, _ = openssl_csr(stage.directory, unique("sneak"))
    path = f"/.well-known/est/{stage.ca.name}/simpleenroll"
    status, _, payload = await est.request(
        "POST", path, identity=other, body=body, headers=header_for(stage.dms_identity)
    )
    assert 403 == status
    # Authenticated as the certificate it presented, not as the DMS in the header.
    assert b"not by LAMASSU-DMS-MANAGER" in payload
    status, _, _ = await est.request(
        "POST", path, body=body, headers=header_for(stage.dms_identity)
    )
    assert 401 == status


async def test_revoked_ca_leaves_the_gateway_trust(
    bus: Bus, gateway: Gateway, tmp_path: Path
) -> None:
    """Once its CA's revocation event arrives, a device certificate of that CA is
    refused by the gateway itself, naming the CA."""
    stage = await new_stage(bus, gateway, tmp_path)
    device_id = unique("orphan")
    body, key = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    device = Identity(stage.directory / "orphan.pem", key)
    device.cert.write_bytes(
        single_certificate(payload).public_bytes(serialization.Encoding.PEM)
    )
    assert (await call(bus, RevokeCA(name=stage.ca.name))).ok
    renewal, _ = openssl_csr(stage.directory, device_id, key=key)
    async with asyncio.timeout(10):
        while True:
            status, _, payload = await stage.est.enroll(
                stage.ca.name, renewal, device, "simplereenroll"
            )
            if b"which is revoked" in payload:
                break
            await asyncio.sleep(0.05)
    assert 403 == status
    assert f"CA {stage.ca.name!r}".encode() in payload


def test_returned_certificate_must_carry_the_csr_key() -> None:
    """A certificate for another key is withheld (502), never returned."""
    key, csr = make_csr("dev-1")
    _, other = make_csr("dev-1")
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(csr.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    _check_issued_key(certificate, csr)
    with pytest.raises(EstError) as caught:
        _check_issued_key(certificate, other)
    assert 502 == caught.value.status


def test_proxy_rules(tmp_path: Path) -> None:
    """Pinned fingerprint and address must both hold; no pin, no proxy."""
    key, csr = make_csr("proxy")
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy")])
    peer = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(csr.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pin = fingerprint(peer.fingerprint(hashes.SHA256()).hex(":").upper())
    trust = TrustStore(ssl.create_default_context(), tmp_path / "bundle.pem")

    def trusted(
        certificate: x509.Certificate | None,
        remote: str,
        pins: list[str],
        addresses: list[str],
    ) -> bool:
        return is_trusted_proxy(
            certificate,
            remote,
            fingerprints=pins,
            proxy_ca=None,
            addresses=addresses,
            trust=trust,
        )

    assert trusted(peer, "127.0.0.1", [pin], ["127.0.0.1"])
    assert not trusted(peer, "10.0.0.9", [pin], ["127.0.0.1"])
    assert not trusted(peer, "127.0.0.1", [], [])
    assert not trusted(None, "127.0.0.1", [pin], [])
    with pytest.raises(ValueError, match="64 hex digits"):
        fingerprint("abc")


def test_proxy_identified_by_its_ca(tmp_path: Path) -> None:
    """EST_TRUSTED_PROXY_CA: any certificate that CA issued is a proxy's; others not."""
    ca_key, ca_csr = make_csr("proxy-ca")
    now = datetime.now(UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy-ca")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_csr.public_key())
        .serial_number(3)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    trust = TrustStore(ssl.create_default_context(), tmp_path / "bundle.pem")
    trust.add(
        CAView(
            name="proxy-ca",
            parent=None,
            internal=False,
            key_type=KeyType.EC_P256,
            key_id="k",
            engine="gopem",
            serial="03",
            subject=ca_name.rfc4514_string(),
            status=CertificateStatus.ACTIVE,
            not_before=now,
            not_after=now + timedelta(days=1),
            certificate_pem=ca_certificate.public_bytes(
                serialization.Encoding.PEM
            ).decode(),
        )
    )
    key, csr = make_csr("proxy")

    def leaf(signer: object, issuer: x509.Name) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p")]))
            .issuer_name(issuer)
            .public_key(csr.public_key())
            .serial_number(4)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
        )

    def trusted(peer: x509.Certificate) -> bool:
        return is_trusted_proxy(
            peer,
            "127.0.0.1",
            fingerprints=[],
            proxy_ca="proxy-ca",
            addresses=[],
            trust=trust,
        )

    assert trusted(leaf(ca_key, ca_name))
    assert not trusted(leaf(key, ca_name))  # claims the CA as issuer, signed by itself
    assert not trusted(
        leaf(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p")]))
    )
