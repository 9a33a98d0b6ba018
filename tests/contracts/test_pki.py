"""The shared PKI rules: CSR loading, the CN identity, serials, names and reason codes."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.pki import (
    DEFAULT_SLOT,
    NAME_PATTERN,
    REASON_FLAGS,
    CSRRejected,
    DeviceIdentity,
    RevocationReason,
    device_identity,
    load_csr,
    serial_hex,
)


def _csr(*common_names: str) -> x509.CertificateSigningRequest:
    # Unvalidated: a client's CN may break ub-common-name (RFC 5280 Appendix A, 64),
    # which cryptography refuses to build by default.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)
            for cn in common_names
        ]
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )


def _tampered_der() -> bytes:
    der = bytearray(_csr("dev-1").public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    return bytes(der)


@pytest.mark.parametrize(
    ("common_name", "expected"),
    [
        ("dev-1", DeviceIdentity("dev-1", DEFAULT_SLOT)),
        ("tls:dev-1", DeviceIdentity("dev-1", "tls")),
        ("a.b_c-d:D3v.1_x-y", DeviceIdentity("D3v.1_x-y", "a.b_c-d")),
        ("d" * 64, DeviceIdentity("d" * 64, "default")),
    ],
    ids=[
        "bare device id",
        "slot and device",
        "every allowed character",
        "64 chars",
    ],
)
def test_device_identity(common_name: str, expected: DeviceIdentity) -> None:
    """The CN is ``[slot:]device-id``; without a slot it is the default slot."""
    actual = device_identity(_csr(common_name))

    assert expected == actual


@pytest.mark.parametrize(
    "common_names",
    [
        (":dev-1",),
        ("tls:",),
        ("a:b:c",),
        ("dev 1",),
        ("-dev",),
        ("..",),
        ("tls:.",),
        ("dev/1",),
        ("dév",),
        ("d" * 65,),
        (f"{'s' * 65}:dev-1",),
        ("dev-1", "dev-2"),
        (),
    ],
    ids=[
        "empty slot",
        "empty device id",
        "two colons",
        "space",
        "leading dash",
        "dot-dot",
        "dot",
        "slash",
        "non-ascii",
        "65 chars",
        "65-char slot",
        "two common names",
        "no common name",
    ],
)
# cryptography warns when it builds or reads a CN longer than ub-common-name.
@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
def test_device_identity_refusals(common_names: tuple[str, ...]) -> None:
    """Anything but one CN of the name charset, 1 to 64 each, is refused."""
    with pytest.raises(CSRRejected):
        device_identity(_csr(*common_names))


def test_device_identity_refusal_names_the_common_name() -> None:
    """The one-line reason quotes the CN that was refused."""
    with pytest.raises(CSRRejected, match=r"'dev 1' is not \[slot:\]device-id"):
        device_identity(_csr("dev 1"))


def test_load_csr_accepts_pem_and_der() -> None:
    """RFC 7030 §4.2.1 bodies are DER; the bus carries PEM: both load."""
    csr = _csr("dev-1")

    from_pem = load_csr(csr.public_bytes(serialization.Encoding.PEM))
    from_der = load_csr(csr.public_bytes(serialization.Encoding.DER))

    assert (csr, csr) == (from_pem, from_der)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"garbage", "the CSR is not a PKCS#10 request"),
        (b"", "the CSR is not a PKCS#10 request"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "not a PKCS#10 request"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "not a PKCS#10 request",
        ),
        (_tampered_der(), "the CSR signature does not verify"),
    ],
    ids=["garbage", "empty", "broken PEM", "empty PEM", "bad signature"],
)
def test_load_csr_refuses_with_one_line(body: bytes, reason: str) -> None:
    """What is not a well-signed PKCS#10 request is refused with a one-line reason
    (RFC 2986 §4.2: a failing self-signature proves no possession)."""
    with pytest.raises(CSRRejected, match=reason) as caught:
        load_csr(body)

    assert "\n" not in str(caught.value)


def test_load_csr_may_leave_the_signature_to_the_signer() -> None:
    """Without the signature check a tampered CSR still parses (the CA checks it)."""
    csr = load_csr(_tampered_der(), check_signature=False)

    assert DeviceIdentity("dev-1", "default") == device_identity(csr)


@pytest.mark.parametrize(
    ("serial", "expected"),
    [(1, "01"), (10, "0a"), (0xABC, "0abc"), (255, "ff"), (2**128 - 1, "f" * 32)],
)
def test_serial_hex(serial: int, expected: str) -> None:
    """Lower-case hex, an even number of digits: as schema ``ca`` stores serials."""
    assert expected == serial_hex(serial)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("LAMASSU-DMS-MANAGER", True),
        ("a.b_c-d", True),
        ("x" * 64, True),
        ("", False),
        ("x" * 65, False),
        ("-a", False),
        (".a", False),
        ("a:b", False),
        ("a/b", False),
        ("a\n", False),
    ],
)
def test_name_pattern(name: str, valid: bool) -> None:
    """Names start with a letter or digit, then letters, digits and ._- , 64 at most."""
    assert valid == bool(re.fullmatch(NAME_PATTERN, name))


def test_every_reason_but_unspecified_has_a_flag() -> None:
    """RFC 5280 §5.3.1: unspecified is written as no reason code; the rest map 1:1."""
    expected = set(RevocationReason) - {RevocationReason.UNSPECIFIED}

    assert (expected, len(expected)) == (
        set(REASON_FLAGS),
        len(set(REASON_FLAGS.values())),
    )
