"""Settings of the DMS worker: the shared ones plus its prefetch and CA worker deadlines."""

from __future__ import annotations

from pydantic import Field

from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings):
    dms_prefetch: int = Field(default=32, ge=1, le=1000)
    # Deadline of one request to the CA worker (ca.get, certificate.sign), in seconds.
    dms_ca_timeout: float = Field(default=10.0, gt=0, le=300)
    # How long start-up waits for the CA worker to show LAMASSU-DMS-MANAGER.
    dms_startup_deadline: float = Field(default=60.0, gt=0, le=3600)
    dms_certificate_validity_days: int = Field(default=365, gt=0, le=36500)
