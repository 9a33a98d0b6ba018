"""Tests of the pure enrollment authorization, on certificates built in memory."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.dms import DMSStatus
from contracts.errors import ErrorCode
from dms_worker.authorization import (
    Decision,
    DMSRecord,
    RenewalPolicy,
    authorize_enrollment,
    authorize_owner,
    authorize_reenrollment,
    authorize_renewal_window,
    certificate_serial,
)
from tests.dms_worker.throwaway import DAY, NOW, cn_name, issued, self_signed_ca

DEVICE_SAN: tuple[x509.GeneralName, ...] = (
    x509.DNSName("dev-1.example"),
    x509.DNSName("dev-1.local"),
)
ALLOWED = Decision.allow()


# --- a throwaway PKI -----------------------------------------------------------------


def _csr(
    common_name: str, san: Sequence[x509.GeneralName] | None
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(cn_name(common_name))
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(san), critical=False
        )
    return builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    dms_manager: x509.Certificate
    device_ca: x509.Certificate
    certificates: Mapping[str, x509.Certificate]


@functools.cache
def pki() -> Pki:
    """LAMASSU-DMS-MANAGER, a device CA, impostors of both, and their certificates."""
    manager = self_signed_ca("LAMASSU-DMS-MANAGER")
    device_ca = self_signed_ca("device-ca")
    other_ca = self_signed_ca("OTHER-CA")
    fake_manager = self_signed_ca("LAMASSU-DMS-MANAGER")  # same name, another key
    fake_device_ca = self_signed_ca("device-ca")
    device = functools.partial(issued, device_ca, "default:dev-1", san=DEVICE_SAN)
    return Pki(
        dms_manager=manager.certificate,
        device_ca=device_ca.certificate,
        certificates={
            "dms": issued(manager, "dms-1", 0x0A01),
            "dms-expired": issued(manager, "dms-1", 0x0A02, not_after=NOW - DAY),
            "dms-not-yet-valid": issued(manager, "dms-1", 0x0A03, not_before=NOW + DAY),
            "dms-foreign": issued(other_ca, "dms-1", 0x0A04),
            "dms-forged": issued(fake_manager, "dms-1", 0x0A05),
            "dms-ends-now": issued(manager, "dms-1", 0x0A06, not_after=NOW),
            "dms-starts-now": issued(manager, "dms-1", 0x0A07, not_before=NOW),
            "dms-of-revoked-dms": issued(manager, "dms-2", 0x0A08),
            "dms-unknown": issued(manager, "dms-9", 0x0A09),
            "device": device(0x0B01),
            "device-expired": device(0x0B02, not_after=NOW - DAY),
            "device-not-yet-valid": device(0x0B03, not_before=NOW + DAY),
            "device-forged": issued(
                fake_device_ca, "default:dev-1", 0x0B04, san=DEVICE_SAN
            ),
        },
    )


def _dms(
    serial: str, *, name: str = "dms-1", status: DMSStatus = DMSStatus.ACTIVE
) -> DMSRecord:
    return DMSRecord(name, status, frozenset({"device-ca"}), serial)


# What the DMS store answers when asked for the DMS holding a certificate serial.
DMS_BY_SERIAL = {
    record.certificate_serial: record
    for record in [
        _dms("0a01"),
        _dms("0a02"),
        _dms("0a03"),
        _dms("0a04"),
        _dms("0a05"),
        _dms("0a06"),
        _dms("0a07"),
        _dms("0a08", name="dms-2", status=DMSStatus.REVOKED),
    ]
}


def _forbidden(reason: str) -> Decision:
    return Decision.refuse(ErrorCode.FORBIDDEN, reason)


# --- enrollment ----------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollCase:
    chain: list[str] = field(default_factory=lambda: ["dms"])
    label: str = "device-ca"
    revoked: frozenset[str] = frozenset()
    expected: Decision = ALLOWED


ENROLL_CASES = {
    "allowed": EnrollCase(),
    "certificates after the leaf are ignored": EnrollCase(chain=["dms", "dms-forged"]),
    "valid until exactly now": EnrollCase(chain=["dms-ends-now"]),
    "valid from exactly now": EnrollCase(chain=["dms-starts-now"]),
    "no client certificate": EnrollCase(
        chain=[],
        expected=Decision.refuse(
            ErrorCode.UNAUTHORIZED, "no client certificate was presented"
        ),
    ),
    "issued by another CA": EnrollCase(
        chain=["dms-foreign"],
        expected=_forbidden(
            "the client certificate was issued by CN=OTHER-CA, not by LAMASSU-DMS-MANAGER"
        ),
    ),
    "signed by an impostor with the same name": EnrollCase(
        chain=["dms-forged"],
        expected=_forbidden(
            "the client certificate's signature does not verify with LAMASSU-DMS-MANAGER"
        ),
    ),
    "device certificate instead of a DMS one": EnrollCase(
        chain=["device"],
        expected=_forbidden(
            "the client certificate was issued by CN=device-ca, not by LAMASSU-DMS-MANAGER"
        ),
    ),
    "expired": EnrollCase(
        chain=["dms-expired"],
        expected=_forbidden(
            "the client certificate expired at 2030-05-31T12:00:00+00:00"
        ),
    ),
    "not yet valid": EnrollCase(
        chain=["dms-not-yet-valid"],
        expected=_forbidden(
            "the client certificate is not valid before 2030-06-02T12:00:00+00:00"
        ),
    ),
    "certificate revoked": EnrollCase(
        revoked=frozenset({"0a01"}),
        expected=_forbidden("the client certificate 0a01 is revoked"),
    ),
    "expiry is reported before revocation": EnrollCase(
        chain=["dms-expired"],
        revoked=frozenset({"0a02"}),
        expected=_forbidden(
            "the client certificate expired at 2030-05-31T12:00:00+00:00"
        ),
    ),
    "no DMS holds the certificate": EnrollCase(
        chain=["dms-unknown"],
        expected=_forbidden("no DMS holds the client certificate 0a09"),
    ),
    "DMS revoked": EnrollCase(
        chain=["dms-of-revoked-dms"],
        expected=_forbidden("DMS 'dms-2' is revoked"),
    ),
    "label not in the allow-list": EnrollCase(
        label="other-ca",
        expected=_forbidden("CA 'other-ca' is not in the allow-list of DMS 'dms-1'"),
    ),
}


@pytest.mark.parametrize("case", ENROLL_CASES.values(), ids=list(ENROLL_CASES))
def test_authorize_enrollment(case: EnrollCase) -> None:
    """A DMS may enroll only with a valid, unrevoked manager-issued certificate and an allowed CA."""
    chain = [pki().certificates[name] for name in case.chain]
    dms = DMS_BY_SERIAL.get(certificate_serial(chain[0])) if chain else None

    actual = authorize_enrollment(
        chain,
        dms_manager_ca=pki().dms_manager,
        dms=dms,
        label=case.label,
        revoked_serials=case.revoked,
        now=NOW,
    )

    assert case.expected == actual


def _der(name: str) -> bytes:
    return pki().certificates[name].public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("presented", "on_record", "expected"),
    [
        ("dms", "dms", ALLOWED),
        # The caller vouches for the bytes on record: their signature is not checked.
        ("dms-forged", "dms-forged", ALLOWED),
        (
            "dms-forged",
            "dms",
            _forbidden(
                "the client certificate's signature does not verify with"
                " LAMASSU-DMS-MANAGER"
            ),
        ),
        (
            "dms-expired",
            "dms-expired",
            _forbidden("the client certificate expired at 2030-05-31T12:00:00+00:00"),
        ),
    ],
    ids=["as issued", "bytes on record", "other bytes", "as issued but expired"],
)
def test_certificate_on_record_skips_only_the_signature(
    presented: str, on_record: str, expected: Decision
) -> None:
    """A leaf equal to the DMS certificate on record is not verified again; every other
    check still applies, and other bytes are verified."""
    leaf = pki().certificates[presented]
    serial = certificate_serial(leaf)
    dms = DMSRecord("dms-1", DMSStatus.ACTIVE, {"device-ca"}, serial, _der(on_record))

    actual = authorize_enrollment(
        [leaf],
        dms_manager_ca=pki().dms_manager,
        dms=dms,
        label="device-ca",
        revoked_serials=frozenset(),
        now=NOW,
    )

    assert expected == actual


def test_enrollment_refuses_a_record_of_another_certificate() -> None:
    """A DMS record whose certificate serial is not the leaf's does not authorize it."""
    expected = _forbidden("no DMS holds the client certificate 0a01")

    actual = authorize_enrollment(
        [pki().certificates["dms"]],
        dms_manager_ca=pki().dms_manager,
        dms=_dms("0a06"),
        label="device-ca",
        revoked_serials=frozenset(),
        now=NOW,
    )

    assert expected == actual


# --- re-enrollment -------------------------------------------------------------------


@dataclass(frozen=True)
class ReenrollCase:
    presented: str | None = "device"
    csr_subject: str = "default:dev-1"
    csr_san: Sequence[x509.GeneralName] | None = field(
        default_factory=lambda: DEVICE_SAN
    )
    decommissioned: bool = False
    revoked: frozenset[str] = frozenset()
    allow_expired: bool = False
    expected: Decision = ALLOWED


REENROLL_CASES = {
    "allowed": ReenrollCase(),
    "SAN entries in another order": ReenrollCase(csr_san=DEVICE_SAN[::-1]),
    "expired, with expired renewal allowed": ReenrollCase(
        presented="device-expired", allow_expired=True
    ),
    "no client certificate": ReenrollCase(
        presented=None,
        expected=Decision.refuse(
            ErrorCode.UNAUTHORIZED, "no client certificate was presented"
        ),
    ),
    "DMS certificate instead of the device's": ReenrollCase(
        presented="dms",
        expected=_forbidden(
            "the client certificate was issued by CN=LAMASSU-DMS-MANAGER, not by device-ca"
        ),
    ),
    "signed by an impostor of the CA": ReenrollCase(
        presented="device-forged",
        expected=_forbidden(
            "the client certificate's signature does not verify with device-ca"
        ),
    ),
    "expired, refused by default": ReenrollCase(
        presented="device-expired",
        expected=_forbidden(
            "the client certificate expired at 2030-05-31T12:00:00+00:00"
        ),
    ),
    "not yet valid, even with expired renewal allowed": ReenrollCase(
        presented="device-not-yet-valid",
        allow_expired=True,
        expected=_forbidden(
            "the client certificate is not valid before 2030-06-02T12:00:00+00:00"
        ),
    ),
    "certificate revoked": ReenrollCase(
        revoked=frozenset({"0b01"}),
        expected=_forbidden("the client certificate 0b01 is revoked"),
    ),
    "CSR subject differs": ReenrollCase(
        csr_subject="default:dev-2",
        expected=_forbidden(
            "the CSR subject CN=default:dev-2 differs from the client certificate's"
            " CN=default:dev-1"
        ),
    ),
    "CSR adds a SAN entry": ReenrollCase(
        csr_san=[*DEVICE_SAN, x509.DNSName("evil.example")],
        expected=_forbidden(
            "the CSR subjectAltName differs from the client certificate's"
        ),
    ),
    "CSR drops the SAN": ReenrollCase(
        csr_san=None,
        expected=_forbidden(
            "the CSR subjectAltName differs from the client certificate's"
        ),
    ),
    "device decommissioned": ReenrollCase(
        decommissioned=True,
        expected=_forbidden("device 'dev-1' is decommissioned"),
    ),
}


@pytest.mark.parametrize("case", REENROLL_CASES.values(), ids=list(REENROLL_CASES))
def test_authorize_reenrollment(case: ReenrollCase) -> None:
    """A device renews only with its valid current certificate and an identical subject and SAN."""
    presented = None if case.presented is None else pki().certificates[case.presented]

    actual = authorize_reenrollment(
        presented,
        csr=_csr(case.csr_subject, case.csr_san),
        issuing_ca=pki().device_ca,
        device_decommissioned=case.decommissioned,
        revoked_serials=case.revoked,
        now=NOW,
        allow_expired=case.allow_expired,
    )

    assert case.expected == actual


@pytest.mark.parametrize(
    ("serial", "expected"),
    [(0x1234, "1234"), (0xA01, "0a01"), (0xFF, "ff"), (1, "01")],
    ids=["even", "odd gets a leading zero", "one octet", "smallest"],
)
def test_certificate_serial(serial: int, expected: str) -> None:
    """Serials are lower-case hex with an even number of digits, as the store keeps them."""
    certificate = issued(self_signed_ca("serial-ca"), "leaf", serial)

    actual = certificate_serial(certificate)

    assert expected == actual


@pytest.mark.parametrize(
    ("dms", "owner", "allowed"),
    [("dms-a", "dms-a", True), ("dms-b", "dms-a", False)],
    ids=["owner", "another-dms"],
)
def test_authorize_owner(dms: str, owner: str, allowed: bool) -> None:
    """Only the owning DMS enrolls a device; the refusal names the owner and the rule."""
    decision = authorize_owner("pump-1", dms=dms, owner=owner)
    assert allowed == decision.allowed
    if not allowed:
        assert ErrorCode.FORBIDDEN is decision.code
        assert "belongs to DMS 'dms-a', not 'dms-b'" in decision.reason
        assert "registered or first enrolled" in decision.reason


@pytest.mark.parametrize(
    ("window_days", "days_left", "allowed"),
    [(0, 300, True), (30, 31, False), (30, 30, True), (30, 1, True)],
    ids=["any-time", "day-before-window", "window-opens", "inside"],
)
def test_authorize_renewal_window(
    window_days: int,
    days_left: int,
    allowed: bool,
) -> None:
    """Re-enrollment opens ``window_days`` before expiry (0: any time)."""
    not_after = NOW + days_left * DAY
    presented = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(not_after)
        .sign(_KEY, hashes.SHA256())
    )
    decision = authorize_renewal_window(
        presented, policy=RenewalPolicy(window_days), dms="dms-a", now=NOW
    )
    assert allowed == decision.allowed
    if not allowed:
        assert "re-enrollment opens 30 days before expiry" in decision.reason
        assert "'dms-a'" in decision.reason


_KEY = ec.generate_private_key(ec.SECP256R1())
