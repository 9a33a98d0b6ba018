"""The gateway's only state: the CAs it knows, fed by ``ca.list`` at start and by
``ca.create`` / ``ca.status.update`` events after. It answers /cacerts and grows the TLS
trust anchors for client certificates."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import CAView, CertificateStatus

__all__ = ["KnownCA", "TrustStore"]


@dataclass(frozen=True, slots=True)
class KnownCA:
    view: CAView
    certificate: x509.Certificate


class TrustStore:
    """CAs by name; adding one also trusts it for TLS client certificates."""

    def __init__(self, context: ssl.SSLContext, bundle_file: Path) -> None:
        self._context = context
        self._bundle_file = bundle_file
        self._cas: dict[str, KnownCA] = {}

    def add(self, view: CAView) -> None:
        """Learn a CA (or its new status); idempotent, as events may repeat."""
        known = self._cas.get(view.name)
        if known is not None:
            self._cas[view.name] = KnownCA(view, known.certificate)
            return
        certificate = x509.load_pem_x509_certificate(view.certificate_pem.encode())
        self._cas[view.name] = KnownCA(view, certificate)
        # Loading into a live context affects handshakes from now on (OpenSSL X509_STORE).
        self._context.load_verify_locations(cadata=view.certificate_pem)
        self._write_bundle()

    def get(self, name: str) -> KnownCA | None:
        return self._cas.get(name)

    def refusal(self, leaf: x509.Certificate, now: datetime) -> str | None:
        """Why a client certificate is no longer trusted: its CA (known by subject) was
        revoked or has expired since the TLS layer was told to trust it (OpenSSL keeps
        a trust anchor once loaded, so this is checked per request, from the latest
        ca.status.update)."""
        for known in self._cas.values():
            if known.certificate.subject != leaf.issuer:
                continue
            view = known.view
            if view.status is CertificateStatus.REVOKED:
                return f"the client certificate was issued by CA {view.name!r}, which is revoked"
            if view.status is CertificateStatus.EXPIRED or view.not_after <= now:
                return f"the client certificate was issued by CA {view.name!r}, which has expired"
        return None

    def chain(self, name: str) -> list[x509.Certificate]:
        """The CA's certificate and its parents up to the self-signed root (RFC 7030 §4.1.3)."""
        chain: list[x509.Certificate] = []
        current = self._cas.get(name)
        while current is not None and len(chain) < 16:
            chain.append(current.certificate)
            parent = current.view.parent
            current = self._cas.get(parent) if parent else None
        return chain

    def _write_bundle(self) -> None:
        """Publish the client-certificate trust anchors for operators to inspect."""
        pem = b"".join(
            ca.certificate.public_bytes(serialization.Encoding.PEM)
            for ca in self._cas.values()
        )
        # One temporary file per process: gateway processes share the directory.
        temporary = self._bundle_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(pem)
        temporary.replace(self._bundle_file)
