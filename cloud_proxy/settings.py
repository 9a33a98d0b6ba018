"""Settings of the cloud proxy: the shared ones, its connectors and its timing.

``CLOUD_CONNECTORS`` names the connectors, comma-separated; each is an AWS IoT Core
account reached through the standard AWS chain, ``name=profile`` to use a profile of
the shared AWS config. None configured: the proxy keeps its projection and idles.
"""

from __future__ import annotations

import re

from pydantic import AnyHttpUrl, Field, field_validator

from runtime.schedule import Schedule, parse_schedule
from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]

_CONNECTOR = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]{0,63})(?:=([A-Za-z0-9._\-]+))?$")


class Settings(WorkerSettings, LogSettings):
    cloud_connectors: str = ""
    # AWS_REGION / AWS_DEFAULT_REGION or the profile's region when unset.
    cloud_aws_region: str | None = Field(
        default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$"
    )
    # Another endpoint than AWS's (tests, a private endpoint, an air-gapped site).
    cloud_aws_endpoint_url: AnyHttpUrl | None = None
    # Attempts per AWS call, throttling and 5xx included (botocore standard retries).
    cloud_aws_max_attempts: int = Field(default=3, ge=1, le=10)
    # When a reconciliation of every connector runs: "off", an interval or a cron
    # expression, claimed in the database so one replica runs it (runtime.schedule).
    cloud_reconcile_schedule: str = "15m"
    # A failed item is tried again after base, 2*base, 4*base... at most max seconds.
    cloud_retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    cloud_retry_max_seconds: float = Field(default=900.0, gt=0, le=86400)
    # Items one replica claims at a time.
    cloud_sync_batch: int = Field(default=50, ge=1, le=1000)
    # Certificates of a batch synced at once: each is a few AWS round trips; AWS IoT
    # throttles control-plane calls per account (retried, but best not provoked).
    cloud_sync_concurrency: int = Field(default=4, ge=1, le=64)
    cloud_prefetch: int = Field(default=64, ge=1, le=1000)
    # How long the proxy waits for the CA worker (verification certificates, backfill).
    cloud_request_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    @field_validator("cloud_connectors")
    @classmethod
    def _connectors_parse(cls, value: str) -> str:
        _parse_connectors(value)
        return value

    @field_validator("cloud_reconcile_schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        parse_schedule(value)  # its ValueError is the one-line reason
        return value

    def connectors(self) -> dict[str, str | None]:
        """Connector name -> AWS profile (None: the default chain)."""
        return _parse_connectors(self.cloud_connectors)

    def schedule(self) -> Schedule | None:
        return parse_schedule(self.cloud_reconcile_schedule)


def _parse_connectors(value: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        match = _CONNECTOR.fullmatch(item)
        if match is None:
            raise ValueError(f"{item!r} is not NAME or NAME=AWS_PROFILE")
        if match[1] in found:
            raise ValueError(f"connector {match[1]!r} is named twice")
        found[match[1]] = match[2]
    return found
