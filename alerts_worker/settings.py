"""Settings of the alerts worker: the shared ones, SMTP, HTTP, and delivery retries."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings):
    # E-mail (RFC 5321 submission). "starttls" upgrades a plain connection (RFC 3207),
    # "implicit" starts in TLS (RFC 8314), "none" is for a relay on loopback only.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = Field(default="lamassu-alerts@localhost", min_length=3)
    smtp_tls: Literal["none", "starttls", "implicit"] = "starttls"
    smtp_ca_file: Path | None = None
    # Webhook, Teams and Slack: TLS certificates are verified against the system's
    # trust store, or this file of CA certificates when it is set.
    alerts_ca_file: Path | None = None
    alerts_http_timeout: float = Field(default=10.0, gt=0, le=300)
    # Retries: exponential from the first delay, capped, with jitter, until the retry
    # period has passed since the notification was created; then it is failed.
    alerts_retry_first: float = Field(default=5.0, gt=0)
    alerts_retry_max: float = Field(default=3600.0, gt=0)
    alerts_retry_period: float = Field(default=86400.0, gt=0)
    # Sends in flight at once, and rows claimed per round.
    alerts_concurrency: int = Field(default=64, ge=1, le=1000)
    # A claimed notification not settled within this time (a replica died) is due again.
    alerts_lease: float = Field(default=120.0, gt=0)
    # How many items a digest lists in its body (the attachment has them all).
    alerts_digest_first: int = Field(default=20, ge=1, le=1000)
    alerts_prefetch: int = Field(default=256, ge=1, le=1000)
