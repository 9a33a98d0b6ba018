"""The CA worker with ENGINE set to each real engine: pkcs11 (SoftHSM2), vault-transit
and vault (Vault PKI on OpenBao), each worker on its own database and bus names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from contracts.ca import (
    CAView,
    CertificateStatus,
    CertificateView,
    GetCA,
    RevocationReason,
    RevokeCertificate,
)
from runtime.bus import Bus
from tests.ca_worker.engine_workers import (
    ca_worker_on,
    create_ca,
    load,
    openssl_verify,
    pkcs11_settings,
    sign,
    unique,
    vault_settings,
)
from tests.conftest import Backends, gateway_running, isolated_backends, worker_running
from tests.est_gateway.test_gateway import Identity
from tests.pki import call, make_csr

# SoftHSM2 and OpenBao fixtures (see tests/engines/engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("pkcs11", marks=pytest.mark.softhsm),
        pytest.param("vault-transit", marks=pytest.mark.vault),
        pytest.param("vault", marks=pytest.mark.vault),
    ],
)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def own_backends(engine: str) -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture(scope="module")
async def engine_bus(
    engine: str,
    own_backends: Backends,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Bus]:
    """A CA worker whose ENGINE is ``engine`` (and nothing else), answering on a bus."""
    if engine == "pkcs11":
        settings = pkcs11_settings(request.getfixturevalue("softhsm_config"))
    else:
        settings = vault_settings(request.getfixturevalue("openbao"))
    keys = tmp_path_factory.mktemp("keys")
    async with ca_worker_on(own_backends, keys, engine=engine, **settings) as bus:
        yield bus


async def test_internal_ca_is_made_on_the_default_engine(
    engine: str, engine_bus: Bus
) -> None:
    """LAMASSU-DMS-MANAGER is created by ENGINE at first start."""
    reply = await call(engine_bus, GetCA(name="LAMASSU-DMS-MANAGER"))
    assert reply.ok, reply.error
    assert engine == CAView.model_validate(reply.result).engine


async def test_chain_from_root_to_leaf_verifies_with_openssl(
    engine: str, engine_bus: Bus, tmp_path: Path
) -> None:
    """An EC root, an RSA subordinate and a leaf it signs verify as a chain under openssl."""
    root = await create_ca(engine_bus, name=unique("root"), key_type="ec-p256")
    sub = await create_ca(
        engine_bus, name=unique("sub"), parent=root.name, key_type="rsa-2048"
    )
    assert (engine, engine) == (root.engine, sub.engine)
    _, csr = make_csr("device-7", dns_names=("device-7.example",))
    leaf = await sign(engine_bus, sub.name, csr)
    verify = openssl_verify(tmp_path, root, leaf.certificate_pem, sub)
    assert 0 == verify.returncode, verify.stderr
    certificate = load(leaf.certificate_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ["device-7.example"] == san.value.get_values_for_type(x509.DNSName)
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert [ExtendedKeyUsageOID.CLIENT_AUTH] == list(usage.value)
    assert (
        certificate.not_valid_after_utc <= load(sub.certificate_pem).not_valid_after_utc
    )


async def test_revoking_a_leaf_is_recorded(engine_bus: Bus) -> None:
    """A certificate of an engine-kept CA is revoked with its reason."""
    ca = await create_ca(engine_bus, name=unique("rev"))
    leaf = await sign(engine_bus, ca.name, make_csr("device-r")[1])
    reply = await call(
        engine_bus,
        RevokeCertificate(serial=leaf.serial, reason=RevocationReason.KEY_COMPROMISE),
    )
    assert reply.ok, reply.error
    revoked = CertificateView.model_validate(reply.result)
    assert CertificateStatus.REVOKED == revoked.status


async def test_enrollment_end_to_end(
    engine: str, engine_bus: Bus, own_backends: Backends, tmp_path: Path
) -> None:
    """With ENGINE set to this engine, a device enrolls and re-enrolls over real HTTPS."""
    from tests.est_gateway.test_gateway import (
        new_stage,
        openssl_csr,
        single_certificate,
    )

    async with (
        worker_running("dms_worker", "dms", own_backends),
        worker_running("device_worker", "devices", own_backends),
        gateway_running(own_backends, tmp_path / "tls") as gateway,
    ):
        stage = await new_stage(engine_bus, gateway, tmp_path)
        device_id = unique("engine-device")
        body, key = openssl_csr(tmp_path, device_id)
        status, _, payload = await stage.est.enroll(
            stage.ca.name, body, stage.dms_identity
        )
        assert 200 == status, payload
        issued = single_certificate(payload)
        issued.verify_directly_issued_by(load(stage.ca.certificate_pem))
        device = Identity(tmp_path / "device.pem", key)
        device.cert.write_bytes(issued.public_bytes(serialization.Encoding.PEM))
        renewal, _ = openssl_csr(tmp_path, device_id, key=key)
        status, _, payload = await stage.est.enroll(
            stage.ca.name, renewal, device, "simplereenroll"
        )
        assert 200 == status, payload
        assert issued.subject == single_certificate(payload).subject
