"""TLS for the gateway: the server certificate (self-signed on first start when none is
configured) and a server context offering TLS 1.2 and 1.3 with optional client
certificates, whose trust anchors grow as CAs are created."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ServerCredentials", "server_context"]


class ServerCredentials:
    """Paths of the server certificate and key, created once when absent."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file

    @classmethod
    def load_or_create(
        cls, directory: Path, names: list[str], now: datetime | None = None
    ) -> ServerCredentials:
        cert_file, key_file = directory / "server.pem", directory / "server.key"
        if cert_file.exists() and key_file.exists():
            return cls(cert_file, key_file)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Several gateway processes may start together (EST_WORKERS): the first makes
        # the pair under the lock, the others then find it.
        with (directory / ".create.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if cert_file.exists() and key_file.exists():
                return cls(cert_file, key_file)
            cls._create(cert_file, key_file, names, now or datetime.now(UTC))
        return cls(cert_file, key_file)

    @staticmethod
    def _create(
        cert_file: Path, key_file: Path, names: list[str], now: datetime
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = []
        for name in names:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt_names.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=825))
            # RFC 6125 §6.4: clients match the SAN, never the CN.
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        # Written last and renamed into place: a process that sees it sees all of it.
        temporary = cert_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        temporary.replace(cert_file)


def server_context(
    credentials: ServerCredentials, *, session_tickets: int = 0
) -> ssl.SSLContext:
    """TLS 1.2+ server context asking for (not requiring) a client certificate.

    A client with no certificate may still fetch /cacerts (RFC 7030 §4.1.1); enrollment
    without one gets 401 from the application, which can say why. ``session_tickets``
    is how many tickets (RFC 8446 §4.6.1) a TLS 1.3 handshake ends with; with 0, TLS 1.2
    handshakes send none either (RFC 5077).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_cert_chain(credentials.cert_file, credentials.key_file)
    context.num_tickets = session_tickets
    if session_tickets == 0:
        context.options |= ssl.OP_NO_TICKET
    return context
