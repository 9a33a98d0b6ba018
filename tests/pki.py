"""Test helpers: throwaway keys and CSRs built in memory, and a bus call shortcut."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel

from contracts.envelope import new_message
from contracts.errors import Reply
from runtime.bus import Bus


def make_csr(
    common_name: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    dns_names: tuple[str, ...] = (),
    extra_extensions: tuple[x509.ExtensionType, ...] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
            critical=False,
        )
    for extension in extra_extensions:
        builder = builder.add_extension(extension, critical=False)
    return key, builder.sign(key, hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def tampered_csr_pem(common_name: str) -> str:
    """A well-formed CSR whose signature does not verify (one signature byte flipped)."""
    _, csr = make_csr(common_name)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    return (
        x509.load_der_x509_csr(bytes(der))
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


async def call(bus: Bus, request: BaseModel, timeout: float = 15) -> Reply:
    message = new_message(
        type_=request.TYPE,  # type: ignore[attr-defined]
        source="tests",
        data=request,
        now=datetime.now(UTC),
    )
    return await bus.request(message, timeout=timeout)
