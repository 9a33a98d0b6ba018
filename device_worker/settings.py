"""Settings of the device worker: the shared ones plus its queues' prefetch."""

from __future__ import annotations

from pydantic import Field

from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings):
    # Certificate events come by the thousand from a sweep, and a batch is only as
    # large as what has arrived: a commit per 256 of them, not per 32.
    device_prefetch: int = Field(default=256, ge=1, le=1000)
