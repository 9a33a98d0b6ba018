"""Tests of the pure CSR checks of enrollment: proof of possession and the CN identity."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dms_worker.authorization import (
    CSRRejected,
    DeviceIdentity,
    device_identity,
    load_csr,
)


def _csr(*common_names: str) -> x509.CertificateSigningRequest:
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names]
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("common_name", "expected"),
    [
        ("dev-1", DeviceIdentity("dev-1", "default")),
        ("tls:dev-1", DeviceIdentity("dev-1", "tls")),
        ("a.b_c-d:D3v.1_x-y", DeviceIdentity("D3v.1_x-y", "a.b_c-d")),
        ("d" * 64, DeviceIdentity("d" * 64, "default")),
    ],
    ids=["bare device id", "slot and device", "every allowed character", "64 chars"],
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
        ("dev-1", "dev-2"),
        (),
    ],
    ids=[
        "empty slot",
        "empty device id",
        "two colons",
        "space",
        "leading dash",
        "two common names",
        "no common name",
    ],
)
def test_device_identity_refusals(common_names: tuple[str, ...]) -> None:
    """Anything but one CN of the device-id charset is refused as invalid."""
    with pytest.raises(CSRRejected):
        device_identity(_csr(*common_names))


def test_load_csr_accepts_pem_and_der() -> None:
    """RFC 7030 §4.2.1 bodies are DER; the bus carries PEM: both load."""
    csr = _csr("dev-1")

    from_pem = load_csr(csr.public_bytes(serialization.Encoding.PEM))
    from_der = load_csr(csr.public_bytes(serialization.Encoding.DER))

    assert (csr, csr) == (from_pem, from_der)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"garbage", "not a PKCS#10 request"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "not a PKCS#10 request"),
    ],
    ids=["garbage", "broken PEM"],
)
def test_load_csr_refuses_garbage(body: bytes, reason: str) -> None:
    """What is not PKCS#10 is refused with one line."""
    with pytest.raises(CSRRejected, match=reason):
        load_csr(body)


def test_load_csr_refuses_a_bad_signature() -> None:
    """RFC 2986 §4.2: a CSR whose self-signature fails proves no possession."""
    der = bytearray(_csr("dev-1").public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01

    with pytest.raises(CSRRejected, match="signature does not verify"):
        load_csr(bytes(der))


def test_load_csr_may_leave_the_signature_to_the_signer() -> None:
    """Without the signature check a tampered CSR still parses (the CA checks it)."""
    der = bytearray(_csr("dev-1").public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01

    csr = load_csr(bytes(der), check_signature=False)

    assert DeviceIdentity("dev-1", "default") == device_identity(csr)
