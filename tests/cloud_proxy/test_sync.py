"""The pure rules of the cloud proxy: targets, steps, drift, backoff, settings (no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloud_proxy.ownership import verification_csr
from cloud_proxy.settings import Settings
from cloud_proxy.sync import (
    AttachPolicy,
    AttachPrincipal,
    CATarget,
    CertificateTarget,
    Connection,
    EnsureThing,
    RegisterCA,
    RegisterCertificate,
    RemoteState,
    RemoteStatus,
    RemoveCertificate,
    SetCAStatus,
    SetCertificateStatus,
    backoff,
    certificate_id,
    desired_certificate_status,
    jitp_template,
    out_of_step,
    plan_ca,
    plan_certificate,
    thing_name,
)
from contracts.ca import CertificateStatus
from contracts.cloud import ConnectionMode
from lamassu_cli.up import SERVICES, configured_services
from runtime.settings import SettingsError, load_settings

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _pem(common_name: str) -> str:
    """A self-signed certificate: only its bytes matter to these rules."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


CA_PEM = _pem("root")
DEVICE_PEM = _pem("sensor.1")
REGISTER = Connection("root", "aws-main", ConnectionMode.REGISTER, "p", "g")


def target(**changes: object) -> CertificateTarget:
    base = CertificateTarget(
        connection=REGISTER,
        serial="0a",
        device_id="sensor.1",
        certificate_pem=DEVICE_PEM,
        ca_certificate_pem=CA_PEM,
        status=CertificateStatus.ACTIVE,
        replaced=False,
        decommissioned=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_certificate_id_is_sha256_of_der() -> None:
    """AWS names a certificate by the SHA-256 of its DER encoding."""
    der = x509.load_pem_x509_certificate(DEVICE_PEM.encode()).public_bytes(
        serialization.Encoding.DER
    )
    assert hashlib.sha256(der).hexdigest() == certificate_id(DEVICE_PEM)


def test_thing_names_keep_device_ids_apart() -> None:
    """Dots (not allowed in thing names) become colons (never in device ids)."""
    assert "sensor:1" == thing_name("sensor.1")
    assert thing_name("a.b") != thing_name("a_b")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, RemoteStatus.ACTIVE),
        ({"status": CertificateStatus.ABOUT_TO_EXPIRE}, RemoteStatus.ACTIVE),
        ({"replaced": True}, RemoteStatus.INACTIVE),
        ({"status": CertificateStatus.EXPIRED}, RemoteStatus.INACTIVE),
        ({"status": CertificateStatus.REVOKED}, RemoteStatus.REVOKED),
        ({"status": CertificateStatus.REVOKED, "replaced": True}, RemoteStatus.REVOKED),
        ({"decommissioned": True}, None),
    ],
    ids=[
        "active",
        "about",
        "replaced",
        "expired",
        "revoked",
        "revoked-replaced",
        "gone",
    ],
)
def test_desired_certificate_status(
    changes: dict[str, object], expected: RemoteStatus | None
) -> None:
    """What AWS should say of a certificate, from the PKI's view of it."""
    assert expected == desired_certificate_status(target(**changes))


def test_new_certificate_is_registered_with_thing_and_policy() -> None:
    """Unknown to AWS: register with the CA, thing in its group, principal, policy."""
    assert [
        RegisterCertificate(RemoteStatus.ACTIVE, with_ca=True),
        EnsureThing("sensor:1", "g"),
        AttachPrincipal("sensor:1"),
        AttachPolicy("p"),
    ] == plan_certificate(target(), None)


def test_known_certificate_only_gets_its_status_and_attachments() -> None:
    """Known: no second registration; attachments are reasserted (idempotent)."""
    steps = plan_certificate(target(replaced=True), "ACTIVE")
    assert [SetCertificateStatus(RemoteStatus.INACTIVE)] == steps
    assert [
        EnsureThing("sensor:1", "g"),
        AttachPrincipal("sensor:1"),
        AttachPolicy("p"),
    ] == plan_certificate(target(), "ACTIVE")


def test_revoked_unknown_certificate_is_registered_revoked() -> None:
    """So that just-in-time registration can never activate it later."""
    assert [
        RegisterCertificate(RemoteStatus.REVOKED, with_ca=True)
    ] == plan_certificate(target(status=CertificateStatus.REVOKED), None)


def test_decommissioned_is_removed() -> None:
    assert [RemoveCertificate("sensor:1", present=True)] == plan_certificate(
        target(decommissioned=True), "REVOKED"
    )
    assert [RemoveCertificate("sensor:1", present=False)] == plan_certificate(
        target(decommissioned=True), None
    )


def test_modes() -> None:
    """sni-only registers without the CA; jitp leaves live certificates to AWS."""
    sni = replace(REGISTER, mode=ConnectionMode.SNI_ONLY)
    assert (
        RegisterCertificate(RemoteStatus.ACTIVE, with_ca=False)
        == (plan_certificate(target(connection=sni), None)[0])
    )
    jitp = replace(REGISTER, mode=ConnectionMode.JITP)
    assert [] == plan_certificate(target(connection=jitp), None)
    assert [] == plan_certificate(target(connection=jitp), "ACTIVE")
    assert [SetCertificateStatus(RemoteStatus.REVOKED)] == plan_certificate(
        target(connection=jitp, status=CertificateStatus.REVOKED), "ACTIVE"
    )


def test_plan_ca() -> None:
    """Registration with a verification certificate unless SNI_ONLY; status follows."""
    ca = CATarget(REGISTER, CA_PEM, CertificateStatus.ACTIVE)
    assert [RegisterCA(RemoteStatus.ACTIVE, True, False, None)] == plan_ca(ca, None)
    assert [] == plan_ca(ca, "ACTIVE")
    revoked = replace(ca, status=CertificateStatus.REVOKED)
    assert [SetCAStatus(RemoteStatus.INACTIVE)] == plan_ca(revoked, "ACTIVE")
    sni = replace(ca, connection=replace(REGISTER, mode=ConnectionMode.SNI_ONLY))
    assert [RegisterCA(RemoteStatus.ACTIVE, False, True, None)] == plan_ca(sni, None)
    jitp = replace(ca, connection=replace(REGISTER, mode=ConnectionMode.JITP))
    (step,) = plan_ca(jitp, None)
    assert isinstance(step, RegisterCA)
    assert step.template == jitp_template("p", "g")


def test_jitp_template_names_thing_after_cn() -> None:
    template = json.loads(jitp_template("p", "g"))
    thing = template["Resources"]["thing"]["Properties"]
    assert {"Ref": "AWS::IoT::Certificate::CommonName"} == thing["ThingName"]
    assert ["g"] == thing["ThingGroups"]
    assert "p" == template["Resources"]["policy"]["Properties"]["PolicyName"]
    assert "policy" not in json.loads(jitp_template(None, None))["Resources"]


def test_out_of_step() -> None:
    """Reconciliation flags what AWS lists differently from the target, only that."""
    cid = certificate_id(DEVICE_PEM)
    in_step = RemoteState({}, {cid: "ACTIVE"}, frozenset({"sensor:1"}))
    assert not out_of_step(target(), in_step)
    assert out_of_step(target(), replace(in_step, things=frozenset()))
    assert out_of_step(target(), replace(in_step, certificates={cid: "INACTIVE"}))
    assert out_of_step(target(), replace(in_step, certificates={}))
    assert out_of_step(target(decommissioned=True), in_step)
    gone = RemoteState({}, {}, frozenset())
    assert not out_of_step(target(decommissioned=True), gone)
    ca = CATarget(REGISTER, CA_PEM, CertificateStatus.ACTIVE)
    assert out_of_step(ca, gone)
    assert not out_of_step(
        ca, RemoteState({certificate_id(CA_PEM): "ACTIVE"}, {}, frozenset())
    )


def test_backoff_doubles_and_is_capped() -> None:
    assert [1, 2, 4, 8, 10] == [
        (backoff(n, NOW, 1, 10) - NOW).total_seconds() for n in range(1, 6)
    ]


def test_verification_csr_carries_the_code() -> None:
    """The CN is the registration code; the CSR is signed by its own key."""
    csr = x509.load_pem_x509_csr(verification_csr("ab" * 32).encode())
    assert csr.is_signature_valid
    assert "CN=" + "ab" * 32 == csr.subject.rfc4514_string()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"CLOUD_CONNECTORS": "aws main"}, "CLOUD_CONNECTORS"),
        ({"CLOUD_CONNECTORS": "a,a"}, "CLOUD_CONNECTORS"),
        (
            {"CLOUD_RECONCILE_SCHEDULE": "every now and then"},
            "CLOUD_RECONCILE_SCHEDULE",
        ),
        ({"CLOUD_AWS_ENDPOINT_URL": "not a url"}, "CLOUD_AWS_ENDPOINT_URL"),
        ({"CLOUD_AWS_REGION": "moon"}, "CLOUD_AWS_REGION"),
        ({"CLOUD_RETRY_BASE_SECONDS": "0"}, "CLOUD_RETRY_BASE_SECONDS"),
    ],
    ids=["space", "twice", "schedule", "endpoint", "region", "retry"],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], variable: str
) -> None:
    """A wrong setting fails at start with one line naming it."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings)
    assert str(caught.value).startswith(f"{variable}:")
    assert "\n" not in str(caught.value)


def test_connectors_and_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_CONNECTORS", " aws-main, aws-eu=eu-profile ,")
    assert {"aws-main": None, "aws-eu": "eu-profile"} == load_settings(
        Settings
    ).connectors()
    monkeypatch.setenv("CLOUD_CONNECTORS", "")
    assert {} == load_settings(Settings).connectors()


def test_up_starts_the_proxy_only_when_configured() -> None:
    """No connector: `lamassu up` (and `make run`) start what they always did."""
    assert SERVICES == configured_services({})
    assert SERVICES == configured_services({"CLOUD_CONNECTORS": " "})
    assert (*SERVICES, "cloud_proxy") == configured_services(
        {"CLOUD_CONNECTORS": "aws-main"}
    )


def test_readme_iam_policy_grants_every_call_the_provider_makes() -> None:
    """The documented least-privilege policy is valid JSON and names exactly the AWS
    IoT actions cloud_proxy/aws.py calls, so the two cannot drift apart."""
    root = Path(__file__).resolve().parents[2]
    source = (root / "cloud_proxy" / "aws.py").read_text()
    calls = set(re.findall(r"self\._client\.([a-z_]+)\(", source))
    calls |= set(re.findall(r'self\._pages\(\s*"([a-z_]+)"', source))
    calls -= {"get_paginator"}

    def action(call: str) -> str:
        return "iot:" + "".join(
            "CA" if word == "ca" else word.capitalize() for word in call.split("_")
        )

    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Cloud connectors") :]
    block = section[
        section.index("```json") + len("```json") : section.index(
            "```\n", section.index("```json") + 7
        )
    ]
    policy = json.loads(block)
    granted = {
        name
        for statement in policy["Statement"]
        for name in (
            [statement["Action"]]
            if isinstance(statement["Action"], str)
            else statement["Action"]
        )
        if name.startswith("iot:")
    }
    assert {action(call) for call in calls} == granted
