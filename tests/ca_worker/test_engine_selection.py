"""One engine per CA: a CA worker with ENGINE=gopem and ENGINES=pkcs11,vault-transit,vault
keeps each CA on the engine ``CreateCA.engine`` names, and Vault PKI CAs behave."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import hvac
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from contracts.ca import (
    CertificateView,
    CreateCA,
    RevocationReason,
    RevokeCA,
    RevokeCertificate,
    SignCertificate,
)
from contracts.errors import ErrorCode
from contracts.va import CRLView, IssueResponderCertificate, SignCRL
from engines import Pkcs11Config
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
from tests.conftest import Backends, isolated_backends
from tests.pki import call, csr_pem, make_csr

if TYPE_CHECKING:
    from tests.engines.engine_backends import DevServer

# SoftHSM2 and OpenBao fixtures (see tests/engines/engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.softhsm,
    pytest.mark.vault,
]


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture(scope="module")
def engine_settings(
    softhsm_config: Pkcs11Config, openbao: DevServer
) -> dict[str, object]:
    return {
        "engine": "gopem",
        "engines": "pkcs11,vault-transit,vault",
        **pkcs11_settings(softhsm_config),
        **vault_settings(openbao),
    }


@pytest.fixture(scope="module")
async def multi_bus(
    own_backends: Backends,
    engine_settings: dict[str, object],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Bus]:
    keys = tmp_path_factory.mktemp("keys")
    async with ca_worker_on(own_backends, keys, **engine_settings) as bus:
        yield bus


@pytest.mark.parametrize("engine", ["gopem", "pkcs11", "vault-transit", "vault"])
async def test_each_ca_is_kept_by_the_engine_it_names(
    multi_bus: Bus, engine: str, engine_settings: dict[str, object], tmp_path: Path
) -> None:
    """CreateCA.engine picks the engine; the CA signs and openssl verifies the leaf."""
    ca = await create_ca(multi_bus, name=unique(engine), engine=engine)
    assert engine == ca.engine
    if engine == "vault":
        assert f"{engine_settings['vault_pki_ca_path']}{ca.name}" == ca.key_id
    leaf = await sign(multi_bus, ca.name, make_csr("device-e")[1])
    verify = openssl_verify(tmp_path, ca, leaf.certificate_pem)
    assert 0 == verify.returncode, verify.stderr


async def test_no_engine_means_engine(multi_bus: Bus) -> None:
    """A CA created without an engine goes to ENGINE."""
    assert "gopem" == (await create_ca(multi_bus, name=unique("plain"))).engine


async def test_subordinate_on_another_signer_engine(
    multi_bus: Bus, tmp_path: Path
) -> None:
    """A gopem CA under a pkcs11 root, and a vault-transit one under it, chain."""
    root = await create_ca(multi_bus, name=unique("hsm-root"), engine="pkcs11")
    middle = await create_ca(multi_bus, name=unique("file-sub"), parent=root.name)
    issuing = await create_ca(
        multi_bus,
        name=unique("transit-sub"),
        parent=middle.name,
        engine="vault-transit",
    )
    leaf = await sign(multi_bus, issuing.name, make_csr("device-x")[1])
    verify = openssl_verify(tmp_path, root, leaf.certificate_pem, middle, issuing)
    assert 0 == verify.returncode, verify.stderr


@pytest.mark.parametrize(
    ("parent_engine", "engine", "reason"),
    [
        (None, "hsm-9", "engine 'hsm-9' is not configured"),
        ("vault", "gopem", "which signs only CAs on that engine"),
        ("gopem", "vault", "a CA on 'vault' needs a parent on 'vault'"),
    ],
    ids=["unknown-engine", "signer-under-vault", "vault-under-signer"],
)
async def test_engine_refusals_are_invalid(
    multi_bus: Bus, parent_engine: str | None, engine: str, reason: str
) -> None:
    """An unconfigured engine, or a hierarchy across Vault PKI, is an 'invalid' reply."""
    parent = None
    if parent_engine is not None:
        parent = (
            await create_ca(multi_bus, name=unique("p"), engine=parent_engine)
        ).name
    reply = await call(
        multi_bus, CreateCA(name=unique("child"), parent=parent, engine=engine)
    )
    assert (False, ErrorCode.INVALID) == (reply.ok, reply.error and reply.error.code)
    assert reason in reply.error.message  # type: ignore[union-attr]


async def test_vault_refuses_csr_extensions_it_would_copy(multi_bus: Bus) -> None:
    """Vault copies CSR extensions, so one beyond the profile is refused, naming it;
    the profile's own extended key usage is accepted and kept."""
    ca = await create_ca(multi_bus, name=unique("vault-ca"), engine="vault")
    asks_for_ca_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    _, csr = make_csr("greedy", extra_extensions=(asks_for_ca_usage,))
    reply = await call(multi_bus, SignCertificate(ca=ca.name, csr_pem=csr_pem(csr)))
    assert (False, ErrorCode.INVALID) == (reply.ok, reply.error and reply.error.code)
    assert "keyUsage" in reply.error.message  # type: ignore[union-attr]
    client_auth = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    _, csr = make_csr("modest", extra_extensions=(client_auth,))
    leaf = load((await sign(multi_bus, ca.name, csr)).certificate_pem)
    assert (
        client_auth
        == leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )


def crl_serials(server: DevServer, mount: str) -> set[int]:
    client = hvac.Client(url=server.address, token=server.root_token)
    try:
        crl = x509.load_pem_x509_crl(
            client.secrets.pki.read_crl(mount_point=mount).encode()
        )
    finally:
        client.adapter.close()
    return {revoked.serial_number for revoked in crl}


async def test_vault_revocations_reach_its_crls(
    multi_bus: Bus, openbao: DevServer
) -> None:
    """Revoking a leaf puts it on its Vault CA's CRL; revoking a subordinate Vault CA
    puts the subordinate on its parent's CRL."""
    root = await create_ca(multi_bus, name=unique("v-root"), engine="vault")
    sub = await create_ca(
        multi_bus, name=unique("v-sub"), parent=root.name, engine="vault"
    )
    leaf = await sign(multi_bus, sub.name, make_csr("device-v")[1])
    reply = await call(multi_bus, RevokeCertificate(serial=leaf.serial))
    assert reply.ok, reply.error
    assert int(leaf.serial, 16) in crl_serials(openbao, sub.key_id)
    reply = await call(
        multi_bus, RevokeCA(name=sub.name, reason=RevocationReason.CA_COMPROMISE)
    )
    assert reply.ok, reply.error
    assert int(sub.serial, 16) in crl_serials(openbao, root.key_id)


async def test_cli_creates_a_ca_on_the_engine_it_names(
    own_backends: Backends, multi_bus: Bus
) -> None:
    """``lamassu ca create --engine pkcs11`` keeps the CA's key in the token."""
    name = unique("cli-hsm")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lamassu_cli", "--json", "ca", "create",
        "--name", name, "--engine", "pkcs11",
        env=own_backends.env(LOG_LEVEL="warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert 0 == process.returncode, err.decode()
    assert '"engine": "pkcs11"' in out.decode()


@pytest.mark.parametrize("engine", ["pkcs11", "vault-transit"])
async def test_crls_and_responders_are_signed_in_the_ca_engine(
    multi_bus: Bus, engine: str
) -> None:
    """crl.sign and ocsp.responder.issue sign with a CA key kept in an HSM or Vault
    Transit: the key object the engine hands out signs CRLs as it signs certificates."""
    ca = await create_ca(multi_bus, name=unique(f"crl-{engine}"), engine=engine)
    issuer = load(ca.certificate_pem)
    reply = await call(multi_bus, SignCRL(ca=ca.name))
    assert reply.ok, reply.error
    view = CRLView.model_validate(reply.result)
    crl = x509.load_der_x509_crl(base64.b64decode(view.crl_der_b64))
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    _, csr = make_csr("OCSP responder")
    reply = await call(
        multi_bus, IssueResponderCertificate(ca=ca.name, csr_pem=csr_pem(csr))
    )
    assert reply.ok, reply.error
    responder = CertificateView.model_validate(reply.result)
    load(responder.certificate_pem).verify_directly_issued_by(issuer)


async def test_vault_pki_cas_keep_their_own_crls(multi_bus: Bus) -> None:
    """A Vault PKI mount publishes its own CRL and holds its key: refused, saying so."""
    ca = await create_ca(multi_bus, name=unique("crl-vault"), engine="vault")
    reply = await call(multi_bus, SignCRL(ca=ca.name))
    assert reply.error is not None
    assert ErrorCode.CONFLICT == reply.error.code
    assert "publishes its own" in reply.error.message
