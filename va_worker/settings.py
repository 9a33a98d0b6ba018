"""Settings of the validation authority: the shared ones plus HTTP, its responder keys,
and how long what it serves is valid."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field

from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings):
    # Plain HTTP: OCSP responses and CRLs are signed objects (RFC 6960 §A.1, RFC 5280
    # §4.2.1.13), and relying parties fetch them without TLS to avoid a loop.
    va_host: str = "0.0.0.0"  # noqa: S104 - a server for relying parties on the network
    va_port: int = Field(default=8080, gt=0, lt=65536)
    # The gopem directory of the delegated responders' keys (files 0600, directory 0700).
    va_keys: Path = Path("/var/lib/lamassu/va-keys")
    # Certificate events come by the thousand from a sweep: one commit per batch.
    va_prefetch: int = Field(default=256, ge=1, le=1000)
    # An OCSP response's nextUpdate - thisUpdate; it is signed again after half of it.
    va_ocsp_validity_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    # Delegated responder certificates: their validity, and how long before their end
    # the next one is asked for (RFC 6960 §4.2.2.2.1: short-lived instead of checked).
    va_responder_validity_hours: int = Field(default=168, ge=1, le=24 * 90)
    va_responder_renew_hours: int = Field(default=48, ge=1, le=24 * 90)
    # CRL validity (nextUpdate - thisUpdate); a new one is signed when a quarter is left.
    va_crl_validity_hours: int = Field(default=168, ge=1, le=24 * 366)
    va_delta_crl_validity_hours: int = Field(default=24, ge=1, le=24 * 366)
    # A revocation makes a new delta CRL due this long after it (later revocations
    # within the window join it: one signature for a burst).
    va_crl_debounce_seconds: float = Field(default=5.0, ge=0, le=3600)
    # How often the upkeep looks for due CRLs and responder certificates.
    va_upkeep_seconds: float = Field(default=1.0, gt=0, le=3600)
    # Larger OCSP POST bodies get 413 unread (a single-certificate request is ~100 B).
    va_max_request_bytes: int = Field(default=10_000, ge=256, le=1_000_000)

    @property
    def ocsp_validity(self) -> timedelta:
        return timedelta(minutes=self.va_ocsp_validity_minutes)
