"""Settings of the EST gateway (``EST_*``) plus the shared bus, log and listener settings."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from est_gateway.proxies import fingerprint
from runtime.admin import AdminSettings
from runtime.settings import BusSettings, EstListenerSettings, LogSettings

__all__ = ["Settings"]


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BusSettings, LogSettings, AdminSettings, EstListenerSettings):
    est_host: str = "0.0.0.0"  # noqa: S104 - a server for devices on the network
    # Session tickets per handshake (TLS 1.3; TLS 1.2 gets one or none). Making them is
    # about a quarter of a handshake's server CPU, spent for nothing when clients come
    # back months later (an enrollment), long after a ticket expires (OpenSSL: 2 h).
    est_tls_session_tickets: int = Field(default=0, ge=0, le=8)
    # The label served by /.well-known/est/<operation> (RFC 7030 §3.2.2).
    est_default_label: str | None = None
    # How long a request waits for the pipeline before answering 202 (RFC 7030 §4.2.3).
    est_wait_seconds: float = Field(default=10.0, gt=0, le=300)
    est_retry_after_seconds: int = Field(default=5, ge=1, le=3600)
    est_max_body_bytes: int = Field(default=65536, ge=1024, le=10 * 1024 * 1024)
    # A connection's limits: a TLS handshake, an idle connection (before, between and
    # while receiving a request's headers), and a request body each get this long; at
    # most this many connections are open at once.
    est_handshake_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    est_idle_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)
    est_read_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    est_max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    # Client-certificate headers are honoured only from these proxy addresses.
    est_trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A proxy is identified by its own TLS client certificate: its SHA-256
    # fingerprint, or the CA (by name) that issued it (est_gateway.proxies).
    est_trusted_proxy_certs: Annotated[list[str], NoDecode] = Field(
        default_factory=list
    )
    est_trusted_proxy_ca: str | None = None
    est_client_cert_header: str = "x-forwarded-client-cert"
    # serverkeygen key generations at once (each in a thread); more requests wait.
    est_keygen_concurrency: int = Field(default=2, ge=1, le=64)
    # OIDs a client should put in its CSR (RFC 7030 §4.5); empty: csrattrs answers 204.
    est_csr_attributes: Annotated[list[str], NoDecode] = Field(default_factory=list)

    _split = field_validator(
        "est_trusted_proxies",
        "est_csr_attributes",
        "est_trusted_proxy_certs",
        mode="before",
    )(_comma_list)

    @field_validator("est_trusted_proxy_certs")
    @classmethod
    def _fingerprints(cls, value: list[str]) -> list[str]:
        return [fingerprint(text) for text in value]

    @field_validator("est_trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_address(address)
        return value

    @field_validator("est_csr_attributes")
    @classmethod
    def _oids(cls, value: list[str]) -> list[str]:
        for oid in value:
            parts = oid.split(".")
            if len(parts) < 2 or not all(p.isdigit() for p in parts):
                raise ValueError(f"{oid!r} is not a dotted OID")
        return value
