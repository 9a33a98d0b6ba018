"""Issuance profiles end to end (issue 14): cert sign --profile server makes a
certificate openssl accepts for a TLS server, validity and SAN rules are enforced,
a DMS's profile applies to its devices over real HTTPS, and CAs take a path length.

CSRs are made with the openssl command, certificates checked with it too.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from contracts.ca import CAView, CertificateView, CreateCA, SignCertificate
from contracts.dms import CreateDMS, DMSView, UpdateDMSPolicy
from contracts.errors import ErrorCode
from contracts.profiles import CreateProfile, GetProfile, ProfileView, SanKind
from runtime.bus import Bus
from tests.conftest import Gateway
from tests.est_gateway.test_gateway import (
    Stage,
    make_dms_identity,
    new_stage,
    single_certificate,
)
from tests.pki import call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def openssl_pem_csr(directory: Path, common_name: str, *addext: str) -> str:
    """A PEM CSR from ``openssl req`` with a new P-256 key and ``-addext`` values."""
    command = [
        "openssl",
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(directory / f"{common_name}.key"),
        "-subj",
        f"/CN={common_name}",
    ]
    for value in addext:
        command += ["-addext", value]
    return subprocess.run(command, capture_output=True, check=True, text=True).stdout


async def new_ca(bus: Bus, **fields: object) -> CAView:
    reply = await call(
        bus, CreateCA.model_validate({"name": unique("prof-ca")} | fields)
    )
    assert reply.ok, reply.error
    return CAView.model_validate(reply.result)


async def sign(bus: Bus, ca: str, csr: str, **fields: object) -> CertificateView:
    reply = await call(
        bus, SignCertificate.model_validate({"ca": ca, "csr_pem": csr} | fields)
    )
    assert reply.ok, reply.error
    return CertificateView.model_validate(reply.result)


def openssl_purpose(
    directory: Path, ca: CAView, leaf: CertificateView, purpose: str
) -> bool:
    (directory / "ca.pem").write_text(ca.certificate_pem)
    (directory / "leaf.pem").write_text(leaf.certificate_pem)
    return (
        0
        == subprocess.run(
            [
                "openssl",
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                str(directory / "ca.pem"),
                str(directory / "leaf.pem"),
            ],
            capture_output=True,
            check=False,
        ).returncode
    )


async def test_server_profile_is_a_tls_server_certificate(
    bus: Bus, gateway: Gateway, tmp_path: Path
) -> None:
    """--profile server: openssl verify -purpose sslserver accepts it; the default
    (client) profile's certificate is refused for that purpose."""
    ca = await new_ca(bus)
    csr = openssl_pem_csr(tmp_path, "gw", "subjectAltName=DNS:gw.example,IP:10.0.0.1")
    server = await sign(bus, ca.name, csr, profile="server", validity_days=90)
    assert openssl_purpose(tmp_path, ca, server, "sslserver")
    client = await sign(bus, ca.name, openssl_pem_csr(tmp_path, "cl"))
    assert not openssl_purpose(tmp_path, ca, client, "sslserver")
    assert openssl_purpose(tmp_path, ca, client, "sslclient")


@pytest.mark.parametrize(
    ("addext", "fields", "code", "reason"),
    [
        ("subjectAltName=DNS:*.example.com", {}, ErrorCode.FORBIDDEN, "does not match"),
        ("subjectAltName=IP:10.0.0.1", {}, ErrorCode.FORBIDDEN, "kind ip"),
        (
            "subjectAltName=URI:https://x",
            {"profile": "server"},
            ErrorCode.FORBIDDEN,
            "kind uri",
        ),
        (None, {"validity_days": 500}, ErrorCode.FORBIDDEN, "accept capping"),
        (
            None,
            {"profile": "nope"},
            ErrorCode.NOT_FOUND,
            "no issuance profile named 'nope'",
        ),
    ],
    ids=["wildcard", "ip-in-client", "uri-in-server", "validity", "unknown-profile"],
)
async def test_profile_refusals(
    bus: Bus,
    gateway: Gateway,
    tmp_path: Path,
    *,
    addext: str | None,
    fields: dict[str, object],
    code: ErrorCode,
    reason: str,
) -> None:
    """What a profile does not allow is refused with its code and reason."""
    ca = await new_ca(bus)
    csr = openssl_pem_csr(tmp_path, "dev", *([addext] if addext else []))
    reply = await call(
        bus,
        SignCertificate.model_validate({"ca": ca.name, "csr_pem": csr} | fields),
    )
    assert reply.error is not None
    assert code is reply.error.code
    assert reason in reply.error.message


async def test_capped_validity_says_what_was_issued(
    bus: Bus, gateway: Gateway, tmp_path: Path
) -> None:
    """Asking 500 days under 'server' (398) with cap_validity: issued for 398 days."""
    ca = await new_ca(bus)
    view = await sign(
        bus,
        ca.name,
        openssl_pem_csr(tmp_path, "gw2", "subjectAltName=DNS:gw2.example"),
        profile="server",
        validity_days=500,
        cap_validity=True,
    )
    assert timedelta(days=398) == view.not_after - view.not_before


async def test_dms_profile_applies_to_its_enrollments(
    bus: Bus, gateway: Gateway, tmp_path: Path
) -> None:
    """A stored profile set on a DMS: its devices' CSRs must follow its SAN pattern
    (403 otherwise) and get its extended key usage, over HTTPS."""
    name = unique("plant")
    reply = await call(
        bus,
        CreateProfile(
            name=name,
            extended_key_usage=["client_auth", "server_auth"],
            san_patterns={SanKind.DNS: r"[a-z0-9-]+\.plant\.example"},
        ),
    )
    assert reply.ok, reply.error
    shown = await call(bus, GetProfile(name=name))
    assert name == ProfileView.model_validate(shown.result).name
    stage: Stage = await new_stage(bus, gateway, tmp_path)
    updated = await call(bus, UpdateDMSPolicy(name=stage.dms.name, profile=name))
    assert name == DMSView.model_validate(updated.result).profile

    outside = openssl_pem_csr(
        tmp_path, unique("dev"), "subjectAltName=DNS:x.other.example"
    )
    status, _, payload = await stage.est.enroll(
        stage.ca.name, outside.encode(), stage.dms_identity
    )
    assert 403 == status
    assert "does not match" in payload.decode()
    inside = openssl_pem_csr(
        tmp_path, unique("dev"), "subjectAltName=DNS:p1.plant.example"
    )
    status, _, payload = await stage.est.enroll(
        stage.ca.name, inside.encode(), stage.dms_identity
    )
    assert 200 == status, payload
    usage = single_certificate(payload).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH} == set(
        usage.value
    )


async def test_profile_and_dms_refusals(
    bus: Bus, gateway: Gateway, tmp_path: Path
) -> None:
    """A built-in or taken profile name is a conflict; a DMS naming an unknown profile
    is not_found and is not created."""
    built_in = await call(bus, CreateProfile(name="server"))
    assert built_in.error is not None
    assert ErrorCode.CONFLICT is built_in.error.code
    name = unique("dup")
    assert (await call(bus, CreateProfile(name=name))).ok
    again = await call(bus, CreateProfile(name=name))
    assert again.error is not None
    assert ErrorCode.CONFLICT is again.error.code
    ca = await new_ca(bus)
    _, csr = make_dms_identity(tmp_path, "x")
    missing = unique("missing")
    reply = await call(
        bus,
        CreateDMS(
            name=unique("dms"), authorized_cas=[ca.name], csr_pem=csr, profile=missing
        ),
    )
    assert reply.error is not None
    assert ErrorCode.NOT_FOUND is reply.error.code
    assert missing in reply.error.message


async def test_path_length(bus: Bus, gateway: Gateway) -> None:
    """A root with path length 1: its child gets 0 and may have no CA below it."""
    root = await new_ca(bus, path_length=1)
    child = await new_ca(bus, parent=root.name)
    constraint = x509.load_pem_x509_certificate(
        child.certificate_pem.encode()
    ).extensions.get_extension_for_class(x509.BasicConstraints)
    assert 0 == constraint.value.path_length
    reply = await call(bus, CreateCA(name=unique("grandchild"), parent=child.name))
    assert reply.error is not None
    assert ErrorCode.FORBIDDEN is reply.error.code
    assert "path length 0" in reply.error.message
    too_long = await call(
        bus, CreateCA(name=unique("wide"), parent=root.name, path_length=3)
    )
    assert too_long.error is not None
    assert "at most 0, not 3" in too_long.error.message
