"""The CSR of a BYO-CA ownership-verification certificate (AWS IoT developer guide,
"Register a CA certificate"): its subject CN is the account's registration code, and
the CA worker signs it with the CA's key, which never leaves the CA's engine.

The CSR's own key is made here, used once to sign the CSR (RFC 2986 §3: proof of
possession) and dropped: AWS only checks who issued the certificate.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["verification_csr"]


def verification_csr(registration_code: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, registration_code)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()
